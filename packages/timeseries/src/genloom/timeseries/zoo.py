"""Presets and model families of genloom-timeseries, registered through the `genloom.zoo` entry point.

Importing this module registers the families `timeseries.tokenized_ar` and `timeseries.diffusion`, so
`genloom.core.zoo.from_pretrained` builds those forecasters from their `config.json`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from genloom.core.zoo import Preset, WeightSource, register_family


def _build_tokenized_ar(config: dict[str, Any]) -> nn.Module:
    from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster

    return TokenizedARForecaster.from_config_dict(config)


def _build_diffusion(config: dict[str, Any]) -> nn.Module:
    from genloom.timeseries.models.diffusion import DiffusionForecaster

    return DiffusionForecaster.from_config_dict(config)


FAMILIES = {"timeseries.tokenized_ar": _build_tokenized_ar, "timeseries.diffusion": _build_diffusion}
for _name, _builder in FAMILIES.items():
    register_family(_name, _builder)

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
