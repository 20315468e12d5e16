"""Feed-forward layers: SwiGLU (`w2(silu(w1 x) * w3 x)`, Llama/LlamaGen names) and GELU (`fc2(gelu(fc1 x))`,
timm/VAR/MAR names; "gelu_tanh" is the tanh approximation VAR uses).

`fuse_gate()` turns SwiGLU's two input projections into one (`w13`, rows [w1; w3]): one GEMM instead of two,
which matters where a step is bound by its kernel count (one-token decode steps on a GPU). The module's
`state_dict` keeps the `w1` / `w3` names and a `w1` / `w3` checkpoint still loads, so files do not change.

A GELU layer's up-projection runs as one Triton GEMM with the bias and the GELU in its epilogue
(`linear_gelu`) where that kernel serves (CUDA, bf16 / fp16, no autograd, passes of at least 16,384 rows):
the activations are written once instead of written, read and written again by a separate GELU kernel
(the tanh form as cuBLASLt's product with its GELU epilogue). `MLP.fused_gelu_kernel = False` keeps the two
kernels. `MLP.exact_gelu_as_tanh = True` (opt-in, for speed) runs exact-GELU layers there with the tanh form
too, i.e. through cuBLASLt's epilogue: on an H100 in bf16, MaskGIT's batch-64 pass 14.0 ms against 15.5 and
its logits as close to the float32 exact-GELU model's as the exact kernel's (docs/benchmarks.md, session 14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import linear_gelu as fused
from .config import TransformerConfig

__all__ = ["MLP"]


class MLP(nn.Module):
    """The block's feed-forward layer; dropout applies to its output (the residual branch)."""

    fused_gelu_kernel: bool = True  # GELU layers: the up-projection + GELU as one kernel where it serves
    exact_gelu_as_tanh: bool = False  # opt-in: exact-GELU layers take the tanh form where that kernel serves

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_hidden
        if self.kind == "swiglu":
            self.w1 = nn.Linear(config.dim, hidden, bias=config.mlp_bias)
            self.w3 = nn.Linear(config.dim, hidden, bias=config.mlp_bias)
            self.w2 = nn.Linear(hidden, config.dim, bias=config.mlp_bias)
        else:
            self.fc1 = nn.Linear(config.dim, hidden, bias=config.mlp_bias)
            self.fc2 = nn.Linear(hidden, config.dim, bias=config.mlp_bias)
            self.approximate = "tanh" if self.kind == "gelu_tanh" else "none"
        self.dropout = nn.Dropout(config.dropout)

    @property
    def gate_fused(self) -> bool:
        return hasattr(self, "w13")

    def fuse_gate(self) -> None:
        """Replace SwiGLU's `w1`, `w3` by one `w13` Linear holding both (no-op for GELU or when fused)."""
        if self.kind != "swiglu" or self.gate_fused:
            return
        w1, w3 = self.w1, self.w3
        fused = nn.Linear(
            w1.in_features,
            2 * w1.out_features,
            bias=w1.bias is not None,
            device=w1.weight.device,
            dtype=w1.weight.dtype,
        )
        with torch.no_grad():
            fused.weight.copy_(torch.cat([w1.weight, w3.weight]))
            if w1.bias is not None:
                fused.bias.copy_(torch.cat([w1.bias, w3.bias]))
        fused.weight.requires_grad_(w1.weight.requires_grad)
        del self.w1, self.w3
        self.w13 = fused
        self.register_state_dict_post_hook(_split_gate)
        self.register_load_state_dict_pre_hook(_merge_gate)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu" and self.gate_fused:
            gate, up = self.w13(x).chunk(2, dim=-1)
            out = self.w2(F.silu(gate) * up)
        elif self.kind == "swiglu":
            out = self.w2(F.silu(self.w1(x)) * self.w3(x))
        else:
            out = self.fc2(self._up_projection(x))
        return self.dropout(out)

    def _up_projection(self, x: Tensor) -> Tensor:
        """gelu(fc1 x): one fused kernel where it serves (a plain Linear's weight in x's dtype on CUDA, no
        autograd), else the Linear and the GELU."""
        fc1 = self.fc1
        if self.fused_gelu_kernel and type(fc1) is nn.Linear and fused.kernel_serves(x, fc1.weight):
            approximate = "tanh" if self.exact_gelu_as_tanh else self.approximate
            return fused.linear_gelu(x, fc1.weight, fc1.bias, approximate)
        return F.gelu(fc1(x), approximate=self.approximate)


def _split_gate(module: MLP, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict hook of a fused MLP: `w13.*` -> `w1.*`, `w3.*` (copies, so files never share storage)."""
    for name in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}w13.{name}", None)
        if fused is not None:
            first, second = fused.chunk(2, dim=0)
            state_dict[f"{prefix}w1.{name}"] = first.clone()
            state_dict[f"{prefix}w3.{name}"] = second.clone()


def _merge_gate(module: MLP, state_dict: dict, prefix: str, *args: object) -> None:
    """load_state_dict pre-hook of a fused MLP: `w1.*`, `w3.*` -> `w13.*`."""
    for name in ("weight", "bias"):
        first, second = state_dict.get(f"{prefix}w1.{name}"), state_dict.get(f"{prefix}w3.{name}")
        if first is not None and second is not None:
            del state_dict[f"{prefix}w1.{name}"], state_dict[f"{prefix}w3.{name}"]
            state_dict[f"{prefix}w13.{name}"] = torch.cat([first, second])
