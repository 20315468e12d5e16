"""Fixtures of the timeseries tests: paths into ../shared (skipping when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
