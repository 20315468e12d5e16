"""Exponential moving average of a model's parameters, kept beside the optimizer and saved with it."""

from __future__ import annotations

import torch
from torch import nn


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathers a DTensor shard (FSDP2); plain tensors pass through."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else tensor


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param after every optimizer step.

    Works on plain, DDP-wrapped (pass the inner module) and FSDP2-sharded modules: the shadow of a
    sharded parameter is a sharded copy, gathered only when saved.
    """

    def __init__(self, module: nn.Module, *, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        self.shadow = {name: params[name].detach().clone() for name in self.names}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        weight = 1.0 - self.decay
        shadows = [self.shadow[name] for name in self.names]
        current = [params[name].detach() for name in self.names]
        if any(hasattr(t, "device_mesh") for t in shadows):  # DTensor shards (FSDP2): one lerp each
            for shadow, value in zip(shadows, current, strict=True):
                shadow.lerp_(value, weight)
        else:  # one fused launch per dtype/device group instead of one per parameter
            torch._foreach_lerp_(shadows, current, weight)

    @torch.no_grad()
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Name -> whole tensor on CPU (a collective under FSDP2: call it on every rank)."""
        return {name: _full(t).detach().to("cpu") for name, t in self.shadow.items()}

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name in self.names if name not in state]
        if missing:
            raise KeyError(f"EMA state lacks {', '.join(missing[:5])}")
        for name, shadow in self.shadow.items():
            value = state[name]
            if hasattr(shadow, "device_mesh"):  # a DTensor shard: re-shard the full tensor like the parameter
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(
                    value.to(shadow.to_local().device), shadow.device_mesh, shadow.placements
                )
            shadow.copy_(value)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the averages (for evaluation or export)."""
        params = dict(module.named_parameters())
        for name in self.names:
            params[name].copy_(self.shadow[name])
