"""Benchmark model -> shippable preset: a tiny BPE DA-Transformer trained here (seconds on CPU), archived as
the Multi30k benchmark archives its models, exported, registered and translated through the CLI by name."""

from __future__ import annotations

import json
import shutil
import tarfile
from importlib import resources

import pytest
import torch
from typer.testing import CliRunner

from genloom.core.zoo import register_preset, unregister_preset
from genloom.text.cli import app
from genloom.text.errors import TextInputError
from genloom.text.preset_export import benchmark_metric, export_translator_preset
from genloom.text.pretrained import load_text_model
from genloom.text.recipes import train_family
from genloom.text.tasks import pad_sequences
from genloom.text.zoo import MULTI30K_PRESETS, multi30k_presets

PAIRS = [
    ("ein hund läuft", "a dog runs"),
    ("eine katze schläft", "a cat sleeps"),
    ("ein mann liest", "a man reads"),
    ("eine frau singt", "a woman sings"),
] * 8


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """(tar holding `dat-distilled/` as the benchmark writes it, the trained folder, results json)."""
    root = tmp_path_factory.mktemp("m30k")
    data = root / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS))
    torch.manual_seed(0)
    folder = root / "dat-distilled"
    train_family(
        "dat", str(data), folder, steps=40, batch_size=16, dim=32, layers=1, vocab_size=300, upsample=4
    )
    tar_path = root / "text_multi30k_models_0.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname="dat-distilled")
    rows = [
        {"decoding": "DA-Transformer, lookahead", "data": "distilled", "bleu": 21.5, "decoder_passes": 1},
        {"decoding": "DA-Transformer, lookahead", "data": "raw", "bleu": 19.0, "decoder_passes": 1},
        {"decoding": "AR beam 4", "data": "raw", "bleu": 32.6, "decoder_passes": 35},
    ]
    results = root / "text_multi30k.json"
    results.write_text(json.dumps({"device": "test", "rows": rows}))
    return tar_path, folder, results


def _translate(model, tokenizer, lines):
    source, length = pad_sequences(tokenizer.encode_batch(lines))
    return [tokenizer.decode(t) for t in model.translate(source, length).tokens]


def test_export_from_tar_keeps_translations_and_card(archived, tmp_path):
    tar_path, folder, results = archived
    metric = benchmark_metric(results, "dat", "distilled")
    assert metric["test_2016_flickr"] == {"DA-Transformer, lookahead": {"bleu": 21.5, "decoder_passes": 1}}
    dest = export_translator_preset(
        tar_path, tmp_path / "multi30k-dat", name="multi30k-dat", member="dat-distilled",
        description=MULTI30K_PRESETS["multi30k-dat"], metric=metric,
    )  # fmt: skip
    info = json.loads((dest / "preset.json").read_text())
    assert info["name"] == "multi30k-dat" and info["family"] == "text.translator"
    assert info["card"]["metric"]["test_2016_flickr"]["DA-Transformer, lookahead"]["bleu"] == 21.5
    assert sorted(p.name for p in dest.iterdir()) == ["model", "preset.json", "tokenizer"]
    original, tokenizer, _ = load_text_model(folder)
    exported, exported_tokenizer, _ = load_text_model(dest)
    lines = [s for s, _ in PAIRS[:4]]
    assert _translate(exported, exported_tokenizer, lines) == _translate(original, tokenizer, lines)
    for a, b in zip(original.state_dict().values(), exported.state_dict().values()):
        assert torch.equal(a.half().float(), b)  # both fp16 on disk: identical weights


def test_export_refuses_oversized_or_missing_models(archived, tmp_path):
    tar_path, folder, results = archived
    with pytest.raises(TextInputError, match="exceed the preset limit"):
        export_translator_preset(folder, tmp_path / "x", name="x", description="x", max_bytes=1000)
    with pytest.raises(TextInputError, match="holds no model 'ctc-raw'"):
        export_translator_preset(tar_path, tmp_path / "x", name="x", description="x", member="ctc-raw")
    with pytest.raises(TextInputError, match="name the model inside it"):
        export_translator_preset(tar_path, tmp_path / "x", name="x", description="x")
    with pytest.raises(TextInputError, match="no distilled rows of family 'ctc'"):
        benchmark_metric(results, "ctc", "distilled")
    with pytest.raises(TextInputError, match="unknown translator family 'my'"):
        benchmark_metric(results, "my", "raw")  # a folder named my-dat: no benchmark family
    assert not (tmp_path / "x").exists()


def test_export_preset_cli_takes_the_card_rows_of_the_exported_folder(archived, tmp_path):
    # a folder named as the benchmark names its models (dat-distilled) gets the distilled rows whatever the
    # preset is called; the preset name says nothing about the training data
    _, folder, results = archived
    named = tmp_path / "dat-distilled"
    shutil.copytree(folder, named)
    out = tmp_path / "preset"
    export = CliRunner().invoke(
        app,
        [
            "export-preset",
            str(named),
            "--name",
            "my-translator",
            "--out",
            str(out),
            "--results",
            str(results),
        ],
    )
    assert export.exit_code == 0, export.output
    card = json.loads((out / "preset.json").read_text())["card"]["metric"]["test_2016_flickr"]
    assert card == {
        "DA-Transformer, lookahead": {"bleu": 21.5, "decoder_passes": 1}
    }  # distilled, not raw 19.0


def test_shipped_folder_is_registered_and_translates_by_name(archived, tmp_path, monkeypatch):
    tar_path, _, results = archived
    presets_root = tmp_path / "genloom_text" / "presets"
    runner = CliRunner()
    export = runner.invoke(
        app, ["export-preset", str(tar_path), "--member", "dat-distilled", "--name", "multi30k-dat",
              "--out", str(presets_root / "multi30k-dat"), "--results", str(results)],
    )  # fmt: skip
    assert export.exit_code == 0, export.output
    assert multi30k_presets(tmp_path / "nowhere") == []  # nothing registered before its folder exists
    (preset,) = multi30k_presets(presets_root)
    assert (preset.name, preset.source.package, preset.source.path) == (
        "multi30k-dat",
        "genloom.text",
        "presets/multi30k-dat",
    )
    # resolve the package folder to the exported one, as an installed wheel holding it would
    real_files = resources.files
    monkeypatch.setattr(
        resources, "files", lambda pkg: presets_root.parent if pkg == "genloom.text" else real_files(pkg)
    )
    register_preset(preset, overwrite=True)
    try:
        result = runner.invoke(app, ["translate", "--model", "multi30k-dat"], input="ein hund läuft\n")
    finally:
        unregister_preset("multi30k-dat")
    assert result.exit_code == 0, result.output
    model, tokenizer, _ = load_text_model(presets_root / "multi30k-dat")
    assert _translate(model, tokenizer, ["ein hund läuft"])[0] in result.output.splitlines()
