"""`genloom mesh3d tokenize/detokenize` and the package demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh
from typer.testing import CliRunner

from genloom.mesh3d.adjacent_tokenizer import AdjacentMeshTokenizer
from genloom.mesh3d.cleanup import triangle_set
from genloom.mesh3d.cli import app
from genloom.mesh3d.demo import run_demo
from genloom.mesh3d.io import load_mesh, save_mesh


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_tokenize_then_detokenize_round_trips(tmp_path: Path, runner: CliRunner) -> None:
    source = save_mesh(trimesh.creation.cone(radius=0.5, height=1.0, sections=16), tmp_path / "cone.obj")
    result = runner.invoke(app, ["tokenize", str(source), "-o", str(tmp_path / "tokens.json")])
    assert result.exit_code == 0, result.output
    assert "32 faces -> 160 tokens (V1 would need 290)" in result.output
    document = json.loads((tmp_path / "tokens.json").read_text())
    tokenizer = AdjacentMeshTokenizer()
    assert document["tokens"] == tokenizer.encode(load_mesh(source)).tolist()
    assert document["vocab_size"] == 132 and len(document["face_ids"]) == len(document["tokens"])

    result = runner.invoke(
        app, ["detokenize", str(tmp_path / "tokens.json"), "-o", str(tmp_path / "out.obj")]
    )
    assert result.exit_code == 0, result.output
    decoded = load_mesh(tmp_path / "out.obj")
    quantized = tokenizer.quantize(load_mesh(source))
    assert triangle_set(decoded.vertices, decoded.faces, decimals=6) == triangle_set(
        quantized.vertices, quantized.faces, decimals=6
    )


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_errors_are_one_line(tmp_path: Path, runner: CliRunner) -> None:
    line = _one_line_error(
        runner.invoke(app, ["tokenize", str(tmp_path / "nope.obj"), "-o", str(tmp_path / "t.json")])
    )
    assert "does not exist" in line
    (tmp_path / "bad.json").write_text("{not json")
    line = _one_line_error(
        runner.invoke(app, ["detokenize", str(tmp_path / "bad.json"), "-o", str(tmp_path / "m.obj")])
    )
    assert "not valid JSON" in line
    (tmp_path / "other.json").write_text(json.dumps({"tokens": [0, 1]}))
    line = _one_line_error(
        runner.invoke(app, ["detokenize", str(tmp_path / "other.json"), "-o", str(tmp_path / "m.obj")])
    )
    assert "not a tokens file" in line
    source = save_mesh(trimesh.creation.box(), tmp_path / "box.obj")
    runner.invoke(app, ["tokenize", str(source), "-o", str(tmp_path / "box.json")])
    document = json.loads((tmp_path / "box.json").read_text())
    document["tokens"] = document["tokens"][1:]
    (tmp_path / "box.json").write_text(json.dumps(document))
    line = _one_line_error(
        runner.invoke(app, ["detokenize", str(tmp_path / "box.json"), "-o", str(tmp_path / "m.obj")])
    )
    assert "start with bos" in line
    assert not (tmp_path / "m.obj").exists()


def test_demo_writes_meshes_and_a_preview(tmp_path: Path) -> None:
    items = run_demo(tmp_path / "demo")
    meshes = [item for item in items if item.kind == "mesh"]
    assert [item.path.stem for item in meshes] == ["box", "icosphere", "torus", "capsule", "cone"]
    for item in meshes:
        assert item.path.suffix == ".obj" and item.path.is_file() and item.path.with_suffix(".glb").is_file()
        assert "not generation by a trained model" in item.caption and "equals" in item.caption
        assert len(load_mesh(item.path.with_suffix(".obj")).faces) > 0
    assert "12 faces -> 65 tokens (V1 would need 110" in meshes[0].caption
    preview = next(item for item in items if item.kind == "image")
    assert preview.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
