"""The trainer on one CPU process: learning, schedule, EMA, checkpoints, bit-exact resume, metrics, export."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from genloom.core.errors import ConfigError
from genloom.core.io import load_safetensors
from genloom.core.train import TrainConfig, Trainer, distributed_loader, latest_checkpoint, lr_at
from genloom.core.zoo import from_pretrained, register_family, unregister_family

FAMILY = "test.train_mlp"


class TinyRegressor(nn.Module):
    """A 2-layer MLP with dropout, so resume must restore the RNG to be exact."""

    def __init__(self, *, dim: int = 4, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def regression_data(n: int = 40, dim: int = 4) -> TensorDataset:
    generator = torch.Generator().manual_seed(123)
    x = torch.randn(n, dim, generator=generator)
    a = torch.randn(dim, dim, generator=generator)
    return TensorDataset(x, x @ a)


def training_step(model: nn.Module, batch) -> dict:
    x, y = batch
    x = x + 0.01 * torch.randn_like(x)  # random augmentation: another RNG consumer
    return {"loss": nn.functional.mse_loss(model(x), y), "tokens": x.shape[0]}


def make_model(seed: int) -> TinyRegressor:
    torch.manual_seed(seed)
    return TinyRegressor()


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="warmup_steps must be in"):
        TrainConfig(steps=10, warmup_steps=11)
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \[.bogus.\]"):
        TrainConfig.from_dict({"bogus": 1})
    config = TrainConfig(steps=7, betas=[0.8, 0.9])
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_warmup_then_cosine_to_min_lr():
    config = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(step, config) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, config) == pytest.approx(0.1) and lrs[55] == pytest.approx(0.55)
    assert lr_at(50, TrainConfig(steps=100, lr=0.5, schedule="constant")) == 0.5


def test_trainer_learns_and_writes_metrics_checkpoint_and_export(tmp_path):
    data = regression_data()
    loader = distributed_loader(data, batch_size=8, shuffle=True, seed=1)
    x, y = data.tensors
    baseline = nn.functional.mse_loss(y.mean(0, keepdim=True).expand_as(y), y).item()  # predict the mean
    model = make_model(0)
    config = TrainConfig(
        steps=100,
        lr=3e-2,
        warmup_steps=10,
        ema_decay=0.9,
        log_every=25,
        out_dir=str(tmp_path),
        progress=False,
        device="cpu",
    )
    trainer = Trainer(model, training_step, loader, config)
    result = trainer.fit()
    model.eval()
    with torch.no_grad():
        final = nn.functional.mse_loss(model(x), y).item()
    assert final < 0.05 * baseline, (final, baseline)  # about 0.01 of it in practice
    assert result.step == 100 and result.checkpoint == latest_checkpoint(tmp_path)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [25, 50, 75, 100]
    assert set(records[0]) >= {"step", "loss", "lr", "grad_norm", "tokens_per_s", "epoch"}
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["tokens_per_s"] > 0

    files = sorted(p.name for p in result.checkpoint.iterdir())
    assert files == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "rng-rank0.safetensors",
        "trainer_state.json",
    ]
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 100 and state["data"] == {"epoch": 19, "offset": 5}  # 5 batches per epoch
    ema = load_safetensors(result.checkpoint / "ema.safetensors")
    assert not torch.equal(ema["net.0.weight"], model.net[0].weight.detach())  # averaged, not a copy

    register_family(FAMILY, lambda cfg: TinyRegressor(**cfg))
    try:
        folder = trainer.export_pretrained(
            tmp_path / "export", config={"family": FAMILY, "dim": 4, "hidden": 16}
        )
        assert torch.equal(from_pretrained(folder).net[0].weight, ema["net.0.weight"])
    finally:
        unregister_family(FAMILY)


class Crash(RuntimeError):
    pass


def _run(tmp_path, *, crash_after_calls: int | None = None, init_seed: int = 0, ckpt_every: int):
    calls = {"n": 0}

    def step_fn(model, batch):
        calls["n"] += 1
        if crash_after_calls is not None and calls["n"] > crash_after_calls:
            raise Crash("simulated preemption")
        return training_step(model, batch)

    config = TrainConfig(
        steps=12,
        lr=5e-3,
        min_lr=1e-4,
        warmup_steps=3,
        weight_decay=0.1,
        grad_accum=2,
        clip_grad_norm=0.5,
        ema_decay=0.8,
        log_every=2,
        ckpt_every=ckpt_every,
        out_dir=str(tmp_path),
        progress=False,
        device="cpu",
        seed=7,
    )
    model = make_model(init_seed)
    loader = distributed_loader(regression_data(), batch_size=4, shuffle=True, seed=3)  # 10 batches per epoch
    return Trainer(model, step_fn, loader, config), model


@pytest.mark.parametrize("ckpt_every", [5, 7])  # 5: checkpoint at an epoch boundary; 7: mid-epoch
def test_resume_is_bit_exact(tmp_path, ckpt_every):
    straight, straight_model = _run(tmp_path / "straight", ckpt_every=ckpt_every)
    straight.fit()

    interrupted, _ = _run(tmp_path / "resumed", ckpt_every=ckpt_every, crash_after_calls=2 * ckpt_every + 1)
    with pytest.raises(Crash):
        interrupted.fit()
    assert latest_checkpoint(tmp_path / "resumed").name == f"step-{ckpt_every:08d}"
    resumed, resumed_model = _run(
        tmp_path / "resumed", ckpt_every=ckpt_every, init_seed=99
    )  # other init: loaded
    resumed.fit()

    for (name, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ("ema.safetensors", "optimizer.safetensors", "model.safetensors"):
        first = load_safetensors(tmp_path / "straight" / "checkpoints" / "step-00000012" / name)
        second = load_safetensors(tmp_path / "resumed" / "checkpoints" / "step-00000012" / name)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), name
    straight_log = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed_log = [
        json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in resumed_log] == [2, 4, 6, 8, 10, 12]
    assert [json.loads(line)["loss"] for line in straight_log] == [r["loss"] for r in resumed_log]
    assert len(list((tmp_path / "resumed" / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints


def test_extra_state_is_saved_with_each_checkpoint_and_restored_on_resume(tmp_path):
    data = regression_data()
    x, y = data.tensors
    calls: list[int] = []

    def get_batch(index: int):
        rows = torch.arange(index * 4, index * 4 + 4) % len(x)
        return x[rows], y[rows]

    def step_fn(model, batch):
        calls.append(1)
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    config = TrainConfig(steps=4, ckpt_every=2, progress=False, device="cpu", out_dir=str(tmp_path))
    first = Trainer(make_model(0), step_fn, get_batch, config, extra_state=lambda: {"calls": len(calls)})
    first.fit()
    assert first.restored_extra_state == {}
    state = json.loads((latest_checkpoint(tmp_path) / "trainer_state.json").read_text())
    assert state["extra"] == {"calls": 4}
    (tmp_path / "checkpoints" / "latest").write_text("step-00000002")  # resume from step 2
    resumed = Trainer(make_model(0), step_fn, get_batch, config)  # no extra_state: checkpoints get {}
    resumed.fit()
    assert resumed.restored_extra_state == {"calls": 2}


def test_indexed_data_and_plain_loss(tmp_path):
    """`data` may be a function of the batch index and the step may return a bare loss tensor."""
    data = regression_data()
    x, y = data.tensors

    def get_batch(index: int):
        rows = torch.arange(index * 4, index * 4 + 4) % len(x)
        return x[rows], y[rows]

    model = make_model(1)
    trainer = Trainer(
        model,
        lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
        get_batch,
        TrainConfig(steps=3, log_every=1, progress=False, device="cpu", clip_grad_norm=None),
    )
    result = trainer.fit()
    assert result.step == 3 and result.checkpoint is None and result.loss > 0


def test_bad_training_step_output_is_a_config_error():
    trainer = Trainer(
        make_model(0),
        lambda m, b: {"value": 1.0},
        [torch.zeros(2, 4)],
        TrainConfig(steps=1, progress=False, device="cpu"),
    )
    with pytest.raises(ConfigError, match='without "loss"'):
        trainer.fit()
    trainer = Trainer(
        make_model(0),
        lambda m, b: m(b),
        [torch.zeros(2, 4)],
        TrainConfig(steps=1, progress=False, device="cpu"),
    )
    with pytest.raises(ConfigError, match="scalar loss"):
        trainer.fit()


@pytest.mark.parametrize(
    ("every", "message"), [(1, "the loss is nan at step 3"), (4, "not finite at step 3")]
)
def test_non_finite_loss_is_reported_with_its_step(every, message):
    """A NaN loss at step 3 raises, naming step 3, whether it is read every step or every 4 (no host sync
    per step: the first bad step is tracked on the device); the deferred check fires at step 4."""
    calls = []

    def step(model: nn.Module, batch) -> torch.Tensor:
        calls.append(len(calls))
        loss = nn.functional.mse_loss(model(batch), torch.zeros_like(batch))
        return loss * float("nan") if len(calls) == 3 else loss

    config = TrainConfig(steps=10, progress=False, device="cpu", check_finite_every=every)
    trainer = Trainer(make_model(0), step, lambda index: torch.ones(2, 4), config)
    with pytest.raises(FloatingPointError, match=message):
        trainer.fit()
    assert len(calls) == (3 if every == 1 else 4)
    with pytest.raises(ConfigError, match="check_finite_every"):
        TrainConfig(check_finite_every=0)


def test_deferred_finite_check_runs_before_a_checkpoint_is_written(tmp_path):
    """With the check every 8 steps, a NaN at step 3 must still stop the run before the step-4 checkpoint."""
    calls = []

    def step(model: nn.Module, batch) -> torch.Tensor:
        calls.append(len(calls))
        loss = nn.functional.mse_loss(model(batch), torch.zeros_like(batch))
        return loss * float("nan") if len(calls) == 3 else loss

    config = TrainConfig(
        steps=10, progress=False, device="cpu", check_finite_every=8, ckpt_every=4, out_dir=str(tmp_path)
    )
    trainer = Trainer(make_model(0), step, lambda index: torch.ones(2, 4), config)
    with pytest.raises(FloatingPointError, match="not finite at step 3"):
        trainer.fit()
    assert len(calls) == 4
    assert not [p for p in tmp_path.rglob("*") if "ckpt" in p.name or p.suffix == ".safetensors"]
