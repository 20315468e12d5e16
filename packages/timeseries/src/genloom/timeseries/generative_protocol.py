"""Train and score the generative forecasters on the long-term protocol, beside the supervised baselines.

GPHT: trained channel-independently on the training split with its next-token objective (every token's
output is the forecast of the following `token_len` steps, MSE), early-stopped on validation, forecast
autoregressively to each horizon. Tokenised AR: next-token cross-entropy on univariate training windows;
diffusion: noise prediction for 48-step futures given the history, chained to longer horizons. Both
sampling models are scored by the median of sampled paths on the test split. Both on the scaled values, as the baselines.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.models.diffusion import DiffusionConfig, DiffusionForecaster
from genloom.timeseries.models.gpht import GPHT, GPHTConfig
from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster, forecaster_transformer_config
from genloom.timeseries.tokenizer import BinTokenizerConfig
from genloom.timeseries.train import fit_fixed_steps, seed_everything


def gpht_ett_config(seq_len: int) -> GPHTConfig:
    """GPHT's ETT configuration (token length 24, pooling 8/4/2/1, 4 stages of 3 layers, width 256)."""
    return GPHTConfig(
        seq_len=seq_len,
        token_len=24,
        GT_pooling_rate=[8, 4, 2, 1],
        depth=4,
        GT_d_model=256,
        GT_d_ff=512,
        GT_e_layers=3,
        n_heads=8,
    )


def _channel_windows(protocol: LongTermForecastProtocol, split: str, length: int) -> torch.Tensor:
    """Every univariate window of `length` steps in a split: [n_windows * channels, length] float32."""
    start, stop = protocol.split_range(split)
    data = torch.from_numpy(protocol.data[start:stop]).float()  # [T, C]
    windows = data.unfold(0, length, 1)  # [N, C, length]
    return windows.reshape(-1, length)


def train_gpht(
    protocol: LongTermForecastProtocol,
    *,
    config: GPHTConfig | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-4,
    patience: int = 3,
    device: str = "cpu",
    seed: int = 2021,
    max_batches: int | None = None,
    log=print,
) -> GPHT:
    """GPHT next-token training on the protocol's train split (univariate channels), early stopping on val."""
    seed_everything(seed)
    config = config or gpht_ett_config(protocol.seq_len)
    model = GPHT(config).to(device)
    length = config.seq_len + config.token_len
    train = _channel_windows(protocol, "train", length)
    val = _channel_windows(protocol, "val", length)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, bad = float("inf"), None, 0

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        x = batch[:, : config.seq_len, None].to(device)
        target = batch[:, config.token_len :, None].to(device)
        return nn.functional.mse_loss(model(x), target)

    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train))
        for i in range(0, len(train), batch_size):
            if max_batches is not None and i // batch_size >= max_batches:
                break
            loss = loss_of(train[order[i : i + batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            chunks = [
                loss_of(val[i : i + 1024]).item() * len(val[i : i + 1024]) for i in range(0, len(val), 1024)
            ]
        val_loss = sum(chunks) / len(val)
        if log:
            log(f"gpht epoch {epoch + 1}: val {val_loss:.4f} ({time.time() - start:.0f}s)")
        if val_loss < best:
            best, best_state, bad = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5**epoch
    model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def score_gpht(
    model: GPHT, protocol: LongTermForecastProtocol, *, device: str = "cpu", batch_size: int = 64
) -> tuple[float, float]:
    """MSE/MAE of the autoregressive forecast over every test window (channels as a batch)."""
    model.eval()
    ds = protocol.dataset("test")
    sq = ab = count = 0.0
    for i in range(0, len(ds), batch_size):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        x = torch.from_numpy(np.stack([it[0] for it in items])).float().to(device)
        y = torch.from_numpy(np.stack([it[1][-protocol.pred_len :] for it in items])).float().to(device)
        pred = model.forecast(x, protocol.pred_len)
        diff = (pred - y).double()
        sq, ab, count = sq + float((diff**2).sum()), ab + float(diff.abs().sum()), count + diff.numel()
    return sq / count, ab / count


def _fit_on_channel_windows(
    model: nn.Module,
    protocol: LongTermForecastProtocol,
    window_len: int,
    loss_of_batch,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    clip_grad_norm: float | None = 1.0,
    seed: int,
    device: str,
    log,
    name: str,
    time_budget_s: float | None = None,
) -> None:
    """The training loop both sampling forecasters share: `steps` AdamW steps (5 % warm-up, at least 2)
    on batches of univariate train windows of `window_len` steps drawn with replacement (the windows sit
    on the device, so a batch is one gather); `loss_of_batch(model, windows [batch_size, window_len])` is
    the model's objective. `time_budget_s` lowers `steps` to what fits that many seconds."""
    windows = _channel_windows(protocol, "train", window_len).to(device)
    fit_fixed_steps(
        model,
        loss_of_batch,
        lambda _: windows[torch.randint(len(windows), (batch_size,)).to(device)],
        steps=steps,
        lr=lr,
        warmup_steps=max(2, round(0.05 * steps)),
        clip_grad_norm=clip_grad_norm,
        seed=seed,
        device=device,
        log=log,
        log_every=1000,
        name=name,
        time_budget_s=time_budget_s,
    )


def train_tokenized_ar(
    protocol: LongTermForecastProtocol,
    *,
    steps: int = 20000,
    batch_size: int = 256,
    lr: float = 5e-4,
    device: str = "cpu",
    seed: int = 2021,
    d_model: int = 256,
    n_layers: int = 6,
    time_budget_s: float | None = None,
    log=print,
) -> TokenizedARForecaster:
    """Next-token training on univariate windows (context seq_len + 64 target steps) of the train split
    (bf16 autocast on a GPU, through the core Trainer); `time_budget_s` caps the training wall clock."""
    seed_everything(seed)
    pred_len = 64
    model = TokenizedARForecaster(
        forecaster_transformer_config(
            dim=d_model,
            n_layers=n_layers,
            n_heads=max(1, d_model // 32),  # head width 32
            mlp_hidden_dim=4 * d_model,
            max_seq_len=protocol.seq_len + pred_len,
        ),
        BinTokenizerConfig(n_bins=1024, limit=5.0, scaling="standard"),
        context_len=protocol.seq_len,
    ).to(device)
    _fit_on_channel_windows(
        model,
        protocol,
        protocol.seq_len + pred_len,
        lambda module, batch: module.training_loss(batch, None, context_steps=protocol.seq_len),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        log=log,
        name="tokenized-ar",
        time_budget_s=time_budget_s,
    )
    return model


def train_diffusion(
    protocol: LongTermForecastProtocol,
    *,
    steps: int = 20000,
    batch_size: int = 256,
    lr: float = 1e-3,
    device: str = "cpu",
    seed: int = 2021,
    hidden: int = 512,
    n_layers: int = 4,
    time_budget_s: float | None = None,
    log=print,
) -> DiffusionForecaster:
    """Noise-prediction training on univariate (history seq_len, future 48) windows of the train split
    (bf16 autocast on a GPU); `time_budget_s` caps the training wall clock."""
    seed_everything(seed)
    pred_len = 48
    model = DiffusionForecaster(
        DiffusionConfig(
            context_len=protocol.seq_len, pred_len=pred_len, hidden=hidden, n_layers=n_layers, n_steps=100
        )
    ).to(device)
    _fit_on_channel_windows(
        model,
        protocol,
        protocol.seq_len + pred_len,
        lambda module, batch: module.training_loss(
            batch[:, : protocol.seq_len], batch[:, protocol.seq_len :]
        ),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        clip_grad_norm=None,
        seed=seed,
        device=device,
        log=log,
        name="diffusion",
        time_budget_s=time_budget_s,
    )
    return model


@torch.no_grad()
def score_sampler(
    model: TokenizedARForecaster | DiffusionForecaster,
    protocol: LongTermForecastProtocol,
    *,
    stride: int = 8,
    num_samples: int = 20,
    device: str = "cpu",
    batch_windows: int = 16,
) -> tuple[float, float]:
    """MSE/MAE of the sample median on every `stride`-th test window, all channels."""
    ds = protocol.dataset("test")
    picks = list(range(0, len(ds), stride))
    sq = ab = count = 0.0
    for i in range(0, len(picks), batch_windows):
        items = [ds[j] for j in picks[i : i + batch_windows]]
        x = torch.from_numpy(np.stack([it[0].T for it in items])).float().reshape(-1, protocol.seq_len)
        y = np.stack([it[1][-protocol.pred_len :].T for it in items]).reshape(-1, protocol.pred_len)
        samples = model.sample(x.to(device), protocol.pred_len, num_samples=num_samples)
        median = samples.median(dim=0).values.double().cpu().numpy()
        sq, ab, count = (
            sq + float(((median - y) ** 2).sum()),
            ab + float(np.abs(median - y).sum()),
            count + y.size,
        )
    return sq / count, ab / count


@dataclass(frozen=True)
class SamplerRecipe:
    """Training settings of a sampling forecaster on the protocol: at most `steps` AdamW steps of
    `batch_size` windows at peak `lr`, cut to `time_budget_s` seconds of training when that is set."""

    steps: int
    batch_size: int
    lr: float
    time_budget_s: float | None = None


#: The reference recipes (20,000 steps of batch 256: about 16 minutes for the tokenised AR on an H200).
FULL_RECIPES = {
    "tokenized-ar": SamplerRecipe(steps=20000, batch_size=256, lr=5e-4),
    "diffusion": SamplerRecipe(steps=20000, batch_size=256, lr=1e-3),
}
#: GPU recipes that fit both models, four horizons each, in about five minutes on one H100: larger
#: batches, a higher peak lr for the tokenised AR (square-root batch scaling), a wall-clock budget.
FAST_RECIPES = {
    "tokenized-ar": SamplerRecipe(steps=20000, batch_size=512, lr=7e-4, time_budget_s=130.0),
    "diffusion": SamplerRecipe(steps=20000, batch_size=2048, lr=1e-3, time_budget_s=50.0),
}

_TRAINED: dict[tuple, tuple[nn.Module, float]] = {}


def run_generative_protocol(
    name: str,
    data,
    horizon: int,
    *,
    device: str = "cpu",
    epochs: int | None = None,
    seed: int = 2021,
    max_batches: int | None = None,
    recipe: SamplerRecipe | None = None,
    score_stride: int | None = None,
) -> tuple[float, float, float]:
    """Train (once for all horizons: both forecast autoregressively) and score one generative model at one
    horizon: (test MSE, test MAE, train seconds). `recipe` overrides the sampling forecasters' training
    (default `FULL_RECIPES`); `score_stride` scores every n-th test window (default 16)."""
    protocol = LongTermForecastProtocol(data, seq_len=96, label_len=48, pred_len=horizon)
    key = (name, str(data), device, epochs, seed, max_batches, recipe)
    if key not in _TRAINED:
        start = time.time()
        if name == "gpht":
            small = GPHTConfig(
                seq_len=96,
                token_len=24,
                GT_pooling_rate=[4, 2, 1],
                depth=3,
                GT_d_model=32,
                GT_d_ff=64,
                GT_e_layers=1,
                n_heads=4,
            )
            model = train_gpht(
                protocol,
                epochs=epochs or 10,
                device=device,
                seed=seed,
                max_batches=max_batches,
                config=None if max_batches is None else small,
            )
        elif name in FULL_RECIPES:
            chosen = recipe or FULL_RECIPES[name]
            settings = dict(
                steps=chosen.steps,
                batch_size=chosen.batch_size,
                lr=chosen.lr,
                time_budget_s=chosen.time_budget_s,
            )
            if max_batches is not None:  # quick checks: a tiny model
                settings["steps"] = max_batches * (epochs or 1)
                if name == "diffusion":
                    settings.update(hidden=32, n_layers=1)
                else:
                    settings.update(d_model=32, n_layers=1)
            trainer = train_diffusion if name == "diffusion" else train_tokenized_ar
            model = trainer(protocol, device=device, seed=seed, **settings)
        else:
            raise ValueError(f"unknown generative model {name!r}")
        _TRAINED[key] = (model, time.time() - start)
    model, seconds = _TRAINED[key]
    if name == "gpht":
        mse_, mae_ = score_gpht(model, protocol, device=device)
    else:
        stride = score_stride or (16 if max_batches is None else 512)
        windows = 64 if str(device).startswith("cuda") else 16
        mse_, mae_ = score_sampler(model, protocol, stride=stride, device=device, batch_windows=windows)
    return mse_, mae_, seconds
