"""The trainer on CUDA: bf16 autocast, CUDA RNG states in checkpoints, exact resume on the GPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from genloom.core.io import load_safetensors
from genloom.core.train import TrainConfig, Trainer, distributed_loader, latest_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 8, generator=g)
    return TensorDataset(x, x @ torch.randn(8, 8, generator=g))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 8))


def _run(out, *, crash_after: int | None = None, seed: int = 0, steps: int = 100):
    seen = {"calls": 0, "dtypes": set()}

    def step(model, batch):
        seen["calls"] += 1
        if crash_after is not None and seen["calls"] > crash_after:
            raise KeyboardInterrupt
        x, y = batch
        x = x + 0.01 * torch.randn_like(x)  # CUDA RNG consumer
        prediction = model(x)
        seen["dtypes"].add(prediction.dtype)
        return nn.functional.mse_loss(prediction.float(), y)

    config = TrainConfig(
        steps=steps,
        lr=2e-2,
        warmup_steps=5,
        ema_decay=0.95,
        ckpt_every=20,
        log_every=10,
        out_dir=str(out),
        progress=False,
    )
    model = _model(seed)
    loader = distributed_loader(_data(), batch_size=16, shuffle=True, seed=2, pin_memory=True)
    return Trainer(model, step, loader, config), model, seen


def test_bf16_autocast_learns_and_saves_cuda_rng(tmp_path):
    trainer, model, seen = _run(tmp_path)
    assert trainer.device.type == "cuda" and trainer.use_bf16
    x, y = _data().tensors
    with torch.no_grad():
        before = nn.functional.mse_loss(model(x.cuda()), y.cuda()).item()
    trainer.fit()
    model.eval()
    with torch.no_grad():
        after = nn.functional.mse_loss(model(x.cuda()), y.cuda()).item()
    assert seen["dtypes"] == {torch.bfloat16}  # the linear layers ran under bf16 autocast
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32
    assert after < 0.2 * before, (before, after)
    rng = load_safetensors(latest_checkpoint(tmp_path) / "rng-rank0.safetensors")
    assert "torch_cuda::0" in rng


def test_resume_on_gpu_matches_the_uninterrupted_run(tmp_path):
    straight, straight_model, _ = _run(tmp_path / "a")
    straight.fit()
    crashed, _, _ = _run(tmp_path / "b", crash_after=45)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed, resumed_model, _ = _run(tmp_path / "b", seed=1)
    resumed.fit()
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
