"""Train a model on the long-term protocol and save it as a folder (what `genloom ts train` runs).

Baselines and GPHT are saved in the official layout (config.json with official field names +
model.safetensors with official keys), so `load_official` reads them back; the sampling forecasters
(tokenised AR, diffusion) in the preset layout read by `load_forecaster`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from genloom.core.io import atomic_save_safetensors, atomic_write_json
from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import BASELINES, build_baseline
from genloom.timeseries.pretrained import save_forecaster
from genloom.timeseries.recipes import ett_config, ett_train_recipe, recipe_dataset
from genloom.timeseries.train import evaluate, seed_everything, train_supervised

OFFICIAL_NAMES = {
    "dlinear": "DLinear",
    "patchtst": "PatchTST",
    "itransformer": "iTransformer",
    "informer": "Informer",
    "autoformer": "Autoformer",
    "gpht": "GPHT",
}
TRAINABLE = (*BASELINES, "gpht", "tokenized-ar", "diffusion")


def save_official_layout(module: torch.nn.Module, config: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_save_safetensors(state, out / "model.safetensors")
    atomic_write_json(out / "config.json", config)
    return out


def train_to_folder(
    model: str,
    data: str | Path,
    out: str | Path,
    *,
    horizon: int = 96,
    target: str = "OT",
    epochs: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = print,
) -> dict:
    """Train `model` on `data` (ETT layout), score it on the test split, save it under `out`."""
    from genloom.timeseries import generative_protocol as gp

    name, out = model.lower(), Path(out)
    if name not in TRAINABLE:
        raise SeriesInputError(f"unknown model {model!r}; trainable: {list(TRAINABLE)}")
    protocol = LongTermForecastProtocol(data, pred_len=horizon, target=target)
    if name in BASELINES:
        # The ETT data set named by the file stem picks the recipe; any other file gets ETTh1's.
        dataset = recipe_dataset(data, default="ETTh1")
        fields = ett_config(name, horizon, dataset=dataset, n_channels=len(protocol.columns))
        config = TSLibConfig.from_dict(fields)
        recipe = ett_train_recipe(name, **({"train_epochs": epochs} if epochs else {}))
        if recipe.seed is not None:  # as TSLib's run.py: seeded once, before the model is built
            seed_everything(recipe.seed)
        net = build_baseline(name, config)
        train_supervised(net, protocol, replace(recipe, seed=None), device=device, log=log)
        result = evaluate(net, protocol, "test", device=device)
        mse, mae, fields = result.mse, result.mae, config.to_dict()
    elif name == "gpht":
        net = gp.train_gpht(protocol, epochs=epochs or 10, device=device, log=log)
        mse, mae = gp.score_gpht(net, protocol, device=device)
        fields = net.config.to_dict()
    else:
        steps = 1000 * (epochs or 20)
        trainer = gp.train_diffusion if name == "diffusion" else gp.train_tokenized_ar
        net = trainer(protocol, steps=steps, device=device, log=log)
        mse, mae = gp.score_sampler(net, protocol, stride=16, device=device)
        save_forecaster(
            net, out, preset={"name": out.name, "trained_on": str(data), "test_mse": mse, "test_mae": mae}
        )
        return {"model": name, "horizon": horizon, "mse": mse, "mae": mae, "out": str(out)}
    meta = {**fields, "model": OFFICIAL_NAMES[name], "_test_mse": mse, "_test_mae": mae, "_data": str(data)}
    save_official_layout(net, meta, out)
    return {"model": name, "horizon": horizon, "mse": mse, "mae": mae, "out": str(out)}
