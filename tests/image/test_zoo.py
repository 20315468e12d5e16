"""The image zoo: shipped and official presets are registered; official files convert through `load_official`."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from genloom.core.errors import UnknownPresetError
from genloom.core.zoo import from_pretrained, register_preset, unregister_preset
from genloom.core.zoo.registry import get_preset, list_presets
from genloom.core.zoo.sources import official_checkpoint_path
from genloom.image.models import RasterAR
from genloom.image.official import OFFICIAL_CHECKPOINTS, load_official


def test_presets_are_registered_with_their_sources() -> None:
    names = {p.name for p in list_presets("image")}
    assert {
        "judge-digits",
        "judge-shapes",
        "var-d16",
        "var-d30",
        "llamagen-b",
        "llamagen-3b",
        "mar-h",
        "mar-kl16",
    } <= names
    var = get_preset("var-d20")
    assert var.source.kind == "converter" and var.source.url.endswith("/var_d20.pth")
    assert get_preset("judge-digits").source.kind == "package"
    assert OFFICIAL_CHECKPOINTS["llamagen-xl"].kwargs["grid"] == [24, 24]
    with pytest.raises(UnknownPresetError, match="var-d16|known"):
        load_official("var-d99", "nowhere.pth")


@pytest.mark.parity
@torch.no_grad()
def test_load_official_dispatches_to_the_converters(parity_dir) -> None:
    folder = parity_dir("llamagen")
    cases = load_file(folder / "cases.safetensors")
    gpt = load_official("llamagen-b", folder / "gpt.safetensors", n_heads=4, grid=(4, 4))
    torch.testing.assert_close(
        gpt(cases["cond_idx"], cases["tokens"][:, :-1]), cases["tf.logits"], atol=1e-4, rtol=0
    )
    vae = load_official("var-vqvae", parity_dir("var") / "vqvae.safetensors", patch_nums=[1, 2, 3, 4])
    assert vae.config.patch_nums == [1, 2, 3, 4]


def test_official_checkpoints_have_distinct_local_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path))
    converters = [p for p in list_presets("image") if p.source.kind == "converter"]
    paths = {official_checkpoint_path(p) for p in converters}
    assert len(paths) == len(converters) == len(OFFICIAL_CHECKPOINTS)
    assert {official_checkpoint_path(get_preset(f"mar-{s}")).parent.name for s in "blh"} == {
        "mar-b",
        "mar-l",
        "mar-h",
    }


@pytest.mark.parity
@torch.no_grad()
def test_zoo_from_pretrained_converts_an_official_file_once(parity_dir, tmp_path, monkeypatch) -> None:
    """`genloom.core.zoo.from_pretrained(name, checkpoint=...)` converts through the image converter hook,
    caches a float32 zoo folder, and loads it again without the official file."""
    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path))
    folder = parity_dir("llamagen")
    cases = load_file(folder / "cases.safetensors")
    official = get_preset("llamagen-b")
    tiny = dataclasses.replace(official, config={"n_heads": 4, "grid": [4, 4]})
    register_preset(tiny, overwrite=True)
    try:
        gpt = from_pretrained("llamagen-b", checkpoint=folder / "gpt.safetensors")
        again = from_pretrained("llamagen-b")  # from the cache folder
    finally:
        unregister_preset("llamagen-b")
    assert isinstance(gpt, RasterAR) and isinstance(again, RasterAR)
    expected = cases["tf.logits"]
    for model in (gpt, again):
        torch.testing.assert_close(
            model(cases["cond_idx"], cases["tokens"][:, :-1]), expected, atol=1e-4, rtol=0
        )
    assert (tmp_path / "presets" / "llamagen-b" / "config.json").is_file()
