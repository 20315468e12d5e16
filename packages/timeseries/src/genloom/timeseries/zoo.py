"""Presets of genloom-timeseries, registered through the `genloom.zoo` entry point."""

from genloom.core.zoo import Preset, WeightSource

PRESETS: list[Preset] = [
    Preset(
        name="tiny-tokenized-ar",
        family="timeseries.tokenized_ar",
        modality="timeseries",
        description=(
            "Tiny Chronos-style tokenised AR forecaster (standard scaling, 256 uniform bins, 2-layer causal "
            "transformer), pretrained on statsmodels' bundled series and synthetic trend/season/regime/noise "
            "series; zero-shot, any univariate or multivariate (per channel) series. The default of "
            "`genloom ts forecast`."
        ),
        source=WeightSource(kind="package", package="genloom.timeseries", path="presets/tiny-tokenized-ar"),
        loader="genloom.timeseries.pretrained:load_forecaster",
        card={
            "data": "statsmodels co2/sunspots/elnino/nile/macrodata (final stretch held out) + synthetic mix",
            "metric": "zero-shot MASE on held-out cases vs seasonal naive (see preset.json)",
            "license": "Apache-2.0",
            "script": "scripts/train_timeseries_zeroshot.py",
        },
    ),
]
