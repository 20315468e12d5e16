"""Saving and loading text models with their tokenizer, through the core zoo's folder format.

A text model folder (or the `model/` part of a preset folder) holds `config.json` with
`{"family": "text.translator" | "text.mdlm" | "text.sedd" | "text.diffuseq" | "text.lm", "model": {...}}` and `model.safetensors`; the tokenizer
sits beside it in `tokenizer/`: a core `BPETokenizer` (`tokenizer.json`) or a `SymbolTokenizer`
(`symbols.json`, for the synthetic tasks). Weights are stored in float16 for shipping and loaded in
float32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genloom.core.io import atomic_write_text
from genloom.core.tokenizers import BPETokenizer, TextTokenizer
from genloom.core.zoo import from_pretrained, get_preset, resolve_preset_dir, save_pretrained
from genloom.text.errors import TextInputError
from genloom.text.specials import NUM_SPECIAL, SPECIAL_TOKENS

SYMBOLS_FILE = "symbols.json"


class SymbolTokenizer(TextTokenizer):
    """Whitespace-separated symbols of a synthetic task ("c a b") <-> ids (specials first)."""

    pad_id, bos_id, eos_id, mask_id = 0, 1, 2, 3

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)
        self._index = {s: i + NUM_SPECIAL for i, s in enumerate(self.symbols)}

    @classmethod
    def letters(cls, count: int) -> SymbolTokenizer:
        """Symbols a, b, ..., z, then a1, b1, ... for larger tasks."""
        names = [chr(ord("a") + i % 26) + (str(i // 26) if i >= 26 else "") for i in range(count)]
        return cls(names)

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self.symbols)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(range(NUM_SPECIAL))

    def _encode(self, text: str) -> list[int]:
        unknown = sorted({s for s in text.split() if s not in self._index})
        if unknown:
            raise TextInputError(
                f"unknown symbol(s) {unknown} for this model; its vocabulary is {' '.join(self.symbols)}"
            )
        return [self._index[s] for s in text.split()]

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        words = []
        for i in ids:
            if i >= NUM_SPECIAL:
                words.append(self.symbols[i - NUM_SPECIAL])
            elif not skip_special_tokens:
                words.append(SPECIAL_TOKENS[i])
        return " ".join(words)

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / SYMBOLS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"symbols": self.symbols}, indent=2))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> SymbolTokenizer:
        return cls(json.loads((Path(folder) / SYMBOLS_FILE).read_text())["symbols"])


def build_text_model(
    arguments: dict[str, Any],
    *,
    mdlm: bool = False,
    lm: bool = False,
    sedd: bool = False,
    diffuseq: bool = False,
) -> nn.Module:
    """Family builder for the core zoo: {"model": config dict} -> module."""
    from genloom.text.ar import ARTranslator
    from genloom.text.diffuseq import DiffuSeq, DiffuSeqConfig
    from genloom.text.lm import CausalLM, CausalLMConfig
    from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
    from genloom.text.nat import CMLM, CTCNAT, DATransformer, VanillaNAT
    from genloom.text.sedd import ScoreEntropyLM, SEDDConfig
    from genloom.text.seq2seq import Seq2SeqConfig

    if diffuseq:
        return DiffuSeq(DiffuSeqConfig.from_dict(arguments["model"]))
    if sedd:
        return ScoreEntropyLM(SEDDConfig.from_dict(arguments["model"]))
    if mdlm:
        return MaskedDiffusionLM(MDLMConfig.from_dict(arguments["model"]))
    if lm:
        return CausalLM(CausalLMConfig.from_dict(arguments["model"]))
    config = Seq2SeqConfig.from_dict(arguments["model"])
    classes = {"ar": ARTranslator, "nat": VanillaNAT, "cmlm": CMLM, "ctc": CTCNAT, "dat": DATransformer}
    return classes[config.family](config)


def save_text_model(
    model: nn.Module, tokenizer: TextTokenizer, folder: str | os.PathLike, *, half: bool = True
) -> Path:
    """Write `folder/model/` (config + safetensors, fp16 when `half`) and `folder/tokenizer/`."""
    folder = Path(folder)
    family = {
        "MaskedDiffusionLM": "text.mdlm",
        "CausalLM": "text.lm",
        "ScoreEntropyLM": "text.sedd",
        "DiffuSeq": "text.diffuseq",
    }.get(type(model).__name__, "text.translator")
    to_save = model
    if half:
        to_save = type(model)(model.config)
        to_save.load_state_dict(model.state_dict())
        to_save = to_save.half()
    save_pretrained(to_save, folder / "model", config={"family": family, "model": model.config.to_dict()})
    if isinstance(tokenizer, (BPETokenizer, SymbolTokenizer)):
        tokenizer.save(folder / "tokenizer")
    else:
        raise TextInputError(
            f"cannot save a {type(tokenizer).__name__}; use a BPETokenizer or SymbolTokenizer"
        )
    return folder


def load_tokenizer(folder: str | os.PathLike) -> TextTokenizer:
    """The tokenizer stored in `folder/tokenizer/` (BPE or symbols)."""
    sub = Path(folder) / "tokenizer"
    if (sub / SYMBOLS_FILE).is_file():
        return SymbolTokenizer.load(sub)
    if (sub / "tokenizer.json").is_file():
        return BPETokenizer.load(sub)
    raise TextInputError(f"{folder} has no tokenizer/ folder with symbols.json or tokenizer.json")


def resolve_model_folder(name_or_path: str | os.PathLike) -> Path:
    """A folder path as given, or the local folder of a registered preset name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if os.sep in str(name_or_path):
        raise TextInputError(f"model folder {path} does not exist")
    folder = resolve_preset_dir(get_preset(str(name_or_path)))
    if folder is None:
        raise TextInputError(f"preset {name_or_path!r} has no weights to load")
    return Path(folder)


def load_text_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, TextTokenizer, Path]:
    """(model in eval mode, its tokenizer, its folder) from a preset name or folder. `dtype` bfloat16 halves
    the weights and runs the network in bf16 (SDPA's flash kernels on a GPU); the translators decode its
    outputs in float32."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TextInputError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    folder = resolve_model_folder(name_or_path)
    model = from_pretrained(folder, device=device, dtype=dtype)
    return model, load_tokenizer(folder), folder
