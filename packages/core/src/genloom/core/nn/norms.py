"""Normalisation layers: RMSNorm (computed in float32, as Llama and LlamaGen do) and a LayerNorm/RMSNorm factory."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genloom.core.errors import ConfigError

__all__ = ["RMSNorm", "make_norm"]


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x^2) + eps) * weight`; the normalisation runs in float32 and is cast back before the
    weight multiplies (Meta Llama / LlamaGen order). `affine=False` drops the weight."""

    def __init__(self, dim: int, *, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight if self.weight is not None else out

    def extra_repr(self) -> str:
        return f"{0 if self.weight is None else self.weight.numel()}, eps={self.eps}, affine={self.weight is not None}"


def make_norm(kind: str, dim: int, *, eps: float, affine: bool = True) -> nn.Module:
    """ "rmsnorm" -> `RMSNorm`; "layernorm" -> `nn.LayerNorm` (weight and bias when affine)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    raise ConfigError(f"norm must be 'rmsnorm' or 'layernorm', got {kind!r}")
