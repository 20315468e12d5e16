"""`genloom ts` commands: forecast a CSV, train a baseline on the long-term protocol, evaluate a model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from genloom.core.errors import GenloomError
from genloom.timeseries.errors import SeriesInputError

app = typer.Typer(help="genloom-timeseries: forecasting from CSV files.", no_args_is_help=True)


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def forecast(
    data: Path = typer.Argument(
        ..., help="CSV: wide (a date column + value columns) or long (unique_id, ds, y)"
    ),
    horizon: int = typer.Option(..., "--horizon", "-H", help="steps to forecast"),
    model: str | None = typer.Option(
        None, help="preset name, model folder, or 'seasonal-naive' (default: shipped preset)"
    ),
    quantiles: str = typer.Option("0.1,0.5,0.9", help="comma-separated quantile levels"),
    output: Path = typer.Option(Path("forecast.csv"), "-o", "--output", help="forecast CSV to write"),
    plot: Path | None = typer.Option(None, help="PNG plot to write"),
    target: list[str] | None = typer.Option(None, help="value column(s) to forecast (default: all)"),
    fill: str = typer.Option("refuse", help="NaN policy: refuse, ffill, interpolate, zero"),
    samples: int = typer.Option(50, help="sample paths per series"),
    season: int = typer.Option(1, help="season length for --model seasonal-naive"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
) -> None:
    """Forecast every series of a CSV with quantiles; write a CSV (and a plot)."""
    from genloom.timeseries.data.frames import read_wide_csv
    from genloom.timeseries.forecast import (
        forecast_table,
        load_forecaster_by_name,
        parse_quantiles,
        plot_forecast,
        write_csv_atomic,
    )

    try:
        table = read_wide_csv(data, targets=target or None, nan_policy=fill)
        for note in table.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        forecaster = load_forecaster_by_name(model, device=device, season=season)
        frame = forecast_table(
            table, horizon, forecaster, levels=parse_quantiles(quantiles), num_samples=samples, seed=seed
        )
    except GenloomError as err:  # SeriesInputError, CheckpointError, core ConfigError, ...
        _fail(err)
    write_csv_atomic(frame, output)
    typer.echo(f"wrote {output} ({len(table.columns)} series x {horizon} steps)")
    if plot is not None:
        plot_forecast(table, frame, plot)
        typer.echo(f"wrote {plot}")


@app.command()
def train(
    model: str = typer.Option(
        ..., help="dlinear, patchtst, itransformer, informer, autoformer, gpht, tokenized-ar or diffusion"
    ),
    data: Path = typer.Option(..., help="CSV in the ETT layout (date column first)"),
    horizon: int = typer.Option(96),
    out: Path = typer.Option(..., help="folder to write (official layout for baselines and GPHT)"),
    target: str = typer.Option("OT"),
    epochs: int | None = typer.Option(
        None, help="override the recipe's epochs (x1000 steps for sampling models)"
    ),
    device: str = typer.Option("cpu"),
) -> None:
    """Train a model on the long-term protocol (TSLib recipe for baselines); report test MSE/MAE."""
    from genloom.timeseries.runs import train_to_folder

    try:
        result = train_to_folder(
            model, data, out, horizon=horizon, target=target, epochs=epochs, device=device, log=typer.echo
        )
    except GenloomError as err:  # SeriesInputError, CheckpointError, core ConfigError, ...
        _fail(err)
    typer.echo(f"test MSE {result['mse']:.4f} MAE {result['mae']:.4f}; wrote {out}")


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="CSV in the ETT layout"),
    protocol: str = typer.Option("long-term", help="only 'long-term' (the TSLib protocol)"),
    model: str | None = typer.Option(
        None, help="a folder from `genloom ts train`, a preset, or 'seasonal-naive'"
    ),
    horizon: int = typer.Option(96),
    stride: int = typer.Option(24, help="window stride for sampled (generative) models"),
    samples: int = typer.Option(20),
    device: str = typer.Option("cpu"),
) -> None:
    """Test-split MSE/MAE on the long-term protocol (scaled values); CRPS too for generative models."""
    from genloom.timeseries.evaluation import evaluate_long_term

    if protocol != "long-term":
        _fail(SeriesInputError(f"unknown protocol {protocol!r}: only 'long-term' is available"))
    try:
        metrics = evaluate_long_term(
            data, model=model, horizon=horizon, stride=stride, num_samples=samples, device=device
        )
    except GenloomError as err:  # SeriesInputError, CheckpointError, core ConfigError, ...
        _fail(err)
    typer.echo(json.dumps(metrics, indent=2))
