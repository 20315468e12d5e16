"""The configuration the Time-Series-Library baselines read (one flat namespace, as its `args`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genloom.core.errors import check_field_names
from genloom.timeseries.errors import CheckpointError


@dataclass
class TSLibConfig:
    """Fields of the TSLib `configs` namespace that DLinear, PatchTST, iTransformer, Informer and
    Autoformer read. Names are the official ones so an official config.json loads as is."""

    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 96
    enc_in: int = 7
    dec_in: int = 7
    c_out: int = 7
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    d_ff: int = 2048
    moving_avg: int = 25
    factor: int = 1
    distil: bool = True
    dropout: float = 0.1
    embed: str = "timeF"  # timeF (Linear of scaled calendar features), fixed (sinusoid tables), learned
    freq: str = "h"
    activation: str = "gelu"
    individual: bool = False  # DLinear: one Linear pair per channel
    patch_len: int = 16  # PatchTST (a constructor keyword of the official class)
    stride: int = 8
    task_name: str = "long_term_forecast"

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> TSLibConfig:
        """Build from an official config dict. Provenance keys (leading `_`) and fields no baseline reads
        are ignored. `patch_len`, `stride` (PatchTST) and `individual` (DLinear) are constructor keywords
        of the official classes, not read from the config namespace: they come from `_constructor_kwargs`
        when present and otherwise keep the official defaults (16, 8, False), as in a TSLib run."""
        known = check_field_names(cls, overrides, error=CheckpointError, what="config")
        kwargs = {k: v for k, v in values.items() if k in known and k not in CONSTRUCTOR_KWARGS}
        kwargs.update({k: v for k, v in values.get("_constructor_kwargs", {}).items() if k in known})
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Config fields plus `_constructor_kwargs`, the layout `from_dict` (and an official run) reads."""
        fields = dataclasses.asdict(self)
        fields["_constructor_kwargs"] = {k: fields[k] for k in CONSTRUCTOR_KWARGS}
        return fields


CONSTRUCTOR_KWARGS = ("patch_len", "stride", "individual")
