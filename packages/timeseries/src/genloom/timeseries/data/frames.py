"""User data as series: wide CSVs (a time column + one column per series) and the long format
(unique_id, ds, y) of Nixtla and GluonTS, checked before any model sees them.

Every problem is reported with the column and the row: missing or duplicate timestamps, an irregular
frequency, NaN values (refused, or filled when asked, and the fill is reported), non-numeric cells, an
unknown target column, a history shorter than the model's lookback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from genloom.timeseries.errors import SeriesInputError

NaNPolicy = Literal["refuse", "ffill", "interpolate", "zero"]
NAN_POLICIES: tuple[str, ...] = ("refuse", "ffill", "interpolate", "zero")
_TIME_COLUMN_NAMES = ("date", "ds", "timestamp", "time", "datetime")


@dataclass
class SeriesTable:
    """Regular, gap-free series on one time index: values [T, C] float64, one column per series."""

    index: pd.DatetimeIndex
    values: np.ndarray
    columns: list[str]
    freq: str | None
    notes: list[str] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise SeriesInputError(f"unknown target column {name!r}; available columns: {self.columns}")
        return self.values[:, self.columns.index(name)]

    def require_history(self, lookback: int) -> None:
        """Refuse a history shorter than a model's lookback window."""
        if len(self.index) < lookback:
            raise SeriesInputError(
                f"history too short: the model needs at least {lookback} time steps, the series has {len(self.index)}"
            )


def _parse_times(values: pd.Series, column: str, label: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(values, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SeriesInputError(
            f"{label}: time column {column!r} has an unreadable or missing timestamp at row {row}: "
            f"{values.iloc[row]!r}"
        )
    return pd.DatetimeIndex(parsed)


def _infer_freq(index: pd.DatetimeIndex) -> str | None:
    """The pandas frequency alias of a regular index (calendar ones such as month starts included), or None."""
    if len(index) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(index)
    return None if freq is None else getattr(freq, "freqstr", freq)


def check_time_index(index: pd.DatetimeIndex, *, column: str = "date", label: str = "series") -> str | None:
    """Check that timestamps are sorted, unique and regular; return the pandas frequency alias.

    A step that is a multiple of the usual step is a run of missing timestamps; any other step is an
    irregular frequency. Both name the row where it happens.
    """
    if len(index) < 2:
        return None
    diffs = np.diff(index.asi8)
    dup = np.flatnonzero(diffs == 0)
    if dup.size:
        row = int(dup[0]) + 1
        raise SeriesInputError(f"{label}: duplicate timestamp {index[row]} in column {column!r} at row {row}")
    back = np.flatnonzero(diffs < 0)
    if back.size:
        row = int(back[0]) + 1
        raise SeriesInputError(
            f"{label}: timestamps in column {column!r} are not sorted: row {row} ({index[row]}) comes before "
            f"row {row - 1} ({index[row - 1]})"
        )
    freq = _infer_freq(index)
    if freq is not None:
        return freq
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    odd = np.flatnonzero(diffs != step)
    row = int(odd[0]) + 1
    if diffs[odd[0]] % step == 0:
        missing = int(diffs[odd[0]] // step) - 1
        raise SeriesInputError(
            f"{label}: {missing} missing timestamp(s) in column {column!r} between row {row - 1} "
            f"({index[row - 1]}) and row {row} ({index[row]}); the usual step is {pd.Timedelta(step)}"
        )
    raise SeriesInputError(
        f"{label}: irregular frequency in column {column!r} at row {row} ({index[row]}): step "
        f"{pd.Timedelta(int(diffs[odd[0]]))}, the usual step is {pd.Timedelta(step)}"
    )


def _numeric_column(values: pd.Series, column: str, label: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = (numeric.isna() & values.notna()).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SeriesInputError(
            f"{label}: column {column!r} is not numeric: row {row} holds {values.iloc[row]!r}"
        )
    return numeric.to_numpy(dtype=np.float64)


def fill_missing_values(
    values: np.ndarray, columns: list[str], *, nan_policy: NaNPolicy, label: str
) -> tuple[np.ndarray, list[str]]:
    """Refuse NaN values or fill them; return the filled values and one note per column filled."""
    if nan_policy not in NAN_POLICIES:
        raise SeriesInputError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    notes: list[str] = []
    values = values.copy()
    for j, name in enumerate(columns):
        nan_rows = np.flatnonzero(np.isnan(values[:, j]))
        if nan_rows.size == 0:
            continue
        if nan_policy == "refuse":
            raise SeriesInputError(
                f"{label}: column {name!r} has {nan_rows.size} NaN value(s), first at row {int(nan_rows[0])}; "
                f"pass a fill policy (ffill, interpolate, zero) to fill them"
            )
        if nan_rows.size == len(values):
            raise SeriesInputError(f"{label}: column {name!r} has no values at all (every row is NaN)")
        col = pd.Series(values[:, j])
        if nan_policy == "ffill":
            col = col.ffill().bfill()
        elif nan_policy == "interpolate":
            col = col.interpolate(limit_direction="both")
        else:
            col = col.fillna(0.0)
        values[:, j] = col.to_numpy()
        notes.append(
            f"filled {nan_rows.size} NaN value(s) in column {name!r} (first at row {int(nan_rows[0])}) by {nan_policy}"
        )
    return values, notes


def table_from_wide_frame(
    frame: pd.DataFrame,
    *,
    time_col: str | None = None,
    targets: list[str] | None = None,
    nan_policy: NaNPolicy = "refuse",
    label: str = "data",
) -> SeriesTable:
    """A wide frame (one time column, one numeric column per series) -> a checked SeriesTable."""
    if time_col is None:
        found = [c for c in frame.columns if str(c).lower() in _TIME_COLUMN_NAMES]
        if not found:
            raise SeriesInputError(
                f"{label}: no time column found: expected one of {list(_TIME_COLUMN_NAMES)}, "
                f"got columns {list(frame.columns)}"
            )
        time_col = found[0]
    if time_col not in frame.columns:
        raise SeriesInputError(f"{label}: time column {time_col!r} not found; columns: {list(frame.columns)}")
    value_cols = [c for c in frame.columns if c != time_col]
    if targets is not None:
        for name in targets:
            if name not in value_cols:
                raise SeriesInputError(
                    f"{label}: unknown target column {name!r}; available columns: {value_cols}"
                )
        value_cols = list(targets)
    if not value_cols:
        raise SeriesInputError(f"{label}: no value columns beside the time column {time_col!r}")
    index = _parse_times(frame[time_col].reset_index(drop=True), time_col, label)
    freq = check_time_index(index, column=time_col, label=label)
    values = np.stack(
        [_numeric_column(frame[c].reset_index(drop=True), str(c), label) for c in value_cols], axis=1
    )
    values, notes = fill_missing_values(
        values, [str(c) for c in value_cols], nan_policy=nan_policy, label=label
    )
    return SeriesTable(
        index=index, values=values, columns=[str(c) for c in value_cols], freq=freq, notes=notes
    )


def read_wide_csv(
    path: str | Path,
    *,
    time_col: str | None = None,
    targets: list[str] | None = None,
    nan_policy: NaNPolicy = "refuse",
) -> SeriesTable:
    """Read a wide CSV (e.g. the ETT layout) into a checked SeriesTable; long-format CSVs are detected."""
    path = Path(path)
    if not path.is_file():
        raise SeriesInputError(f"data file not found: {path}")
    frame = pd.read_csv(path)
    if {"unique_id", "ds", "y"} <= set(frame.columns):
        tables = tables_from_long_frame(frame, nan_policy=nan_policy, label=path.name)
        if targets is not None:
            unknown = [t for t in targets if t not in tables]
            if unknown:
                raise SeriesInputError(
                    f"{path.name}: unknown target series {unknown[0]!r}; available unique_id values: {list(tables)}"
                )
            tables = {k: tables[k] for k in targets}
        return merge_tables(tables, label=path.name)
    return table_from_wide_frame(
        frame, time_col=time_col, targets=targets, nan_policy=nan_policy, label=path.name
    )


def tables_from_long_frame(
    frame: pd.DataFrame,
    *,
    id_col: str = "unique_id",
    time_col: str = "ds",
    value_col: str = "y",
    nan_policy: NaNPolicy = "refuse",
    label: str = "data",
) -> dict[str, SeriesTable]:
    """The long format (unique_id, ds, y): one checked single-column SeriesTable per series id."""
    for col in (id_col, time_col, value_col):
        if col not in frame.columns:
            raise SeriesInputError(
                f"{label}: long format needs columns {[id_col, time_col, value_col]}, missing {col!r}; "
                f"got {list(frame.columns)}"
            )
    tables: dict[str, SeriesTable] = {}
    for uid, group in frame.groupby(id_col, sort=False):
        rows = group.index.to_numpy()
        sub = group[[time_col, value_col]].reset_index(drop=True)
        sub_label = f"{label} (series {uid!r})"
        try:
            index = _parse_times(sub[time_col], time_col, sub_label)
            order = np.argsort(index.asi8, kind="stable")
            index = index[order]
            values = _numeric_column(sub[value_col].iloc[order].reset_index(drop=True), value_col, sub_label)
            freq = check_time_index(index, column=time_col, label=sub_label)
        except SeriesInputError as err:  # re-word positions as rows of the whole file
            raise SeriesInputError(f"{err} (series rows are file rows {rows[0]}..{rows[-1]})") from None
        values, notes = fill_missing_values(
            values[:, None], [str(uid)], nan_policy=nan_policy, label=sub_label
        )
        tables[str(uid)] = SeriesTable(index=index, values=values, columns=[str(uid)], freq=freq, notes=notes)
    return tables


def merge_tables(tables: dict[str, SeriesTable], *, label: str = "data") -> SeriesTable:
    """Several single-series tables on the same time index -> one wide SeriesTable."""
    if not tables:
        raise SeriesInputError(f"{label}: no series found")
    first = next(iter(tables.values()))
    for name, table in tables.items():
        if len(table.index) != len(first.index) or not (table.index == first.index).all():
            raise SeriesInputError(
                f"{label}: series {name!r} does not share the time index of series {first.columns[0]!r} "
                f"({len(table.index)} vs {len(first.index)} timestamps); forecast them one at a time"
            )
    values = np.concatenate([t.values for t in tables.values()], axis=1)
    notes = [n for t in tables.values() for n in t.notes]
    return SeriesTable(index=first.index, values=values, columns=list(tables), freq=first.freq, notes=notes)


def long_frame_from_table(table: SeriesTable) -> pd.DataFrame:
    """A SeriesTable back to the long format (unique_id, ds, y)."""
    parts = [
        pd.DataFrame({"unique_id": name, "ds": table.index, "y": table.values[:, j]})
        for j, name in enumerate(table.columns)
    ]
    return pd.concat(parts, ignore_index=True)
