"""Presets that share a tokenizer store it once: `preset.json`'s `tokenizer_from` names the sibling preset
whose `tokenizer/` they use; saving, loading, the zoo and the CLI resolve it, a missing one is a clear error."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genloom.core.errors import ConfigError
from genloom.core.zoo import from_pretrained
from genloom.image.cli import app
from genloom.image.errors import CheckpointError
from genloom.image.pipeline import ImagePipeline
from genloom.image.presets import is_generator_preset, shipped_generator_names, shipped_preset_dir


@pytest.fixture()
def pair(tmp_path):
    """ar-digits copied into tmp_path, and maskgit-digits saved beside it naming its tokenizer."""
    shutil.copytree(shipped_preset_dir("ar-digits"), tmp_path / "ar-digits")
    maskgit = ImagePipeline.load(shipped_preset_dir("maskgit-digits"))
    maskgit.save(tmp_path / "maskgit-digits", tokenizer_from="ar-digits")
    return tmp_path, maskgit


def test_a_preset_saved_with_tokenizer_from_stores_no_tokenizer_and_loads_the_shared_one(pair) -> None:
    root, maskgit = pair
    folder = root / "maskgit-digits"
    assert not (folder / "tokenizer").exists() and (folder / "model" / "model.safetensors").is_file()
    assert json.loads((folder / "preset.json").read_text())["tokenizer_from"] == "ar-digits"
    again = ImagePipeline.load(folder)
    labels = torch.tensor([1, 7])
    torch.testing.assert_close(again.sample(labels, seed=3), maskgit.sample(labels, seed=3), atol=0, rtol=0)
    assert isinstance(from_pretrained(folder, component="tokenizer"), type(maskgit.tokenizer))
    assert shipped_generator_names(root) == ["ar-digits", "maskgit-digits"]


def test_resaving_with_tokenizer_from_drops_the_folders_own_tokenizer_and_both_are_refused(pair) -> None:
    root, maskgit = pair
    folder = root / "maskgit-own"
    maskgit.save(folder)  # its own tokenizer/ first
    maskgit.save(folder, tokenizer_from="ar-digits")  # then sharing: the stale tokenizer/ must not win
    assert not (folder / "tokenizer").exists()
    shutil.copytree(root / "ar-digits" / "tokenizer", folder / "tokenizer")  # both, by hand: ambiguous
    with pytest.raises(ConfigError, match="holds its own tokenizer/ and names another preset's"):
        from_pretrained(folder, component="tokenizer")


def test_a_missing_referenced_preset_is_a_clear_error(pair) -> None:
    root, _ = pair
    shutil.rmtree(root / "ar-digits")
    assert is_generator_preset(root / "maskgit-digits")  # listed; loading names what is missing
    with pytest.raises(CheckpointError, match="uses the tokenizer of preset 'ar-digits'"):
        ImagePipeline.load(root / "maskgit-digits")
    with pytest.raises(ConfigError, match="put the 'ar-digits' preset beside 'maskgit-digits'"):
        from_pretrained(root / "maskgit-digits", component="tokenizer")


def test_tokenizer_from_must_name_a_sibling_folder_holding_the_same_kind_of_tokenizer(pair, tmp_path) -> None:
    root, maskgit = pair
    info_path = root / "maskgit-digits" / "preset.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "tokenizer_from": "../elsewhere"}))
    with pytest.raises(CheckpointError, match="must be the name of a sibling preset folder"):
        ImagePipeline.load(root / "maskgit-digits")
    shutil.copytree(shipped_preset_dir("var-digits"), root / "var-digits")
    with pytest.raises(CheckpointError, match="not this preset's"):  # a multi-scale VQ is not its VQ
        maskgit.save(root / "other", tokenizer_from="var-digits")


def test_the_cli_samples_and_reconstructs_with_a_preset_that_shares_its_tokenizer(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["sample", "--model", "maskgit-digits", "--class", "3", "--n", "2", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    recon = tmp_path / "recon.png"
    folder = str(shipped_preset_dir("maskgit-digits"))
    result = runner.invoke(
        app, ["reconstruct", "--tokenizer", folder, "--data", "digits", "--n", "4", "-o", str(recon)]
    )
    assert result.exit_code == 0, result.output
    assert recon.is_file()


def _presets_script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "train_image_presets.py"
    spec = importlib.util.spec_from_file_location("train_image_presets", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_training_script_takes_a_frozen_tokenizer_from_a_preset() -> None:
    script = _presets_script()
    args = argparse.Namespace(
        tokenizer_from=shipped_preset_dir("maskgit-digits"), families=["ar", "maskgit"], datasets=["digits"]
    )
    name, kind, tokenizer, metrics = script.load_shared_tokenizer(args)
    assert (name, kind) == ("ar-digits", "vq")  # followed on to the preset holding the file
    assert not any(p.requires_grad for p in tokenizer.parameters())
    assert metrics["step"] == 2000 and metrics["psnr"] > 30
    with pytest.raises(SystemExit, match=r"families \['var'\] cannot use"):
        script.load_shared_tokenizer(argparse.Namespace(**{**vars(args), "families": ["ar", "var"]}))
    with pytest.raises(SystemExit, match="pass --datasets digits"):
        script.load_shared_tokenizer(argparse.Namespace(**{**vars(args), "datasets": ["shapes"]}))
