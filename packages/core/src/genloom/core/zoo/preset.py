"""A preset: a named architecture + tokenizer + where its weights come from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class WeightSource:
    """Where a preset's weights live.

    kind:
      - "package": a folder shipped inside a Python package (`package` + `path` relative to it);
      - "url": a file downloaded into GENLOOM_HOME and checked against `sha256`;
      - "converter": an official checkpoint (local file or URL) turned into ours by `converter`
        (a "module:function" string);
      - "random": no weights (debug / benchmark presets at official sizes).
    """

    kind: Literal["package", "url", "converter", "random"]
    package: str | None = None
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    converter: str | None = None


@dataclass(frozen=True)
class Preset:
    """A named, loadable model of some family.

    `family` names the model class (for example "image.var"); `config` is the JSON-able architecture
    config; `loader` is a "module:function" string that builds the model (and tokenizer) from a folder.
    """

    name: str
    family: str
    modality: str
    description: str
    source: WeightSource
    config: dict[str, Any] = field(default_factory=dict)
    loader: str | None = None
    params: int | None = None
    card: dict[str, Any] = field(default_factory=dict)
