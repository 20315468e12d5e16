"""Hyper-parameters of the Time-Series-Library scripts (`scripts/long_term_forecast/ETT_script/*_ETTh1.sh`)
and its run.py defaults, so our runs train the baselines the way the published tables were made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genloom.timeseries.errors import SeriesInputError


@dataclass
class TrainRecipe:
    """TSLib `exp_long_term_forecasting` defaults: Adam, MSE loss, lr halved every epoch after the first
    (lradj type1), early stopping on the validation loss with patience 3, seed 2021."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    train_epochs: int = 10
    patience: int = 3
    lradj: str = "type1"
    seed: int = 2021


# Model config overrides per (model, horizon) from the ETTh1 scripts; everything else is run.py's default
# (d_model 512, n_heads 8, d_ff 2048, moving_avg 25, dropout 0.1, embed timeF, activation gelu).
_ETTH1_COMMON = {
    "seq_len": 96,
    "label_len": 48,
    "e_layers": 2,
    "d_layers": 1,
    "factor": 3,
    "enc_in": 7,
    "dec_in": 7,
    "c_out": 7,
}
_ETTH1_MODEL = {
    "dlinear": lambda h: {},
    "itransformer": lambda h: {"d_model": 128, "d_ff": 128},
    "patchtst": lambda h: {"e_layers": 1, "n_heads": {96: 2, 192: 8, 336: 8, 720: 16}.get(h, 8)},
    "informer": lambda h: {},
    "autoformer": lambda h: {},
}

# Published MSE / MAE, lookback 96 (iTransformer paper, full results; reproduced by TSLib). Only ETTh1.
PUBLISHED_ETTH1 = {
    "itransformer": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458), 720: (0.503, 0.491)},
    "patchtst": {96: (0.414, 0.419), 192: (0.460, 0.445), 336: (0.501, 0.466), 720: (0.500, 0.488)},
    "dlinear": {96: (0.386, 0.400), 192: (0.437, 0.432), 336: (0.481, 0.459), 720: (0.519, 0.516)},
}


def etth1_config(model: str, horizon: int, *, n_channels: int = 7) -> dict[str, Any]:
    """TSLib config fields for `model` at `horizon` on an ETT-layout file with `n_channels` columns."""
    model = model.lower()
    if model not in _ETTH1_MODEL:
        raise SeriesInputError(f"no TSLib recipe for model {model!r}; known: {sorted(_ETTH1_MODEL)}")
    fields = {**_ETTH1_COMMON, "pred_len": horizon, **_ETTH1_MODEL[model](horizon)}
    fields.update(enc_in=n_channels, dec_in=n_channels, c_out=n_channels)
    return fields
