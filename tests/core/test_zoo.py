"""genloom.core.zoo: presets, families, save/from_pretrained and the package / url / converter sources."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from genloom.core.errors import CheckpointError, ConfigError, UnknownPresetError, UnsafeCheckpointError
from genloom.core.zoo import (
    Preset,
    WeightSource,
    from_pretrained,
    get_preset,
    list_families,
    list_presets,
    register_family,
    register_preset,
    registry,
    resolve_preset_dir,
    save_preset_folder,
    save_pretrained,
    unregister_family,
    unregister_preset,
)

FAMILY = "test.tinylm"


class TinyLM(nn.Module):
    """Embedding -> MLP -> head, optionally tying the head to the embedding."""

    def __init__(self, *, vocab: int = 11, dim: int = 6, hidden: int = 12, tie: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.head = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        return self.head(x + self.scale * self.mlp(x))


def build_tinylm(config: dict) -> TinyLM:
    return TinyLM(**config)


@pytest.fixture(autouse=True)
def tiny_family(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLOOM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENLOOM_OFFLINE", raising=False)
    register_family(FAMILY, build_tinylm)
    yield
    unregister_family(FAMILY)
    for preset in list(registry._RUNTIME_PRESETS):
        unregister_preset(preset)


def _trained_tinylm(seed: int = 0, **config) -> TinyLM:
    torch.manual_seed(seed)
    model = TinyLM(**config)
    with torch.no_grad():
        model.scale.fill_(0.25 + seed)
    return model


def _tokens() -> torch.Tensor:
    return torch.tensor([[1, 2, 3, 4, 10]])


@pytest.mark.parametrize("tie", [False, True])
def test_save_and_from_pretrained_round_trip(tmp_path, tie):
    model = _trained_tinylm(seed=3, tie=tie)
    folder = save_pretrained(
        model,
        tmp_path / "m",
        config={"family": FAMILY, "vocab": 11, "dim": 6, "hidden": 12, "tie": tie},
        extra_files={"notes.txt": "hello", "meta/card.json": {"licence": "CC0"}},
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == FAMILY and config["format_version"] == 1
    assert (folder / "notes.txt").read_text() == "hello"
    assert json.loads((folder / "meta" / "card.json").read_text()) == {"licence": "CC0"}
    loaded = from_pretrained(folder)
    assert isinstance(loaded, TinyLM) and not loaded.training
    assert torch.equal(loaded(_tokens()), model.eval()(_tokens()))
    assert float(loaded.scale) == 3.25  # buffers travel too
    if tie:
        assert loaded.head.weight is loaded.embed.weight


def test_preset_folder_with_model_and_tokenizer(tmp_path):
    preset = Preset(
        name="t", family=FAMILY, modality="text", description="d", source=WeightSource(kind="random")
    )
    model, tokenizer = _trained_tinylm(1), _trained_tinylm(2, vocab=5, dim=3, hidden=4)
    folder = save_preset_folder(
        tmp_path / "tiny-digits",
        preset=preset,
        model=model,
        model_config={"family": FAMILY},
        tokenizer=tokenizer,
        tokenizer_config={"family": FAMILY, "vocab": 5, "dim": 3, "hidden": 4},
    )
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "model/config.json",
        "model/model.safetensors",
        "preset.json",
        "tokenizer/config.json",
        "tokenizer/model.safetensors",
    ]
    assert torch.equal(from_pretrained(folder).embed.weight, model.embed.weight)
    assert torch.equal(from_pretrained(folder, component="tokenizer").embed.weight, tokenizer.embed.weight)
    assert json.loads((folder / "preset.json").read_text())["family"] == FAMILY


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        from_pretrained(tmp_path / "empty")
    with pytest.raises(ConfigError, match="is not a folder"):
        from_pretrained(tmp_path / "nowhere")


def test_unknown_family_lists_close_names(tmp_path):
    folder = save_pretrained(_trained_tinylm(), tmp_path / "m", config={"family": FAMILY})
    (folder / "config.json").write_text(json.dumps({"family": "test.tinyln"}))
    with pytest.raises(ConfigError, match=r"unknown model family 'test.tinyln'; did you mean: test.tinylm"):
        from_pretrained(folder)


def test_wrong_shape_reports_first_key_and_both_shapes(tmp_path):
    folder = save_pretrained(_trained_tinylm(hidden=12), tmp_path / "m", config={"family": FAMILY})
    (folder / "config.json").write_text(json.dumps({"family": FAMILY, "hidden": 16}))
    with pytest.raises(CheckpointError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "'mlp.0.weight' expects shape [16, 6], file has [12, 6]" in message
    assert "3 mismatching keys" in message


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    from genloom.core.io import atomic_save_safetensors

    folder = save_pretrained(_trained_tinylm(), tmp_path / "m", config={"family": FAMILY})
    state = dict(_trained_tinylm().state_dict())
    del state["head.weight"]
    state["extra.bias"] = torch.zeros(2)
    atomic_save_safetensors(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: head.weight; unexpected keys: extra.bias"):
        from_pretrained(folder)
    lenient = from_pretrained(folder, strict=False)  # strict=False loads what fits
    assert torch.equal(lenient.embed.weight, state["embed.weight"])


def test_truncated_weights_are_reported(tmp_path):
    folder = save_pretrained(_trained_tinylm(), tmp_path / "m", config={"family": FAMILY})
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-40])
    with pytest.raises(CheckpointError, match="truncated"):
        from_pretrained(folder)


def test_bad_builder_arguments_are_a_config_error(tmp_path):
    folder = save_pretrained(_trained_tinylm(), tmp_path / "m", config={"family": FAMILY})
    (folder / "config.json").write_text(json.dumps({"family": FAMILY, "depth": 3}))
    with pytest.raises(ConfigError, match="cannot build family 'test.tinylm'"):
        from_pretrained(folder)


def test_presets_registry_and_unknown_name():
    register_preset(
        Preset(
            name="tiny-lm-debug",
            family=FAMILY,
            modality="text",
            description="d",
            source=WeightSource("random"),
        )
    )
    assert get_preset("tiny-lm-debug").family == FAMILY
    assert "tiny-lm-debug" in [p.name for p in list_presets(modality="text")]
    assert "tiny-lm-debug" not in [p.name for p in list_presets(modality="image")]
    with pytest.raises(
        UnknownPresetError, match=r"unknown preset 'tiny-lm-debgu'; did you mean: tiny-lm-debug"
    ):
        get_preset("tiny-lm-debgu")
    with pytest.raises(ConfigError, match="already registered"):
        register_preset(get_preset("tiny-lm-debug"))
    model = from_pretrained("tiny-lm-debug")  # random source: built from the preset config
    assert isinstance(model, TinyLM)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_source_downloads_checks_sha_and_caches(tmp_path, monkeypatch):
    served = tmp_path / "served" / "weights.safetensors"
    served.parent.mkdir()
    model = _trained_tinylm(5)
    save_pretrained(model, tmp_path / "src", config={"family": FAMILY})
    served.write_bytes((tmp_path / "src" / "model.safetensors").read_bytes())
    good = Preset(
        name="tiny-url",
        family=FAMILY,
        modality="text",
        description="d",
        source=WeightSource(kind="url", url=served.as_uri(), sha256=_sha(served)),
    )
    bad = Preset(
        name="tiny-url-bad",
        family=FAMILY,
        modality="text",
        description="d",
        source=WeightSource(kind="url", url=served.as_uri(), sha256="0" * 64),
    )
    register_preset(good)
    register_preset(bad)
    with pytest.raises(CheckpointError, match="expected 0000"):
        from_pretrained("tiny-url-bad")
    bad_dir = tmp_path / "home" / "presets" / "tiny-url-bad" / "model"
    assert not any(bad_dir.glob("*")), "a failed download leaves no file behind"

    loaded = from_pretrained("tiny-url")
    assert torch.equal(loaded(_tokens()), model.eval()(_tokens()))
    served.unlink()  # now only the cache has it
    monkeypatch.setenv("GENLOOM_OFFLINE", "1")
    assert torch.equal(from_pretrained("tiny-url").embed.weight, model.embed.weight)


def test_offline_mode_names_the_file_to_place(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLOOM_OFFLINE", "1")
    register_preset(
        Preset(
            name="tiny-remote",
            family=FAMILY,
            modality="text",
            description="d",
            source=WeightSource(
                kind="url", url="https://example.invalid/w/tiny.safetensors", sha256="ab" * 32
            ),
        )
    )

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched in offline mode")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    target = tmp_path / "home" / "presets" / "tiny-remote" / "model" / "model.safetensors"
    with pytest.raises(CheckpointError, match="GENLOOM_OFFLINE=1") as info:
        from_pretrained("tiny-remote")
    assert str(target) in str(info.value) and "https://example.invalid/w/tiny.safetensors" in str(info.value)


def test_url_source_with_archive_of_a_preset_folder(tmp_path):
    model = _trained_tinylm(7)
    preset = Preset(
        name="tiny-tar", family=FAMILY, modality="text", description="d", source=WeightSource("random")
    )
    folder = save_preset_folder(
        tmp_path / "tiny-tar", preset=preset, model=model, model_config={"family": FAMILY}
    )
    archive = tmp_path / "tiny-tar.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="tiny-tar")
    register_preset(
        Preset(
            name="tiny-tar",
            family=FAMILY,
            modality="text",
            description="d",
            source=WeightSource(kind="url", url=archive.as_uri(), sha256=_sha(archive)),
        )
    )
    assert torch.equal(from_pretrained("tiny-tar").embed.weight, model.embed.weight)
    assert (tmp_path / "home" / "presets" / "tiny-tar" / "preset.json").is_file()


def _write_module(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


CONVERTER_SOURCE = f"""
    from genloom.core.io import safe_torch_load, atomic_save_safetensors, atomic_write_json

    def convert(checkpoint, out_dir, *, preset):
        official = safe_torch_load(checkpoint)
        state = {{name.removeprefix("net."): t for name, t in official["state_dict"].items()}}
        (out_dir / "model").mkdir()
        atomic_save_safetensors(state, out_dir / "model" / "model.safetensors")
        atomic_write_json(out_dir / "model" / "config.json", {{"family": "{FAMILY}", **preset.config}})
"""


def test_converter_source_turns_an_official_checkpoint_into_a_preset(tmp_path, monkeypatch):
    import argparse

    _write_module(tmp_path / "mods", "zoo_test_converter", CONVERTER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    model = _trained_tinylm(4, hidden=5)
    official = tmp_path / "official.ckpt"
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in model.state_dict().items()},
            "args": argparse.Namespace(lr=1),
        },
        official,
    )
    register_preset(
        Preset(
            name="tiny-conv",
            family=FAMILY,
            modality="text",
            description="d",
            config={"hidden": 5},
            source=WeightSource(kind="converter", path=str(official), converter="zoo_test_converter:convert"),
        )
    )
    assert torch.equal(from_pretrained("tiny-conv")(_tokens()), model.eval()(_tokens()))
    assert (tmp_path / "home" / "presets" / "tiny-conv" / "preset.json").is_file()


def test_converter_refuses_a_code_running_checkpoint(tmp_path, monkeypatch):
    _write_module(tmp_path / "mods", "zoo_test_converter", CONVERTER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, evil)
    register_preset(
        Preset(
            name="tiny-evil",
            family=FAMILY,
            modality="text",
            description="d",
            source=WeightSource(
                kind="converter", filename="official.ckpt", converter="zoo_test_converter:convert"
            ),
        )
    )
    missing = tmp_path / "home" / "checkpoints" / "official.ckpt"
    with pytest.raises(CheckpointError, match=f"place it at {missing}"):
        from_pretrained("tiny-evil")
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        from_pretrained("tiny-evil", checkpoint=evil)
    assert not marker.exists()
    assert not (tmp_path / "home" / "presets" / "tiny-evil").exists()


def test_package_source_and_lazy_family_import_through_entry_points(tmp_path, monkeypatch):
    """A preset shipped in a package whose family is registered only when its zoo module is imported."""
    pkg = tmp_path / "mods" / "fakegenloompkg"
    _write_module(pkg, "__init__", "")
    _write_module(
        pkg,
        "zoo",
        """
        from torch import nn
        from genloom.core.zoo import Preset, WeightSource, register_family

        def build(config):
            return nn.Linear(config["n_in"], config["n_out"])

        register_family("fake.linear", build)
        PRESETS = [Preset(name="fake-linear", family="fake.linear", modality="fake", description="shipped",
                          source=WeightSource(kind="package", package="fakegenloompkg", path="presets/fake-linear"))]
        """,
    )
    torch.manual_seed(0)
    linear = nn.Linear(3, 2)
    save_pretrained(
        linear,
        pkg / "presets" / "fake-linear" / "model",
        config={"family": "fake.linear", "n_in": 3, "n_out": 2},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    entry_points = [
        importlib.metadata.EntryPoint(
            name="broken", value="no_such_genloom_module:PRESETS", group="genloom.zoo"
        ),
        importlib.metadata.EntryPoint(name="fake", value="fakegenloompkg.zoo:PRESETS", group="genloom.zoo"),
    ]
    monkeypatch.setattr(registry, "_zoo_entry_points", lambda: entry_points)
    registry.refresh()
    try:
        # the family is unknown until the entry points are imported, which from_pretrained does lazily
        assert "fake.linear" not in registry._FAMILIES
        with pytest.warns(RuntimeWarning, match="skipping the presets of 'broken'"):
            loaded = from_pretrained(pkg / "presets" / "fake-linear")
        assert torch.equal(loaded.weight, linear.weight)
        assert "fake.linear" in list_families()
        assert [p.name for p in list_presets(modality="fake")] == ["fake-linear"]
        assert resolve_preset_dir(get_preset("fake-linear")) == pkg / "presets" / "fake-linear"
        assert torch.equal(from_pretrained("fake-linear").bias, linear.bias)
    finally:
        unregister_family("fake.linear")
        registry.refresh()
