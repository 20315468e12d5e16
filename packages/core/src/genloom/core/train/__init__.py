"""One trainer for every genloom model (audiocraft-solver style, small), plus torchrun helpers."""

from genloom.core.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from genloom.core.train.config import TrainConfig
from genloom.core.train.distributed import (
    DistInfo,
    dist_info,
    distributed_loader,
    gather_in_order,
    generate_sharded,
    init_distributed,
    shard_indices,
)
from genloom.core.train.ema import EMA
from genloom.core.train.schedule import lr_at
from genloom.core.train.trainer import DataStream, Trainer, TrainResult, move_to_device, seed_everything

__all__ = [
    "EMA",
    "DataStream",
    "DistInfo",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "dist_info",
    "distributed_loader",
    "gather_in_order",
    "generate_sharded",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "move_to_device",
    "save_checkpoint",
    "seed_everything",
    "shard_indices",
]
