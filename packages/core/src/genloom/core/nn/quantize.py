"""Int8 weight-only quantisation of linear layers (gpt-fast style), for memory-bound AR decoding.

A decode step at small batch reads every weight once and does little arithmetic per byte, so its floor is
weight bytes over memory bandwidth: int8 weights halve the bytes of bf16 ones. Each output channel keeps one
scale (max |w| / 127, symmetric, no zero point); activations stay in their dtype and the weight is converted
on the fly, which `torch.compile` fuses into the matrix-vector product. The cost in quality is measured, not
assumed (`benchmarks/gpu_inference.py`, `tests/core/test_nn_quantize.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.errors import ConfigError

__all__ = ["Int8Linear", "quantize_int8_weight_only", "quantize_per_channel_int8"]


def quantize_per_channel_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: weight [out, in] -> (int8 [out, in], float32 scales [out])."""
    if weight.dim() != 2:
        raise ConfigError(
            f"int8 quantisation expects a 2-D weight [out, in], got shape {tuple(weight.shape)}"
        )
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 with a per-output-channel scale; the bias (if any) stays in float."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool, dtype: torch.dtype, device=None):  # noqa: ANN001
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight
        module = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            dtype=weight.dtype,
            device=weight.device,
        )
        q, scales = quantize_per_channel_int8(weight)
        module.weight.copy_(q)
        module.scales.copy_(scales.to(weight.dtype))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


def quantize_int8_weight_only(
    model: nn.Module, *, include: Callable[[str, nn.Linear], bool] | None = None
) -> int:
    """Replace the model's `nn.Linear` layers (all, or those `include(name, layer)` accepts) by `Int8Linear`
    in place; returns how many were replaced. Embedding tables and norms stay as they are."""
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and (include is None or include(name, module))
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear.from_linear(linear))
    return len(targets)
