"""The one genloom trainer: any model, any loss, single process or torchrun (DDP / FSDP2).

The model supplies its loss through `training_step(model, batch) -> loss` (a scalar tensor, or a dict
with "loss" and optionally "tokens" and other scalars to log). The trainer owns everything else: AdamW
with warm-up + cosine, gradient accumulation, clipping, EMA, bf16 autocast on GPU, checkpoints with exact
resume (weights, optimizer, scheduler, RNG states and data position), a progress bar and metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from genloom.core.errors import CheckpointError, ConfigError
from genloom.core.train.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from genloom.core.train.config import TrainConfig
from genloom.core.train.distributed import (
    DistInfo,
    barrier,
    default_fsdp_units,
    init_distributed,
    resolve_strategy,
    unwrap_model,
    wrap_model,
)
from genloom.core.train.ema import EMA
from genloom.core.train.metrics import MetricsLog, ProgressBar
from genloom.core.train.schedule import make_scheduler

StepOutput = torch.Tensor | Mapping[str, Any]
TrainingStep = Callable[[nn.Module, Any], StepOutput]
Data = Iterable[Any] | Callable[[int], Any]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python `random` and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside tuples / lists / dicts go to `device`; everything else is left as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = (
        batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, list | tuple) else ()
    )
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


class DataStream:
    """Endless batches from an iterable (one pass = one epoch) or from `get_batch(index)`.

    Its position (epoch, batches taken in that epoch) is saved in checkpoints. On resume the iterator
    of the saved epoch is rebuilt and fast-forwarded with every global RNG state saved and restored
    around it, so the resumed run draws exactly the random numbers the uninterrupted run drew.
    """

    def __init__(self, data: Data, *, epoch: int = 0, offset: int = 0) -> None:
        self.data = data
        self.epoch = epoch
        self.offset = offset
        self._iterator = None
        self._indexed = callable(data) and not isinstance(data, Iterable)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def _set_epoch(self) -> None:
        for owner in (
            self.data,
            getattr(self.data, "sampler", None),
            getattr(self.data, "batch_sampler", None),
        ):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self.epoch)
                return

    def _open(self) -> None:
        self._set_epoch()
        if self.offset == 0:
            self._iterator = iter(self.data)
            return
        saved = capture_rng()  # the uninterrupted run opened this epoch long ago: draw nothing now
        self._iterator = iter(self.data)
        for _ in range(self.offset):
            if next(self._iterator, _END) is _END:
                break
        restore_rng(saved)

    def next(self) -> Any:
        if self._indexed:
            batch = self.data(self.offset)  # type: ignore[operator]
            self.offset += 1
            return batch
        while True:
            if self._iterator is None:
                self._open()
            batch = next(self._iterator, _END)
            if batch is not _END:
                self.offset += 1
                return batch
            if self.offset == 0:
                raise ConfigError("the training data yielded no batches")
            self.epoch, self.offset, self._iterator = self.epoch + 1, 0, None


_END = object()


@dataclass
class TrainResult:
    """What `fit` returns: the last step, the last logged loss and where the outputs are."""

    step: int
    loss: float
    checkpoint: Path | None


class Trainer:
    """Train `model` with `training_step` on `data` under `config` (see the module docstring).

    `extra_state()`, if given, returns JSON-able state of the caller that every checkpoint stores (as
    called on the main rank when it is written); after `fit` resumes, `restored_extra_state` holds it."""

    def __init__(
        self,
        model: nn.Module,
        training_step: TrainingStep,
        data: Data,
        config: TrainConfig,
        *,
        fsdp_units: Callable[[nn.Module], list[nn.Module]] = default_fsdp_units,
        extra_state: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        # the caller's own JSON-able state (e.g. the seconds a time-budgeted run has spent), saved with every
        # checkpoint (the main rank's); `restored_extra_state` holds what `fit` resumed from ({} if fresh)
        self.extra_state = extra_state
        self.restored_extra_state: dict[str, Any] = {}
        self.training_step = training_step
        self.data = data
        self.fsdp_units = fsdp_units
        self.info: DistInfo = init_distributed()
        self.device = self._resolve_device(config.device)
        self.strategy = resolve_strategy(config.strategy, self.info)
        self.module = model.to(self.device)  # the user's module (parameters shared with the wrapper)
        # under bf16 autocast FSDP2 gathers bf16 parameters (half the traffic); master weights stay float32
        param_dtype = torch.bfloat16 if self.strategy == "fsdp2" and self.use_bf16 else None
        self.model = wrap_model(
            self.module,
            strategy=self.strategy,
            device=self.device,
            fsdp_units=fsdp_units,
            fsdp_param_dtype=param_dtype,
        )
        self.module = unwrap_model(self.model)
        # walking the module tree for its parameters costs ~1 ms of host time per step on a 6-layer model
        self._parameters = list(self.module.parameters())
        self.optimizer = self.make_optimizer(self.module)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.ema = EMA(self.module, decay=config.ema_decay) if config.ema_decay is not None else None
        self.step = 0
        self.out_dir = Path(config.out_dir).expanduser() if config.out_dir else None
        self.metrics = MetricsLog(
            self.out_dir / "metrics.jsonl" if self.out_dir and self.info.is_main else None
        )

    # -- setup ----------------------------------------------------------------------------------------------

    def _resolve_device(self, device: str) -> torch.device:
        if device == "auto":
            return torch.device(f"cuda:{self.info.local_rank}" if torch.cuda.is_available() else "cpu")
        return torch.device(device)

    def make_optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        """AdamW; weight decay only on tensors with 2+ dims (matrices, embeddings), never biases or gains."""
        decay, no_decay = [], []
        for param in module.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=self.config.betas, eps=self.config.eps)

    @property
    def use_bf16(self) -> bool:
        if self.config.precision == "auto":
            return self.device.type == "cuda"
        return self.config.precision == "bf16"

    # -- checkpoints ------------------------------------------------------------------------------------------

    def save(self, data: DataStream, window: dict[str, float] | None = None) -> Path | None:
        """Write a checkpoint of the current step (every rank must call it)."""
        if self.out_dir is None:
            return None
        return save_checkpoint(
            self.out_dir,
            step=self.step,
            model=self.module,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            trainer_state={
                "data": data.state(),
                "config": self.config.to_dict(),
                "extra": self.extra_state() if self.extra_state is not None else {},
            },
            strategy=self.strategy,
            info=self.info,
            rank_state={"log_window": window or {}},
            keep=self.config.keep_checkpoints,
        )

    def _resume(self, resume: bool | str | Path) -> tuple[DataStream, dict[str, float]]:
        folder: Path | None = None
        if isinstance(resume, str | Path):
            folder = Path(resume)
        elif resume and self.out_dir is not None:
            folder = latest_checkpoint(self.out_dir)
        self.restored_extra_state = {}
        if folder is None:
            seed_everything(self.config.seed + self.info.rank)
            self.metrics.truncate_after(0)  # a fresh run does not append to an older run's log
            return DataStream(self.data), {}
        if not folder.is_dir():
            raise CheckpointError(f"checkpoint folder {folder} does not exist")
        state = load_checkpoint(
            folder,
            model=self.module,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            strategy=self.strategy,
            info=self.info,
        )
        self.step = int(state["step"])
        self.restored_extra_state = dict(state.get("extra") or {})  # older checkpoints have none
        self.metrics.truncate_after(self.step)
        stream = DataStream(self.data, epoch=state["data"]["epoch"], offset=state["data"]["offset"])
        return stream, state["rank_state"].get("log_window", {})

    # -- the loop ---------------------------------------------------------------------------------------------

    def _sync_context(self, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
        if sync or self.strategy == "none":
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return self.model.no_sync()
        self.model.set_requires_gradient_sync(False)  # fsdp2: re-enabled for the last micro-batch
        return contextlib.nullcontext()

    def _micro_step(self, batch: Any, sync: bool) -> tuple[torch.Tensor, int, dict[str, float]]:
        batch = move_to_device(batch, self.device)
        if self.strategy == "fsdp2" and sync:
            self.model.set_requires_gradient_sync(True)
        with self._sync_context(sync):
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                output = self.training_step(self.model, batch)
            extras: dict[str, float] = {}
            if isinstance(output, Mapping):
                if "loss" not in output:
                    raise ConfigError('training_step returned a dict without "loss"')
                loss = output["loss"]
                tokens = output.get("tokens")
                extras = {k: float(v) for k, v in output.items() if k not in ("loss", "tokens")}
            else:
                loss, tokens = output, None
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ConfigError(
                    f"training_step must return a scalar loss tensor, got {type(loss).__name__}"
                )
            (loss / self.config.grad_accum).backward()
        if tokens is None:
            first = _first_tensor(batch)
            tokens = first.numel() if first is not None else 0
        return loss.detach().float(), int(tokens), extras

    def _clip(self) -> torch.Tensor:
        """Clip the gradients; returns their total norm as a device tensor (read back only when logged)."""
        max_norm = self.config.clip_grad_norm if self.config.clip_grad_norm is not None else math.inf
        params = [p for p in self._parameters if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        full = getattr(norm, "full_tensor", None)
        return full() if callable(full) else norm

    def _check_finite(self, step_loss: torch.Tensor, first_bad: torch.Tensor | None) -> torch.Tensor | None:
        """Raise on a non-finite loss. With `check_finite_every` 1 the loss of this step is read now; else the
        first bad step (1-based, 0 if none) is tracked on the device and read every N steps, at the last step
        and before every checkpoint, so no checkpoint holds weights updated by a non-finite loss."""
        every = self.config.check_finite_every
        if every == 1:
            if not math.isfinite(float(step_loss)):
                raise FloatingPointError(f"the loss is {float(step_loss)} at step {self.step + 1}")
            return None
        if first_bad is None:
            first_bad = torch.zeros((), dtype=torch.long, device=step_loss.device)
        bad_now = ~torch.isfinite(step_loss) & (first_bad == 0)
        first_bad = torch.where(bad_now, self.step + 1, first_bad)
        coming = self.step + 1
        ckpt_every = self.config.ckpt_every
        if coming % every == 0 or coming == self.config.steps or (ckpt_every and coming % ckpt_every == 0):
            bad_step = int(first_bad)
            if bad_step:
                raise FloatingPointError(f"the loss is not finite at step {bad_step}")
        return first_bad

    def _mean_across_ranks(self, value: torch.Tensor) -> float:
        if self.info.distributed:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.info.world_size
        return float(value)

    def fit(self, *, resume: bool | str | Path = True) -> TrainResult:
        """Train until `config.steps` optimizer steps; resume from the latest checkpoint in out_dir if any.

        `resume` may also be a checkpoint folder, or False to start fresh.
        """
        config = self.config
        if self.out_dir is not None and self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        data, window = self._resume(resume)
        self.model.train()
        progress = ProgressBar(
            total=config.steps, start=self.step, enabled=config.progress and self.info.is_main
        )
        last_loss, checkpoint = math.nan, None
        # the metrics window (steps since the last log line) survives a resume, so logged means match
        window_loss = torch.tensor(window.get("loss_sum", 0.0), dtype=torch.float32, device=self.device)
        window_tokens, window_steps = int(window.get("tokens", 0)), int(window.get("steps", 0))
        window_start = time.perf_counter() - window.get("seconds", 0.0)
        first_bad: torch.Tensor | None = None  # see _check_finite
        try:
            while self.step < config.steps:
                step_loss = torch.zeros((), device=self.device)
                extras: dict[str, float] = {}
                for micro in range(config.grad_accum):
                    loss, tokens, extras = self._micro_step(data.next(), sync=micro == config.grad_accum - 1)
                    step_loss += loss / config.grad_accum
                    window_tokens += tokens
                grad_norm = self._clip()
                first_bad = self._check_finite(step_loss, first_bad)
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.module)
                self.step += 1
                window_loss += step_loss
                window_steps += 1
                if self.step % config.log_every == 0 or self.step == config.steps:
                    last_loss = self._mean_across_ranks(window_loss / window_steps)
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    record = {
                        "step": self.step,
                        "loss": last_loss,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": window_tokens * self.info.world_size / elapsed,
                        "epoch": data.epoch,
                        **extras,
                    }
                    if self.info.is_main:
                        self.metrics.write(record)
                    progress.update(self.step, f"loss {last_loss:.4f} lr {lr:.2e}")
                    window_loss.zero_()
                    window_tokens, window_steps, window_start = 0, 0, time.perf_counter()
                else:
                    progress.update(self.step)
                if config.ckpt_every and self.step % config.ckpt_every == 0 and self.step < config.steps:
                    window = {
                        "loss_sum": float(window_loss),
                        "steps": window_steps,
                        "tokens": window_tokens,
                        "seconds": time.perf_counter() - window_start,
                    }
                    checkpoint = self.save(data, window)
            checkpoint = self.save(data) or checkpoint
        finally:
            progress.close()
        return TrainResult(step=self.step, loss=last_loss, checkpoint=checkpoint)

    def export_pretrained(
        self, directory: str | Path, *, config: Mapping[str, Any], use_ema: bool = True
    ) -> Path:
        """Write a `from_pretrained` folder of the trained model (the EMA weights when kept and `use_ema`)."""
        from genloom.core.zoo import save_pretrained

        if self.strategy == "fsdp2":
            raise ConfigError(
                "export_pretrained under FSDP2: load the checkpoint's model.safetensors instead"
            )
        directory = Path(directory)
        if self.info.is_main:  # one writer; the weights are identical on every DDP rank
            module = self.module
            if use_ema and self.ema is not None:
                import copy

                module = copy.deepcopy(self.module)
                self.ema.copy_to(module)
            save_pretrained(module, directory, config=config)
        barrier()
        return directory


__all__ = ["DataStream", "TrainResult", "Trainer", "move_to_device", "seed_everything"]
