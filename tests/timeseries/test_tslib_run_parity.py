"""Seeded as TSLib's run.py seeds (once, before the model is built) and trained with TSLib's loaders, a
DLinear run is TSLib's run: the same shuffles every epoch, so the same losses to float precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from genloom.timeseries.data.protocol import LongTermForecastProtocol
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.official import build_baseline
from genloom.timeseries.recipes import ett_config, ett_train_recipe
from genloom.timeseries.train import _loader, evaluate, seed_everything, train_supervised

# thuml/Time-Series-Library at 51d9ed6 (April 2024, the last version whose data provider drops the last
# partial training / validation batch and tests with batch 1), run on this CPU (torch 2.11, one thread):
# `run.py --task_name long_term_forecast --model DLinear --data ETTh1 --data_path ETTh1.csv --features M
# --seq_len 96 --label_len 48 --pred_len 96 --e_layers 2 --d_layers 1 --factor 3 --enc_in 7 --dec_in 7
# --c_out 7 --des Exp --itr 2 --train_epochs 2 --num_workers 0` (its run.py seeds 2021 once). Per run:
# train loss and validation loss of epochs 1 and 2, then test MSE and MAE.
TSLIB_ETTH1_DLINEAR_96 = [
    ((0.4340855, 0.3754827), (0.7190101, 0.6901200), 0.40457937121391296, 0.4175678491592407),
    ((0.4343091, 0.3757748), (0.7331767, 0.6906137), 0.404794305562973, 0.4178222715854645),
]


@pytest.mark.slow
def test_dlinear_runs_equal_tslib_runs_on_etth1(etth1_csv):
    protocol = LongTermForecastProtocol(etth1_csv, seq_len=96, label_len=48, pred_len=96)
    config = TSLibConfig.from_dict(ett_config("dlinear", 96, dataset="ETTh1"))
    seed_everything(2021)
    for train_losses, val_losses, mse, mae in TSLIB_ETTH1_DLINEAR_96:  # --itr 2: the stream continues
        model = build_baseline("dlinear", config)
        recipe = ett_train_recipe("dlinear", train_epochs=2, seed=None)
        history = train_supervised(model, protocol, recipe, log=None).history
        assert [h["train_mse"] for h in history] == pytest.approx(train_losses, rel=2e-5)
        assert [h["val_mse"] for h in history] == pytest.approx(val_losses, rel=2e-5)
        test = evaluate(model, protocol, "test")
        assert (test.mse, test.mae) == pytest.approx((mse, mae), rel=2e-5)


def test_training_draws_from_the_random_stream_as_the_tslib_loop_does(tmp_path):
    """Each TSLib epoch opens the shuffled training and validation loaders and the test loader (whose
    loss it prints); each opened iterator draws from the global torch RNG, so the next epoch's shuffle
    depends on all three. Data-free stand-in for the ETTh1 check above."""
    rows = 400
    t = np.arange(rows)
    pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "a": np.sin(t / 5.0),
            "target": np.cos(t / 7.0),
        }
    ).to_csv(tmp_path / "tiny.csv", index=False)
    protocol = LongTermForecastProtocol(
        tmp_path / "tiny.csv", seq_len=24, label_len=12, pred_len=12, target="target"
    )
    config = TSLibConfig(seq_len=24, label_len=12, pred_len=12, enc_in=2, dec_in=2, c_out=2)
    recipe = ett_train_recipe("dlinear", batch_size=8, train_epochs=2, seed=None)

    torch.manual_seed(0)
    train_supervised(build_baseline("dlinear", config), protocol, recipe, log=None)
    after_training = torch.get_rng_state()

    torch.manual_seed(0)
    build_baseline("dlinear", config)
    for _ in range(recipe.train_epochs):
        for split, shuffle, drop_last in (("train", True, True), ("val", True, True), ("test", False, False)):
            for _batch in _loader(protocol, split, recipe.batch_size, shuffle=shuffle, drop_last=drop_last):
                pass
    assert torch.equal(after_training, torch.get_rng_state())
