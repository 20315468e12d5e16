"""Turn a trained translator (a folder written by `save_text_model`, e.g. one member of the Multi30k
benchmark's `text_multi30k_models_*.tar`) into a shippable preset folder.

The result has the layout of the shipped text-sort presets: `preset.json` (name, description, card with the
measured metric), `model/` (config + fp16 safetensors) and `tokenizer/`. Placed under
`genloom/text/presets/<name>`, a `multi30k-*` folder is registered by `genloom.text.zoo` and loads offline
(`genloom text translate --model multi30k-dat`). Folders whose weights pass `max_bytes` are refused: the
repository's tracked tree is capped, so every shipped file stays under 5 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from genloom.core.io import atomic_write_text
from genloom.text.errors import TextInputError
from genloom.text.pretrained import load_text_model, save_text_model
from genloom.text.zoo import MULTI30K_DATA

PRESET_MAX_BYTES = 5_000_000
# the benchmark's table rows of each family start with these names (benchmarks/text_multi30k.py DECODING)
ROW_PREFIX = {"ar": "AR ", "nat": "vanilla NAT", "cmlm": "CMLM", "ctc": "CTC", "dat": "DA-Transformer"}


def benchmark_metric(results: str | os.PathLike, family: str, data: str) -> dict[str, Any]:
    """The card metric of one benchmark model: {decoding row: {bleu, passes, sentences/s}} of the rows of
    `family` trained on `data` ("raw" or "distilled") in a `text_multi30k.json`."""
    if family not in ROW_PREFIX:
        raise TextInputError(f"unknown translator family {family!r}; expected one of {sorted(ROW_PREFIX)}")
    if data not in ("raw", "distilled"):
        raise TextInputError(f"training data must be 'raw' or 'distilled', got {data!r}")
    document = json.loads(Path(results).read_text())
    rows = document["rows"]
    keys = ("bleu", "decoder_passes", "sent_per_s_batch1", "sent_per_s_batch64", "train_steps")
    metric = {
        row["decoding"]: {k: row[k] for k in keys if row.get(k) is not None}
        for row in rows
        if row["decoding"].startswith(ROW_PREFIX[family]) and row["data"] == data
    }
    if not metric:
        raise TextInputError(f"{results} has no {data} rows of family {family!r}")
    return {"test_2016_flickr": metric, "device": document.get("device")}


def _model_folder(source: Path, member: str | None, tmp: Path) -> Path:
    """The model folder `source` names: the folder itself, or `member/` of a folder or of a tar."""
    if source.is_file():
        if not member:
            raise TextInputError(f"{source} is a tar: name the model inside it (e.g. 'dat-distilled')")
        with tarfile.open(source) as tar:
            names = {n.split("/")[0] for n in tar.getnames()}
            if member not in names:
                raise TextInputError(
                    f"{source} holds no model {member!r}; it holds {', '.join(sorted(names))}"
                )
            tar.extractall(tmp, members=[m for m in tar.getmembers() if m.name.split("/")[0] == member],
                           filter="data")  # fmt: skip
        return tmp / member
    folder = source / member if member else source
    if not (folder / "model" / "config.json").is_file():
        raise TextInputError(f"{folder} is not a text model folder (no model/config.json)")
    return folder


def export_translator_preset(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    name: str,
    description: str,
    member: str | None = None,
    data: str = MULTI30K_DATA,
    metric: dict[str, Any] | None = None,
    trained_by: str = "benchmarks/text_multi30k.py",
    max_bytes: int = PRESET_MAX_BYTES,
) -> Path:
    """Write the preset folder `destination` (replaced if present) from a translator folder or tar member.

    The model is re-saved in fp16 (so a float32 folder shrinks too) with its tokenizer; `metric` (e.g. the
    benchmark's BLEU row) goes into the card. Raises when the weights exceed `max_bytes`.
    """
    destination = Path(destination)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _model_folder(Path(source), member, Path(tmp))
        model, tokenizer, _ = load_text_model(folder)
        if not hasattr(model, "translate") or not hasattr(model.config, "max_source_length"):
            raise TextInputError(f"{folder} holds a {type(model).__name__}, not a translator")
        staging = Path(tmp) / "preset"
        save_text_model(model, tokenizer, staging)
        weights = (staging / "model" / "model.safetensors").stat().st_size
        if weights > max_bytes:
            raise TextInputError(
                f"{name}: fp16 weights of {weights / 1e6:.2f} MB exceed the preset limit of {max_bytes / 1e6:.1f} MB"
            )
        card: dict[str, Any] = {"license": "Apache-2.0", "data": data, "trained_by": trained_by}
        if metric:
            card["metric"] = metric
        info = {"card": card, "description": description, "family": "text.translator", "modality": "text",
                "name": name}  # fmt: skip
        atomic_write_text(staging / "preset.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
        if destination.exists():
            shutil.rmtree(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, destination)
    return destination
