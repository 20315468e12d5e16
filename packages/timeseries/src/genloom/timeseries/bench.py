"""`genloom bench` target for the time-series presets: probabilistic forecasts of a batch of series.

Each sample is one series' forecast (20 sample paths turned into quantiles, horizon 24, from a context of the
model's length); the unit counted is forecast points. The input is a synthetic seasonal series with noise so
the timing does not depend on a data set. No floor is given: the work is many small decode passes whose
floor is the launch-bound loop, not a matrix rate.
"""

from __future__ import annotations

import numpy as np
import torch

from genloom.core.bench import BenchTarget, Work
from genloom.timeseries.forecast import load_forecaster_by_name, timeseries_preset_names

HORIZON = 24
NUM_SAMPLES = 20


def bench_target(
    name: str, *, device: torch.device, dtype: torch.dtype, fast: bool, random_weights: bool = False
) -> BenchTarget | None:
    """The forecasting of the time-series preset `name`, or None if it is not one (runs in float32: the
    forecasters' scaling and binning are precision-sensitive). `fast` on CUDA compiles the tokenised AR's
    decode step or the diffusion denoiser."""
    if random_weights:  # only the image package builds official architectures with random weights
        return None
    if name not in timeseries_preset_names():
        return None
    model = load_forecaster_by_name(name, device=str(device))
    if fast and device.type == "cuda":  # the models' compiled paths (CUDA graphs), where they have one
        for method in ("compile_decode", "compile_denoiser"):
            if hasattr(model, method):
                getattr(model, method)()
    context_len = int(getattr(model, "context_len", 96))
    steps = np.arange(context_len)
    rng = np.random.default_rng(0)

    def run(batch: int) -> object:
        phase = rng.uniform(0, 2 * np.pi, size=(batch, 1))
        series = 10 + np.sin(2 * np.pi * steps / 24 + phase) + 0.1 * rng.standard_normal((batch, context_len))
        return model.forecast(series, HORIZON, num_samples=NUM_SAMPLES, seed=0)

    return BenchTarget(
        name=f"{name} ({type(model).__name__}, {NUM_SAMPLES} paths, horizon {HORIZON})",
        run=run,
        work=lambda batch: Work(),
        sample_unit="forecast",
        unit="forecast point",
        units_per_sample=float(HORIZON),
    )
