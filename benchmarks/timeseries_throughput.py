"""Forecasts per second of every time-series model: eager against `torch.compile`, same inputs, same seeds.

A batch of `--batch` univariate series (default 1,024) with a 96-step history is forecast 96 steps ahead
by randomly initialised models at the sizes of our ETTh1 runs: DLinear, PatchTST and iTransformer (the
TSLib ETTh1 configs at horizon 96, one channel per series), GPHT (the `train_gpht` config, forecasting
autoregressively in 24-step tokens), the tokenised AR forecaster (20 sample paths per series, 96 sampled
tokens) and the diffusion forecaster (20 paths, 50 DDIM steps per 48-step window, two windows).

Compiled: the whole forecast (`mode="reduce-overhead"`: CUDA graphs on a GPU) for the four point
forecasters; the one-token decode step (core `Transformer.compile_decode`, static KV cache) for the
tokenised AR; the denoiser for the diffusion model (the sampler loops and their random draws stay eager).
On a GPU the transformer models and the denoiser run under bf16 autocast in both columns, DLinear in fp32.

Max abs diff: compiled against eager forecast on the same inputs and seeds. For the tokenised AR it is
the largest difference of the step logits over 64 teacher-forced decode steps (sampled tokens can flip at
near-ties, so paths are compared by their share of identical tokens, printed beside the table).

    .venv/bin/python benchmarks/timeseries_throughput.py --device cuda --out timeseries_throughput.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeseries_throughput.py --device cpu --batch 32 --paths 4
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genloom.timeseries.generative_protocol import gpht_ett_config
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.diffusion import DiffusionConfig, DiffusionForecaster
from genloom.timeseries.models.gpht import GPHT
from genloom.timeseries.models.official import build_baseline
from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster, forecaster_transformer_config
from genloom.timeseries.recipes import ett_config
from genloom.timeseries.tokenizer import BinTokenizerConfig

HISTORY, HORIZON = 96, 96
MODELS = ("dlinear", "patchtst", "itransformer", "gpht", "tokenized-ar", "diffusion")
Forecast = Callable[[], torch.Tensor]


@dataclass
class Row:
    model: str
    precision: str
    eager_per_s: float
    compiled_per_s: float
    max_abs_diff: float
    note: str = ""


def synthetic_histories(batch: int, length: int, device: str, seed: int = 0) -> torch.Tensor:
    """Daily-seasonal series with a random level, amplitude, trend and noise: [batch, length]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    level = 10 * torch.randn(batch, 1, generator=gen)
    amp = 1 + 3 * torch.rand(batch, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(batch, 1, generator=gen)
    trend = 0.02 * torch.randn(batch, 1, generator=gen) * t
    noise = 0.3 * torch.randn(batch, length, generator=gen)
    return (level + amp * torch.sin(2 * math.pi * t / 24 + phase) + trend + noise).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forecast(fn: Forecast, device: str, *, warmup: int, min_seconds: float) -> float:
    """Median seconds of one call after `warmup` calls (compilation and CUDA-graph capture happen there)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < 3 or (sum(times) < min_seconds and len(times) < 50):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _precision(device: str, bf16: bool) -> tuple[str, Callable[[], AbstractContextManager]]:
    if device.startswith("cuda") and bf16:
        return "bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return "fp32", nullcontext


def _compile(fn: Callable, device: str) -> Callable:
    mode = "reduce-overhead" if device.startswith("cuda") else "default"
    return torch.compile(fn, mode=mode, dynamic=False)


def point_forecasters(name: str, series: torch.Tensor, device: str) -> tuple[str, Forecast, Forecast]:
    """(precision, eager, compiled) forecasts [B, 96] of a randomly initialised point forecaster."""
    torch.manual_seed(0)
    if name == "gpht":
        model: nn.Module = GPHT(gpht_ett_config(HISTORY))
    else:
        model = build_baseline(
            name, TSLibConfig.from_dict(ett_config(name, HORIZON, dataset="ETTh1", n_channels=1))
        )
    model = model.to(device).eval()
    precision, autocast = _precision(device, bf16=name != "dlinear")
    x = series[:, :, None]
    marks = torch.rand(series.shape[0], HISTORY, 4, generator=torch.Generator().manual_seed(1)) - 0.5
    x_mark = marks.to(device)
    dec_in = torch.zeros(series.shape[0], 48 + HORIZON, 1, device=device)
    y_mark = torch.zeros(series.shape[0], 48 + HORIZON, 4, device=device)

    def forecast(x: torch.Tensor, x_mark: torch.Tensor) -> torch.Tensor:
        if name == "gpht":
            return model.forecast(x, HORIZON)[..., 0]
        return model(x, x_mark, dec_in, y_mark)[:, -HORIZON:, 0]

    compiled = _compile(forecast, device)

    @torch.no_grad()
    def eager() -> torch.Tensor:
        with autocast():
            return forecast(x, x_mark).float()

    @torch.no_grad()
    def fast() -> torch.Tensor:
        with autocast():
            return compiled(x, x_mark).float().clone()  # a CUDA-graph replay overwrites its output

    return precision, eager, fast


def _generator(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def tokenized_ar(series: torch.Tensor, device: str, paths: int) -> tuple[Row, str]:
    torch.manual_seed(0)
    eager_model = TokenizedARForecaster(
        forecaster_transformer_config(
            dim=256, n_layers=6, n_heads=8, mlp_hidden_dim=1024, max_seq_len=HISTORY + 64, dropout=0.0
        ),
        BinTokenizerConfig(n_bins=1024, limit=5.0, scaling="standard"),
        context_len=HISTORY,
    ).to(device)
    compiled_model = copy.deepcopy(eager_model)
    compiled_model.compile_decode(mode="reduce-overhead" if device.startswith("cuda") else "default")
    precision, autocast = _precision(device, bf16=True)

    def runner(model: TokenizedARForecaster) -> Forecast:
        def run() -> torch.Tensor:
            with autocast():
                return model.sample(series, HORIZON, num_samples=paths, generator=_generator(device, 0))

        return run

    eager, fast = runner(eager_model), runner(compiled_model)
    eager_s = time_forecast(eager, device, warmup=1, min_seconds=2.0)
    fast_s = time_forecast(fast, device, warmup=3, min_seconds=2.0)
    eager_paths, fast_paths = eager(), fast()
    agree = float((eager_paths == fast_paths).float().mean())
    logit_diff = teacher_forced_logit_diff(eager_model, compiled_model, series, eager_paths, paths, autocast)
    n = series.shape[0]
    row = Row("tokenized AR", precision, n / eager_s, n / fast_s, logit_diff, "step logits")
    return row, f"tokenized AR: {agree:.1%} of sampled values identical between eager and compiled"


@torch.no_grad()
def teacher_forced_logit_diff(
    eager_model: TokenizedARForecaster,
    compiled_model: TokenizedARForecaster,
    series: torch.Tensor,
    paths: torch.Tensor,
    num_samples: int,
    autocast: Callable[[], AbstractContextManager],
) -> float:
    """Largest |eager - compiled| step logit while both decoders are fed the eager paths' first 64 tokens
    (the cache batch and length are those of `sample`, so the compiled step's graphs are reused)."""
    context = series.repeat_interleave(num_samples, 0)
    future = paths.transpose(0, 1).reshape(context.shape[0], -1)[:, :64]
    worst = 0.0
    steps: list[list[torch.Tensor]] = []
    for model in (eager_model, compiled_model):
        tok = model.tokenizer
        loc, scale = tok.fit_scale(context)
        ids, new = tok.encode(context, loc, scale), tok.encode(future, loc, scale)
        decoder, logits = model.decoder, []
        with autocast():
            dtype = torch.bfloat16 if torch.is_autocast_enabled("cuda") else None
            decoder.setup_cache(context.shape[0], decoder.config.max_seq_len, dtype=dtype)
            decoder(ids, input_pos=torch.arange(HISTORY, device=ids.device))
            for i in range(new.shape[1] - 1):
                pos = torch.tensor([HISTORY + i], device=ids.device)
                logits.append(decoder(new[:, i : i + 1], input_pos=pos).float().clone())
        steps.append(logits)
    eager_model.decoder.remove_cache()
    for a, b in zip(*steps, strict=True):
        worst = max(worst, float((a - b).abs().max()))
    return worst


def diffusion(series: torch.Tensor, device: str, paths: int) -> Row:
    torch.manual_seed(0)
    eager_model = DiffusionForecaster(
        DiffusionConfig(context_len=HISTORY, pred_len=48, hidden=512, n_layers=4, n_steps=100)
    ).to(device)
    compiled_model = copy.deepcopy(eager_model)
    compiled_model.compile_denoiser(mode="reduce-overhead" if device.startswith("cuda") else "default")
    precision, autocast = _precision(device, bf16=True)

    def runner(model: DiffusionForecaster) -> Forecast:
        def run() -> torch.Tensor:
            with autocast():
                samples = model.sample(
                    series, HORIZON, num_samples=paths, n_steps=50, generator=_generator(device, 0)
                )
            return samples.float()

        return run

    eager, fast = runner(eager_model), runner(compiled_model)
    eager_s = time_forecast(eager, device, warmup=1, min_seconds=2.0)
    fast_s = time_forecast(fast, device, warmup=3, min_seconds=2.0)
    diff = float((eager() - fast()).abs().max())
    n = series.shape[0]
    return Row("diffusion", precision, n / eager_s, n / fast_s, diff, "sample paths")


def measure(name: str, series: torch.Tensor, device: str, paths: int) -> tuple[Row, str]:
    if name == "tokenized-ar":
        return tokenized_ar(series, device, paths)
    if name == "diffusion":
        return diffusion(series, device, paths), ""
    precision, eager, fast = point_forecasters(name, series, device)
    eager_s = time_forecast(eager, device, warmup=1, min_seconds=1.0)
    fast_s = time_forecast(fast, device, warmup=3, min_seconds=1.0)
    diff = float((eager() - fast()).abs().max())
    n = series.shape[0]
    label = {"dlinear": "DLinear", "patchtst": "PatchTST", "itransformer": "iTransformer", "gpht": "GPHT"}
    return Row(label[name], precision, n / eager_s, n / fast_s, diff, "forecast"), ""


def markdown(rows: list[Row], notes: list[str], args: argparse.Namespace, device_name: str) -> str:
    lines = [
        f"Forecasts per second, batch of {args.batch} series, history {HISTORY}, horizon {HORIZON}, "
        f"{args.paths} sample paths for the sampling models; {device_name}, torch {torch.__version__}.",
        "",
        "| model | precision | eager forecasts/s | compiled forecasts/s | speed-up | max abs diff (of) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.precision} | {r.eager_per_s:,.0f} | {r.compiled_per_s:,.0f} | "
            f"{r.compiled_per_s / r.eager_per_s:.2f}x | {r.max_abs_diff:.2e} ({r.note}) |"
        )
    lines += ["", *(f"- {n}" for n in notes if n)]
    return "\n".join(lines).rstrip() + "\n"


def write_table(table: str, out: Path | None) -> None:
    """Write `table` to `out` atomically (nothing when `out` is None)."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(table)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1024, help="series per forecast call")
    parser.add_argument("--paths", type=int, default=20, help="sample paths per series (sampling models)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--deadline", type=float, default=None, help="skip models started after N seconds")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.paths < 1:
        parser.error("--batch and --paths must be positive")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows stay fp32 in both columns
        device_name = torch.cuda.get_device_name(args.device)
    else:
        device_name = f"CPU ({torch.get_num_threads()} threads)"
    series = synthetic_histories(args.batch, HISTORY, args.device)
    start, rows, notes = time.perf_counter(), [], []
    for name in args.models:
        if args.deadline is not None and time.perf_counter() - start > args.deadline:
            notes.append(f"{name}: skipped, past the {args.deadline:.0f} s deadline")
            continue
        began = time.perf_counter()
        try:
            row, note = measure(name, series, args.device, args.paths)
        except Exception as error:  # noqa: BLE001 - one model's failure must not lose the others' rows
            notes.append(f"{name}: failed: {type(error).__name__}: {str(error)[:300]}")
            print(notes[-1], flush=True)
            continue
        rows.append(row)
        notes.append(note)
        print(f"{row} ({time.perf_counter() - began:.0f} s)", flush=True)
        torch._dynamo.reset()
        write_table(markdown(rows, notes, args, device_name), args.out)  # partial results survive a kill
    table = markdown(rows, notes, args, device_name)
    print(table)
    write_table(table, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
