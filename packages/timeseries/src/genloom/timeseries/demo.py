"""Demo of genloom-timeseries: a zero-shot forecast of a bundled series (co2) with the shipped preset,
written as CSV and as a PNG with quantile bands."""

from pathlib import Path

from genloom.core.demo import DemoItem


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Forecast the last year of the statsmodels co2 series from the weeks before it; write CSV + PNG."""
    from genloom.timeseries.data.frames import SeriesTable
    from genloom.timeseries.data.offline import offline_series
    from genloom.timeseries.forecast import (
        forecast_table,
        load_forecaster_by_name,
        plot_forecast,
        write_csv_atomic,
    )

    out_dir = Path(out_dir).resolve()  # items name absolute paths (relative ones are read against out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series = offline_series("co2")
    horizon = 52
    table = SeriesTable(
        index=series.index[:-horizon],
        values=series.values[:-horizon, None],
        columns=["co2"],
        freq=series.freq,
        notes=[series.notes],
    )
    forecaster = load_forecaster_by_name(None, device=device)
    frame = forecast_table(table, horizon, forecaster, levels=[0.05, 0.25, 0.5, 0.75, 0.95], num_samples=100)
    frame["actual"] = series.values[-horizon:]
    csv_path = write_csv_atomic(frame, out_dir / "timeseries_co2_forecast.csv")
    png_path = plot_forecast(
        table,
        frame,
        out_dir / "timeseries_co2_forecast.png",
        history=156,
        actual=series.values[-horizon:, None],
    )
    caption = (
        f"Zero-shot forecast of the last {horizon} weeks of Mauna Loa CO2 (statsmodels) by the shipped "
        "tiny-tokenized-ar preset: median with 5-95% and 25-75% quantile bands, actual values dashed."
    )
    return [
        DemoItem(title="CO2 forecast (plot)", path=png_path, kind="plot", caption=caption),
        DemoItem(
            title="CO2 forecast (CSV)", path=csv_path, kind="csv", caption="quantiles, median, mean, actual"
        ),
    ]
