"""Atomic writes, checked safetensors reads and the pickle allow-list of genloom.core.io."""

from __future__ import annotations

import argparse
import json
import pickle

import numpy as np
import pytest
import torch

from genloom.core.errors import CheckpointError, OutputPathError, UnsafeCheckpointError
from genloom.core.io import (
    atomic_path,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    load_safetensors,
    safe_torch_load,
    safetensors_shapes,
    sha256_file,
)


class _WritesMarker:
    """A pickle payload that, if ever unpickled without restrictions, creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_atomic_write_bytes_and_json_round_trip(tmp_path):
    target = atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01hello")
    assert target.read_bytes() == b"\x00\x01hello"
    atomic_write_json(tmp_path / "c.json", {"b": 2, "a": [1, 2.5]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": [1, 2.5], "b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json"]  # no temp files left


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_write_into_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "x.bin", b"x")


def test_safetensors_round_trip_and_header(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64)}
    path = atomic_save_safetensors(tensors, tmp_path / "m.safetensors", metadata={"k": "v"})
    assert safetensors_shapes(path) == {"w": ((3, 4), "F32"), "b": ((5,), "I64")}
    loaded = load_safetensors(path)
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    assert len(sha256_file(path)) == 64


def test_truncated_safetensors_is_reported_with_sizes(tmp_path):
    path = atomic_save_safetensors({"w": torch.randn(64, 64)}, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated: expected"):
        load_safetensors(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_safetensors(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_safetensors(tmp_path / "none.safetensors")


def test_safe_torch_load_accepts_official_extras(tmp_path):
    path = tmp_path / "official.pt"
    torch.save(
        {
            "model": {"w": torch.ones(2, 2)},
            "args": argparse.Namespace(lr=0.1, depth=4),
            "best": np.float64(1.5),
            "dtype": np.dtype("float32"),
            "curve": np.arange(3.0),
        },
        path,
    )
    ckpt = safe_torch_load(path)
    assert torch.equal(ckpt["model"]["w"], torch.ones(2, 2))
    assert ckpt["args"].depth == 4 and float(ckpt["best"]) == 1.5
    assert np.array_equal(ckpt["curve"], np.arange(3.0))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle-protocol2", "raw-pickle-protocol4"])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"w": torch.ones(1), "evil": _WritesMarker(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2 if container.endswith("2") else 4))
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert "refused" in message and "nothing was executed" in message and "\n" not in message
    if container != "raw-pickle-protocol4":
        assert "exec" in message  # names the global it refused
    assert not marker.exists()


def test_corrupt_torch_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "broken.pt"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError):
        safe_torch_load(path)


def test_atomic_writes_give_normal_file_permissions(tmp_path) -> None:
    """Files must be readable by others (shipped presets): not mkstemp's private 0600."""
    import os
    import stat

    import torch

    from genloom.core.io import atomic_save_safetensors, atomic_write_json

    umask = os.umask(0o022)
    try:
        for path in (
            atomic_save_safetensors({"a": torch.zeros(2)}, tmp_path / "w.safetensors"),
            atomic_write_json(tmp_path / "c.json", {"a": 1}),
        ):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path
    finally:
        os.umask(umask)
