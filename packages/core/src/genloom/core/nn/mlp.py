"""Feed-forward layers: SwiGLU (`w2(silu(w1 x) * w3 x)`, Llama/LlamaGen names) and GELU (`fc2(gelu(fc1 x))`,
timm/VAR/MAR names; "gelu_tanh" is the tanh approximation VAR uses)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .config import TransformerConfig

__all__ = ["MLP"]


class MLP(nn.Module):
    """The block's feed-forward layer; dropout applies to its output (the residual branch)."""

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

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            out = self.w2(F.silu(self.w1(x)) * self.w3(x))
        else:
            out = self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))
        return self.dropout(out)
