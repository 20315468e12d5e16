"""The `genloom` CLI: registered verbs, zoo list/info, demo, plugin isolation, one-line errors with exit 2."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from genloom.core import cli as cli_module
from genloom.core.cli import CORE_COMMANDS, PLUGIN_COMMANDS, ZOO_COMMANDS, build_app, main
from genloom.core.demo import DemoItem
from genloom.core.zoo import (
    Preset,
    WeightSource,
    register_family,
    register_preset,
    save_pretrained,
    unregister_family,
    unregister_preset,
)

FAMILY = "test.cli_linear"
GENLOOM = Path(sys.executable).parent / "genloom"
runner = CliRunner()


def _build_linear(config: dict) -> nn.Module:
    return nn.Linear(config["n_in"], config["n_out"])


@pytest.fixture(autouse=True)
def registered(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path / "home"))
    register_family(FAMILY, _build_linear)
    register_preset(
        Preset(
            name="cli-linear-debug",
            family=FAMILY,
            modality="testmod",
            description="a 3->2 linear layer",
            source=WeightSource(kind="random"),
            config={"n_in": 3, "n_out": 2},
            params=8,
        )
    )
    yield
    unregister_preset("cli-linear-debug")
    unregister_family(FAMILY)


def _commands(app: typer.Typer) -> dict:
    return typer.main.get_command(app).commands


def test_registered_verbs_of_the_core_app():
    core = _commands(build_app(plugins=False))
    assert sorted(core) == sorted(CORE_COMMANDS)
    assert sorted(core["zoo"].commands) == sorted(ZOO_COMMANDS)
    full = set(_commands(build_app()))
    assert set(CORE_COMMANDS) <= full <= set(CORE_COMMANDS) | set(PLUGIN_COMMANDS)


def test_help_lists_core_verbs():
    result = runner.invoke(build_app(plugins=False), ["--help"])
    assert result.exit_code == 0
    assert "zoo" in result.output and "demo" in result.output


def test_zoo_list_and_info():
    app = build_app(plugins=False)
    result = runner.invoke(app, ["zoo", "list", "--modality", "testmod", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == [
        {
            "name": "cli-linear-debug",
            "modality": "testmod",
            "family": FAMILY,
            "params": 8,
            "weights": "random init (no weights)",
            "description": "a 3->2 linear layer",
        }
    ]
    table = runner.invoke(app, ["zoo", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "cli-linear-debug" in table.output and "test.cli_linear" in table.output
    info = runner.invoke(app, ["zoo", "info", "cli-linear-debug"])
    assert info.exit_code == 0
    assert "a 3->2 linear layer" in info.output and '{"n_in": 3, "n_out": 2}' in info.output


def test_zoo_check_and_inspect(tmp_path):
    torch.manual_seed(0)
    folder = save_pretrained(
        nn.Linear(3, 2), tmp_path / "lin", config={"family": FAMILY, "n_in": 3, "n_out": 2}
    )
    app = build_app(plugins=False)
    result = runner.invoke(app, ["zoo", "check", str(folder)])
    assert result.exit_code == 0 and "ok: Linear with 8 parameters (float32)" in result.output
    listing = tmp_path / "listing.json"
    result = runner.invoke(app, ["zoo", "inspect", str(folder / "model.safetensors"), "--out", str(listing)])
    assert result.exit_code == 0, result.output
    assert json.loads(listing.read_text())["weight"] == {"dtype": "F32", "shape": [2, 3]}


def test_demo_command_runs_demos_and_fails_at_the_end(tmp_path, monkeypatch):
    def good(out_dir, *, device="cpu"):
        (out_dir / "a.txt").write_text("hello")
        return [DemoItem("greeting", Path("a.txt"), "text")]

    def bad(out_dir, *, device="cpu"):
        raise ValueError("bad weights")

    def later(out_dir, *, device="cpu"):
        raise NotImplementedError

    monkeypatch.setattr("genloom.core.demo.discover_demos", lambda: {"a": good, "b": bad, "c": later})
    app = build_app(plugins=False)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "b: failed" in result.output and "ValueError: bad weights" in result.output
    assert "c: no demo yet" in result.output
    assert "<pre>hello</pre>" in (tmp_path / "d" / "index.html").read_text()
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d2"), "--only", "a,c"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d2" / "a" / "a.txt").is_file() and not (tmp_path / "d2" / "b").exists()


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch, capsys):
    good_app = typer.Typer()

    @good_app.command()
    def hello() -> None:
        typer.echo("hi")

    monkeypatch.setitem(sys.modules, "fake_genloom_plugin", type(sys)("fake_genloom_plugin"))
    sys.modules["fake_genloom_plugin"].app = good_app
    sys.modules["fake_genloom_plugin"].not_an_app = 3
    eps = [
        importlib.metadata.EntryPoint(name="image", value="no_such_genloom_module:app", group="genloom.cli"),
        importlib.metadata.EntryPoint(name="text", value="fake_genloom_plugin:app", group="genloom.cli"),
        importlib.metadata.EntryPoint(
            name="video", value="fake_genloom_plugin:not_an_app", group="genloom.cli"
        ),
        importlib.metadata.EntryPoint(name="zoo", value="fake_genloom_plugin:app", group="genloom.cli"),
    ]
    monkeypatch.setattr("genloom.core.cli.plugins.entry_points", lambda group: eps)
    app = build_app()
    warnings = capsys.readouterr().err
    assert "skipping sub-command 'image'" in warnings and "ModuleNotFoundError" in warnings
    assert "skipping sub-command 'video'" in warnings and "expected a typer.Typer" in warnings
    assert "skipping sub-command 'zoo'" in warnings and "already taken" in warnings
    assert sorted(_commands(app)) == ["bench", "demo", "text", "zoo"]
    assert runner.invoke(app, ["text", "hello"]).output == "hi\n"


# ----------------------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit code 2, no traceback, nothing executed
# ----------------------------------------------------------------------------------------------------------


def _saved_linear(tmp_path: Path) -> Path:
    return save_pretrained(
        nn.Linear(3, 2), tmp_path / "lin", config={"family": FAMILY, "n_in": 3, "n_out": 2}
    )


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, expected fragment of the one-line error)."""
    (tmp_path / "empty").mkdir()
    truncated = save_pretrained(
        nn.Linear(3, 2), tmp_path / "trunc", config={"family": FAMILY, "n_in": 3, "n_out": 2}
    )
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-8])
    wrong = _saved_linear(tmp_path)
    (wrong / "config.json").write_text(json.dumps({"family": FAMILY, "n_in": 4, "n_out": 2}))
    unknown_family = save_pretrained(nn.Linear(3, 2), tmp_path / "fam", config={"family": "test.cli_linaer"})
    torch.save({"w": torch.ones(1), "payload": _WritesMarker(tmp_path / "pwned")}, tmp_path / "evil.pt")
    return {
        "unknown preset": (["zoo", "info", "cli-linear-debgu"], "did you mean: cli-linear-debug"),
        "no config.json": (["zoo", "check", str(tmp_path / "empty")], "has no config.json"),
        "truncated": (["zoo", "check", str(truncated)], "is truncated: expected"),
        "wrong shape": (["zoo", "check", str(wrong)], "key 'weight' expects shape [2, 4], file has [2, 3]"),
        "unknown family": (["zoo", "check", str(unknown_family)], "unknown model family 'test.cli_linaer'"),
        "code-running pickle": (["zoo", "inspect", str(tmp_path / "evil.pt")], "refused to load"),
        "missing output folder": (["demo", "--out", str(tmp_path / "no" / "demo")], "does not exist"),
        "missing output folder (file)": (
            ["zoo", "inspect", str(truncated / "config.json"), "--out", str(tmp_path / "no" / "x.json")],
            "does not exist",
        ),
    }


def test_bad_input_is_one_line_and_exit_code_2_in_process(tmp_path, capsys):
    for name, (argv, fragment) in _bad_inputs(tmp_path).items():
        with pytest.raises(SystemExit) as info:
            main(argv)
        captured = capsys.readouterr()
        assert info.value.code == 2, name
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, (name, captured.err)
        assert fragment in captured.err, (name, captured.err)
        assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "pwned").exists()


def test_console_script_help_and_errors_in_a_subprocess(tmp_path):
    assert GENLOOM.is_file(), "the genloom console script is installed in the venv"
    result = subprocess.run([str(GENLOOM), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "zoo" in result.stdout and "demo" in result.stdout
    cases = _bad_inputs(tmp_path)
    # presets/families registered in this process do not exist in the child: use cases independent of them
    # (each start of the console script imports torch, so only a few of the cases run here)
    for name in ("code-running pickle", "missing output folder"):
        argv, fragment = cases[name]
        result = subprocess.run([str(GENLOOM), *argv], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith("error: ") and fragment in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, (name, result.stderr)
    assert not (tmp_path / "pwned").exists()


def test_main_is_the_console_entry_point():
    assert cli_module.main is main
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("genloom") == "genloom.core.cli:main"
