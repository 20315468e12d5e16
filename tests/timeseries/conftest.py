"""Fixtures of the timeseries tests: paths into ../shared (skipping when absent), a tiny tokenised AR model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture
def etth1_csv() -> Path:
    path = SHARED / "data" / "ETT-small" / "ETTh1.csv"
    if not path.is_file():
        pytest.skip("../shared/data/ETT-small/ETTh1.csv is absent")
    return path


@pytest.fixture
def parity_folder():
    def get(name: str) -> Path:
        path = SHARED / "parity" / name
        if not path.is_dir():
            pytest.skip(f"../shared/parity/{name} is absent")
        return path

    return get


@pytest.fixture
def tiny_forecaster():
    """A builder of the same tiny seeded (untrained) tokenised AR forecaster, in train mode."""
    from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster, forecaster_transformer_config
    from genloom.timeseries.tokenizer import BinTokenizerConfig

    def build() -> TokenizedARForecaster:
        torch.manual_seed(0)
        return TokenizedARForecaster(
            forecaster_transformer_config(
                dim=32, n_layers=1, n_heads=2, mlp_hidden_dim=64, max_seq_len=48, dropout=0.0
            ),
            BinTokenizerConfig(n_bins=64, limit=3.0),
            context_len=32,
        )

    return build
