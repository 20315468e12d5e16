"""Multi-process helpers on top of torch.distributed (launched by `torchrun`): no home-made distribution.

- `init_distributed` joins the process group torchrun describes (nccl on CUDA, gloo on CPU);
- `wrap_model` applies DDP or FSDP2 (`torch.distributed.fsdp.fully_shard`);
- `distributed_loader` builds a DataLoader over a DistributedSampler (deterministic per epoch, so exact
  resume works);
- `shard_indices`, `gather_in_order` and `generate_sharded` split item-wise generation over ranks,
  collect the results in item order, and resume from the per-item files a crashed run left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from genloom.core.errors import ConfigError
from genloom.core.io import atomic_write_json


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank and world size from the initialised process group, else from torchrun's env, else (0, 1)."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), local_rank)


def init_distributed(*, backend: str | None = None) -> DistInfo:
    """Join the process group when launched with 2+ processes (idempotent); set this rank's CUDA device."""
    info = dist_info()
    if info.world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        device_id = None
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
            device_id = torch.device("cuda", info.local_rank)  # binds NCCL to this rank's GPU up front
        dist.init_process_group(backend=backend, device_id=device_id)
        info = dist_info()
    return info


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    """ "auto" becomes "ddp" with 2+ processes, else "none"; ddp/fsdp2 need an initialised group."""
    if strategy == "auto":
        return "ddp" if info.distributed else "none"
    if strategy in ("ddp", "fsdp2") and not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(f"strategy {strategy!r} needs a process group: launch with torchrun")
    return strategy


def default_fsdp_units(model: nn.Module) -> list[nn.Module]:
    """Every element of every nn.ModuleList (transformer blocks, in practice): the FSDP2 shard units."""
    units: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            units.extend(module)
    return units


def wrap_model(
    model: nn.Module,
    *,
    strategy: str,
    device: torch.device,
    fsdp_units: Callable[[nn.Module], Sequence[nn.Module]] = default_fsdp_units,
    fsdp_param_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Return the model to train: as is, in DistributedDataParallel, or sharded in place by FSDP2.

    `fsdp_param_dtype` (FSDP2 only): the dtype parameters are gathered and computed in (bf16 halves the
    all-gather traffic); the sharded master weights, optimizer state and gradient reduction stay float32.
    """
    if fsdp_param_dtype is not None and strategy != "fsdp2":
        raise ConfigError(f"fsdp_param_dtype applies to strategy 'fsdp2' only, got strategy {strategy!r}")
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # an explicit mesh on the training device: the default would pick CUDA on a GPU host even for CPU runs
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        policy = MixedPrecisionPolicy(param_dtype=fsdp_param_dtype, reduce_dtype=torch.float32)
        for unit in fsdp_units(model):
            fully_shard(unit, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model
    raise ConfigError(f"unknown distribution strategy {strategy!r}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 shards in place, so it needs no unwrapping)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def distributed_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose DistributedSampler gives each rank its own slice, reshuffled by `seed + epoch`.

    Works in a single process too (rank 0 of 1). The trainer calls `sampler.set_epoch` each epoch, so the
    order of every epoch is a pure function of the seed: that is what makes resume exact.
    """
    info = dist_info()
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
    )


# ----------------------------------------------------------------------------------------------------------
# sharded generation
# ----------------------------------------------------------------------------------------------------------


def shard_indices(n_items: int, rank: int, world: int) -> range:
    """The contiguous block of item indices rank `rank` of `world` handles (sizes differ by at most 1)."""
    if n_items < 0 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad sharding: n_items={n_items}, rank={rank}, world={world}")
    base, extra = divmod(n_items, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_in_order(
    local_results: Sequence[Any], *, n_items: int, rank: int | None = None, world: int | None = None
) -> list[Any]:
    """Every rank's results (picklable objects, one per index of its shard) as one list in item order."""
    info = dist_info()
    rank = info.rank if rank is None else rank
    world = info.world_size if world is None else world
    expected = len(shard_indices(n_items, rank, world))
    if len(local_results) != expected:
        raise ValueError(f"rank {rank} has {len(local_results)} results for a shard of {expected} items")
    if world == 1:
        return list(local_results)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, list(local_results))
    ordered: list[Any] = []
    for part in gathered:  # shards are contiguous and in rank order
        ordered.extend(part)
    return ordered


def _item_file(out_dir: Path, index: int) -> Path:
    return out_dir / f"item-{index:08d}.json"


def generate_sharded(
    generate_one: Callable[[int], Any],
    n_items: int,
    out_dir: str | os.PathLike[str],
    *,
    rank: int | None = None,
    world: int | None = None,
) -> list[Any]:
    """Run `generate_one(i)` for this rank's shard, saving each JSON-able result as it is made.

    Items whose file already exists (from an earlier, interrupted run) are not generated again. After a
    barrier, every rank returns all `n_items` results in item order, read back from the files.
    """
    info = dist_info()
    rank = info.rank if rank is None else rank
    world = info.world_size if world is None else world
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for index in shard_indices(n_items, rank, world):
        path = _item_file(out_dir, index)
        if path.is_file():
            continue
        atomic_write_json(path, {"index": index, "result": generate_one(index)})
    barrier()
    results = []
    for index in range(n_items):
        path = _item_file(out_dir, index)
        if not path.is_file():
            raise ConfigError(f"sharded generation: {path} is missing after every rank finished")
        results.append(json.loads(path.read_text())["result"])
    return results


__all__ = [
    "DistInfo",
    "barrier",
    "default_fsdp_units",
    "dist_info",
    "distributed_loader",
    "gather_in_order",
    "generate_sharded",
    "init_distributed",
    "resolve_strategy",
    "shard_indices",
    "unwrap_model",
    "wrap_model",
]
