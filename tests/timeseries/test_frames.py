"""Wide and long CSV modules: round trips and a clear error for each kind of bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genloom.timeseries.data.frames import (
    long_frame_from_table,
    read_wide_csv,
    table_from_wide_frame,
    tables_from_long_frame,
)
from genloom.timeseries.errors import SeriesInputError


def _wide(rows=48):
    dates = pd.date_range("2021-03-01", periods=rows, freq="h")
    return pd.DataFrame(
        {"date": dates, "load": np.arange(rows, dtype=float), "temp": np.sin(np.arange(rows))}
    )


def test_wide_round_trip_through_long_format(tmp_path):
    path = tmp_path / "w.csv"
    _wide().to_csv(path, index=False)
    table = read_wide_csv(path)
    assert table.columns == ["load", "temp"] and table.freq == "h" and table.values.shape == (48, 2)
    long = long_frame_from_table(table)
    long_path = tmp_path / "long.csv"
    long.to_csv(long_path, index=False)
    again = read_wide_csv(long_path)
    assert again.columns == ["load", "temp"]
    np.testing.assert_allclose(again.values, table.values)


def test_long_format_sorts_each_series_and_keeps_ids():
    frame = pd.DataFrame(
        {
            "unique_id": ["a", "a", "a", "b", "b", "b"],
            "ds": ["2020-01-03", "2020-01-01", "2020-01-02"] * 2,
            "y": [3.0, 1.0, 2.0, 30.0, 10.0, 20.0],
        }
    )
    tables = tables_from_long_frame(frame)
    assert list(tables) == ["a", "b"]
    np.testing.assert_allclose(tables["b"].values[:, 0], [10.0, 20.0, 30.0])
    assert tables["a"].freq == "D"


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda f: f.drop(index=[10, 11]), r"2 missing timestamp\(s\) in column 'date' between row 9"),
        (
            lambda f: f.assign(date=f["date"].where(f.index != 5, f["date"][4])),
            r"duplicate timestamp .* at row 5",
        ),
        (
            lambda f: f.assign(date=f["date"].where(f.index != 7, f["date"][7] + pd.Timedelta("20min"))),
            r"irregular frequency in column 'date' at row 7",
        ),
        (
            lambda f: f.assign(load=f["load"].astype(object).where(f.index != 3, "n/a")),
            r"column 'load' is not numeric: row 3",
        ),
        (
            lambda f: f.assign(temp=f["temp"].where(f.index != 12, np.nan)),
            r"column 'temp' has 1 NaN value\(s\), first at row 12",
        ),
    ],
)
def test_bad_wide_input_is_named(mutate, pattern):
    with pytest.raises(SeriesInputError, match=pattern):
        table_from_wide_frame(mutate(_wide()).reset_index(drop=True))


def test_nan_fill_is_done_and_reported():
    frame = _wide().assign(load=lambda f: f["load"].where(~f.index.isin([4, 5]), np.nan))
    table = table_from_wide_frame(frame, nan_policy="interpolate")
    np.testing.assert_allclose(table.values[:, 0], np.arange(48.0))
    assert table.notes == ["filled 2 NaN value(s) in column 'load' (first at row 4) by interpolate"]
    ffilled = table_from_wide_frame(frame, nan_policy="ffill")
    assert ffilled.values[5, 0] == 3.0


def test_unknown_target_and_short_history():
    with pytest.raises(SeriesInputError, match="unknown target column 'OT'"):
        table_from_wide_frame(_wide(), targets=["OT"])
    table = table_from_wide_frame(_wide(20))
    with pytest.raises(SeriesInputError, match="needs at least 96 time steps, the series has 20"):
        table.require_history(96)


def test_long_format_errors_name_series_and_rows():
    frame = pd.DataFrame(
        {"unique_id": ["a"] * 4, "ds": pd.date_range("2020", periods=4, freq="D"), "y": [1, 2, 3, 4]}
    )
    frame = pd.concat([frame, frame.iloc[[2]]], ignore_index=True)
    with pytest.raises(SeriesInputError, match=r"series 'a'.*duplicate timestamp"):
        tables_from_long_frame(frame)
    with pytest.raises(SeriesInputError, match="missing 'y'"):
        tables_from_long_frame(frame.rename(columns={"y": "value"}))
