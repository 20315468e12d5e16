"""The long-term forecasting protocol of the Time-Series-Library, for any CSV in the ETT layout.

Mirrors `Dataset_ETT_hour`, `Dataset_ETT_minute` and `Dataset_Custom` of thuml/Time-Series-Library
(`data_provider/data_loader.py`): the same split borders (ETT: 12/4/4 months; custom: 70/10/20 %),
each later split starting `seq_len` rows early, a StandardScaler fitted on the training rows only, the
same window indexing (seq_x = [i, i+seq_len), seq_y = [i+seq_len-label_len, i+seq_len+pred_len)) and
the same calendar features. `../shared/parity/tslib_protocol` pins it and the tests reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from genloom.timeseries.data.scaler import StandardScaler
from genloom.timeseries.data.timefeatures import time_features
from genloom.timeseries.errors import SeriesInputError

Layout = Literal["ett_hour", "ett_minute", "custom"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def infer_layout(path: str | Path) -> Layout:
    """The TSLib data class a file name selects: ETTh* -> hourly ETT, ETTm* -> 15-minute ETT, else custom."""
    name = Path(path).name
    if name.startswith("ETTh"):
        return "ett_hour"
    if name.startswith("ETTm"):
        return "ett_minute"
    return "custom"


def split_borders(layout: Layout, n_rows: int, seq_len: int) -> tuple[list[int], list[int]]:
    """Row ranges [border1, border2) of train / val / test as the TSLib data classes compute them."""
    if layout in ("ett_hour", "ett_minute"):
        per_hour = 1 if layout == "ett_hour" else 4
        month = 30 * 24 * per_hour
        border1s = [0, 12 * month - seq_len, 12 * month + 4 * month - seq_len]
        border2s = [12 * month, 12 * month + 4 * month, 12 * month + 8 * month]
    elif layout == "custom":
        num_train = int(n_rows * 0.7)
        num_test = int(n_rows * 0.2)
        num_val = n_rows - num_train - num_test
        border1s = [0, num_train - seq_len, n_rows - num_test - seq_len]
        border2s = [num_train, num_train + num_val, n_rows]
    else:
        raise SeriesInputError(f"unknown layout {layout!r}: expected 'ett_hour', 'ett_minute' or 'custom'")
    if border2s[2] > n_rows:
        raise SeriesInputError(
            f"the {layout} protocol needs at least {border2s[2]} rows (train/val/test borders {border2s}), "
            f"the file has {n_rows}"
        )
    if border1s[1] < 0 or border1s[2] < 0:
        raise SeriesInputError(f"{n_rows} rows are too few for seq_len {seq_len} under the {layout} protocol")
    return border1s, border2s


def read_protocol_csv(path: str | Path, *, date_col: str = "date") -> pd.DataFrame:
    """Read a CSV in the ETT layout (a date column, then numeric columns) and check it, naming bad cells."""
    path = Path(path)
    if not path.is_file():
        raise SeriesInputError(f"data file not found: {path}")
    frame = pd.read_csv(path)
    if date_col not in frame.columns:
        raise SeriesInputError(
            f"{path.name}: expected a {date_col!r} column, got columns {list(frame.columns)}"
        )
    for col in frame.columns:
        if col == date_col:
            continue
        numeric = pd.to_numeric(frame[col], errors="coerce")
        bad = numeric.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SeriesInputError(
                f"{path.name}: column {col!r} is not numeric: row {row} holds {frame[col].iloc[row]!r}"
            )
        if numeric.isna().any():
            row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
            raise SeriesInputError(f"{path.name}: column {col!r} has a missing value (NaN) at row {row}")
        frame[col] = numeric.astype(np.float64)
    return frame


@dataclass
class LongTermForecastProtocol:
    """Split, scale and window one CSV exactly as the TSLib long-term forecasting experiments do.

    features: "M" (all columns in and out), "S" (the target only), "MS" (all in; the experiment keeps the
    last column, the target, for the loss and metrics). `layout=None` picks it from the file name.
    """

    path: str | Path
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 96
    features: Literal["M", "S", "MS"] = "M"
    target: str = "OT"
    scale: bool = True
    timeenc: int = 1
    freq: str = "h"
    layout: Layout | None = None
    scaler: StandardScaler = field(init=False)
    columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("seq_len", "pred_len"):
            if getattr(self, name) <= 0:
                raise SeriesInputError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.label_len <= self.seq_len:
            raise SeriesInputError(f"label_len must be in [0, seq_len={self.seq_len}], got {self.label_len}")
        if self.features not in ("M", "S", "MS"):
            raise SeriesInputError(f"features must be 'M', 'S' or 'MS', got {self.features!r}")
        self.layout = self.layout or infer_layout(self.path)
        raw = read_protocol_csv(self.path)
        if self.target not in raw.columns:
            raise SeriesInputError(
                f"target column {self.target!r} not found in {Path(self.path).name}; columns: {list(raw.columns)}"
            )
        if self.layout == "custom":  # Dataset_Custom moves the target to the last column
            others = [c for c in raw.columns if c not in ("date", self.target)]
            raw = raw[["date", *others, self.target]]
        self.border1s, self.border2s = split_borders(self.layout, len(raw), self.seq_len)
        frame = raw[[self.target]] if self.features == "S" else raw[raw.columns[1:]]
        self.columns = list(frame.columns)
        values = frame.to_numpy(dtype=np.float64)
        self.scaler = StandardScaler()
        if self.scale:
            self.scaler.fit(values[self.border1s[0] : self.border2s[0]])
            values = self.scaler.transform(values)
        self.data = values
        self.dates = pd.to_datetime(raw["date"])
        self.marks = time_features(self.dates, self.freq, timeenc=self.timeenc)

    def split_range(self, split: Split) -> tuple[int, int]:
        if split not in SPLITS:
            raise SeriesInputError(f"split must be one of {SPLITS}, got {split!r}")
        i = SPLITS.index(split)
        return self.border1s[i], self.border2s[i]

    def dataset(self, split: Split) -> ForecastWindows:
        """The windows of one split (a torch Dataset of (seq_x, seq_y, seq_x_mark, seq_y_mark))."""
        start, stop = self.split_range(split)
        return ForecastWindows(
            self.data[start:stop],
            self.marks[start:stop],
            seq_len=self.seq_len,
            label_len=self.label_len,
            pred_len=self.pred_len,
        )

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return self.scaler.inverse_transform(values) if self.scale else np.asarray(values)


class ForecastWindows(Dataset):
    """Sliding windows over one split: sample i = (seq_x, seq_y, seq_x_mark, seq_y_mark), float64 numpy."""

    def __init__(self, data: np.ndarray, marks: np.ndarray, *, seq_len: int, label_len: int, pred_len: int):
        self.data, self.marks = data, marks
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        if len(self) <= 0:
            raise SeriesInputError(
                f"a split of {len(data)} rows has no window of seq_len {seq_len} + pred_len {pred_len}"
            )

    def __len__(self) -> int:
        return len(self.data) - self.seq_len - self.pred_len + 1

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        index = index % len(self)
        s_end = index + self.seq_len
        r_begin = s_end - self.label_len
        r_end = r_begin + self.label_len + self.pred_len
        return (
            self.data[index:s_end],
            self.data[r_begin:r_end],
            self.marks[index:s_end],
            self.marks[r_begin:r_end],
        )


def collate_float32(batch: list[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, ...]:
    """Stack windows into float32 tensors, as the TSLib experiments cast them."""
    return tuple(torch.from_numpy(np.stack(parts)).float() for parts in zip(*batch))
