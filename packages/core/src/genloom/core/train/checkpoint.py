"""Training checkpoints: everything needed to resume bit-exactly, as safetensors + JSON, written atomically.

A checkpoint is a folder `<out>/checkpoints/step-00001000/` holding
`model.safetensors`, `ema.safetensors` (if EMA is on), `optimizer.safetensors` (tensor state by parameter
name), `trainer_state.json` (step, data position, scheduler, optimizer groups, config, the caller's extra state) and one
`rng-rank<r>.safetensors` per process (torch CPU/CUDA generator states; Python and NumPy states and the
rank's own counters, such as its partial metrics window, in its metadata). The folder is written under a temporary name and renamed, then `checkpoints/latest` names it.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genloom.core.errors import CheckpointError
from genloom.core.io import (
    atomic_save_safetensors,
    atomic_write_json,
    atomic_write_text,
    load_safetensors,
    read_json,
)
from genloom.core.train.distributed import DistInfo, barrier
from genloom.core.train.ema import EMA
from genloom.core.zoo.pretrained import check_state_shapes, module_state_for_saving

STATE_FORMAT_VERSION = 1
_SEP = "::"


# ----------------------------------------------------------------------------------------------------------
# RNG states
# ----------------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every global RNG state of this process: torch CPU, every CUDA device, Python `random`, NumPy."""
    np_state = np.random.get_state()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].copy(), int(np_state[2]), int(np_state[3]), float(np_state[4])),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch_cpu"])
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _save_rank_state(path: Path, rank_state: dict[str, Any]) -> None:
    """This rank's RNG states (tensors + metadata) and its JSON-able `rank_state` in one safetensors file."""
    state = capture_rng()
    tensors = {"torch_cpu": state["torch_cpu"]}
    tensors.update({f"torch_cuda{_SEP}{i}": s for i, s in enumerate(state["torch_cuda"])})
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    metadata = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([name, keys.astype(np.int64).tolist(), pos, has_gauss, cached]),
        "rank_state": json.dumps(rank_state),
    }
    atomic_save_safetensors(tensors, path, metadata=metadata)


def _load_rank_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    tensors = load_safetensors(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    version, internal, gauss = json.loads(metadata["python"])
    name, keys, pos, has_gauss, cached = json.loads(metadata["numpy"])
    cuda = [
        tensors[k]
        for k in sorted(
            (k for k in tensors if k.startswith("torch_cuda")), key=lambda k: int(k.split(_SEP)[1])
        )
    ]
    rng = {
        "torch_cpu": tensors["torch_cpu"],
        "torch_cuda": cuda,
        "python": (version, tuple(internal), gauss),
        "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
    }
    return rng, json.loads(metadata.get("rank_state", "{}"))


# ----------------------------------------------------------------------------------------------------------
# model / optimizer state
# ----------------------------------------------------------------------------------------------------------


def _state_options(strategy: str):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    sharded = strategy == "fsdp2"  # gather full tensors on every rank's CPU; plain modules need no options
    return StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)


def _model_state(model: nn.Module, strategy: str) -> dict[str, torch.Tensor]:
    if strategy == "fsdp2":
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_state_options(strategy))
    return module_state_for_saving(model)


def _optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str):
    """(tensors by "param_name::key", JSON-able rest) of the optimizer, keyed by parameter names."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_state_options(strategy))
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    # with full_state_dict + cpu_offload only rank 0 receives the gathered state; the others get {}
    for name, entries in state.get("state", {}).items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}{_SEP}{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in state.get("param_groups", [])
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str, tensors, info) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state: dict[str, dict[str, Any]] = {}
    for flat, value in tensors.items():
        name, key = flat.rsplit(_SEP, 1)
        state.setdefault(name, {})[key] = value
    for name, entries in info["scalars"].items():
        state.setdefault(name, {}).update(entries)
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in group.items()} for group in info["param_groups"]
    ]
    set_optimizer_state_dict(
        model, optimizer, {"state": state, "param_groups": groups}, options=_state_options(strategy)
    )


# ----------------------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------------------


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The folder named by `<out>/checkpoints/latest`, or None when there is no checkpoint yet."""
    pointer = checkpoints_dir(out_dir) / "latest"
    if not pointer.is_file():
        return None
    folder = checkpoints_dir(out_dir) / pointer.read_text().strip()
    if not (folder / "trainer_state.json").is_file():
        raise CheckpointError(f"{pointer} names {folder}, which is not a complete checkpoint")
    return folder


def save_checkpoint(
    out_dir: str | Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA | None,
    trainer_state: dict[str, Any],
    strategy: str,
    info: DistInfo,
    rank_state: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write a checkpoint of `step` (call on every rank: gathering FSDP2 shards is collective)."""
    root = checkpoints_dir(out_dir)
    name = f"step-{step:08d}"
    final, tmp = root / name, root / f".{name}.tmp"
    model_state = _model_state(model, strategy)
    optim_tensors, optim_info = _optimizer_state(model, optimizer, strategy)
    ema_state = ema.full_state_dict() if ema is not None else None
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    _save_rank_state(tmp / f"rng-rank{info.rank}.safetensors", rank_state or {})
    if info.is_main:
        atomic_save_safetensors(model_state, tmp / "model.safetensors")
        if ema_state is not None:
            atomic_save_safetensors(ema_state, tmp / "ema.safetensors")
        atomic_save_safetensors(optim_tensors, tmp / "optimizer.safetensors")
        state = {
            **trainer_state,
            "step": step,
            "world_size": info.world_size,
            "strategy": strategy,
            "optimizer": optim_info,
            "scheduler": _json_safe(scheduler.state_dict()),
            "format_version": STATE_FORMAT_VERSION,
        }
        atomic_write_json(tmp / "trainer_state.json", state)
    barrier()
    if info.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        atomic_write_text(root / "latest", name + "\n")
        if keep > 0:
            for old in sorted(root.glob("step-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda value: None))


def load_checkpoint(
    folder: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA | None,
    strategy: str,
    info: DistInfo,
) -> dict[str, Any]:
    """Restore model, EMA, optimizer, scheduler and this rank's RNG states.

    Returns trainer_state.json's content with this rank's own saved state under "rank_state".
    """
    folder = Path(folder)
    state = read_json(folder / "trainer_state.json", what="trainer state")
    if state.get("world_size") != info.world_size:
        raise CheckpointError(
            f"{folder} was written by {state.get('world_size')} processes, this run has {info.world_size}; "
            "an exact resume needs the same number"
        )
    weights = load_safetensors(folder / "model.safetensors")
    if strategy == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    else:
        check_state_shapes(
            model, {k: tuple(v.shape) for k, v in weights.items()}, path=folder / "model.safetensors"
        )
        model.load_state_dict(weights, strict=False)
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise CheckpointError(f"{folder} has no ema.safetensors but this run keeps an EMA")
        ema.load_full_state_dict(load_safetensors(folder / "ema.safetensors"))
    _load_optimizer(
        model, optimizer, strategy, load_safetensors(folder / "optimizer.safetensors"), state["optimizer"]
    )
    scheduler.load_state_dict(
        {**scheduler.state_dict(), **{k: v for k, v in state["scheduler"].items() if v is not None}}
    )
    rng, rank_state = _load_rank_state(folder / f"rng-rank{info.rank}.safetensors")
    restore_rng(rng)
    return {**state, "rank_state": rank_state}


__all__ = [
    "capture_rng",
    "checkpoints_dir",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]
