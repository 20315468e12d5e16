"""Suite-wide fixtures: GPU tests skip without CUDA; `shared_dir` points at ../shared or skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("GENLOOM_SHARED_DIR", REPO_ROOT.parent / "shared"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _deterministic_seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the repository (parity fixtures, data); skip when absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is absent")
    return SHARED_DIR


@pytest.fixture
def parity_dir(shared_dir: Path):
    """Return a function giving ../shared/parity/<name>, skipping when that folder is absent."""

    def get(name: str) -> Path:
        path = shared_dir / "parity" / name
        if not path.is_dir():
            pytest.skip(f"../shared/parity/{name} is absent")
        return path

    return get
