"""`genloom zoo ...`: list and describe presets, fetch their weights, check folders, inspect checkpoints."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from genloom.core.errors import GenloomError, InputError

zoo_app = typer.Typer(
    help="Presets of the installed genloom packages and their weights.", no_args_is_help=True
)

_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def _console() -> Console:
    return Console(soft_wrap=True)


def preset_params(preset) -> int | None:
    """The preset's declared parameter count, else the count in its local model weights' header."""
    from genloom.core.io import safetensors_shapes
    from genloom.core.zoo.sources import local_preset_dir

    if preset.params is not None:
        return preset.params
    folder = local_preset_dir(preset)
    if folder is None:
        return None
    for weights in (folder / "model" / "model.safetensors", folder / "model.safetensors"):
        if weights.is_file():
            try:
                return sum(math.prod(shape) for shape, _ in safetensors_shapes(weights).values())
            except GenloomError:
                return None
    return None


def _format_params(params: int | None) -> str:
    if params is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= size:
            return f"{params / size:.1f}{unit}"
    return str(params)


@zoo_app.command("list")
def list_command(
    modality: Annotated[
        str | None, typer.Option(help="Only presets of this modality (text, image, ...).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every preset of the installed packages: name, modality, family, params, where its weights are."""
    from genloom.core.zoo import describe_source, list_presets

    presets = list_presets(modality)
    if as_json:
        rows = [
            {
                "name": p.name,
                "modality": p.modality,
                "family": p.family,
                "params": preset_params(p),
                "weights": describe_source(p),
                "description": p.description,
            }
            for p in presets
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not presets:
        typer.echo("no presets installed" + (f" for modality {modality!r}" if modality else ""))
        return
    table = Table(title="genloom presets")
    table.add_column("name", no_wrap=True)
    table.add_column("modality", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("weights", overflow="fold")
    for p in presets:
        table.add_row(p.name, p.modality, p.family, _format_params(preset_params(p)), describe_source(p))
    _console().print(table)


@zoo_app.command("info")
def info_command(
    name: Annotated[str, typer.Argument(help="Preset name, as shown by `genloom zoo list`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show everything about one preset: description, config, weight source and card."""
    from genloom.core.zoo import describe_source, get_preset
    from genloom.core.zoo.registry import preset_package

    preset = get_preset(name)
    info: dict[str, Any] = asdict(preset)
    info["package"] = preset_package(preset.name)
    info["weights"] = describe_source(preset)
    info["params"] = preset_params(preset)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    for key in ("name", "modality", "family", "description", "package", "params", "weights"):
        typer.echo(f"{key:12s} {info[key] if info[key] is not None else '-'}")
    source = {k: v for k, v in info["source"].items() if v is not None}
    typer.echo(f"{'source':12s} {json.dumps(source)}")
    if preset.loader:
        typer.echo(f"{'loader':12s} {preset.loader}")
    typer.echo(f"{'config':12s} {json.dumps(preset.config, sort_keys=True)}")
    if preset.card:
        typer.echo(f"{'card':12s} {json.dumps(preset.card, sort_keys=True)}")


@zoo_app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="Preset name.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Local official checkpoint to convert (converter presets).")
    ] = None,
) -> None:
    """Make a preset's weights available locally (download and check, or convert) and print the folder."""
    from genloom.core.zoo import get_preset, resolve_preset_dir

    preset = get_preset(name)
    folder = resolve_preset_dir(preset, checkpoint=checkpoint)
    typer.echo(f"{preset.name}: random init, nothing to fetch" if folder is None else str(folder))


@zoo_app.command("check")
def check_command(
    target: Annotated[
        str, typer.Argument(help="A save_pretrained folder, a preset folder, or a preset name.")
    ],
    component: Annotated[str, typer.Option(help="Part of a preset folder: model or tokenizer.")] = "model",
) -> None:
    """Build a model from its config.json and load its weights, checking every shape; print a summary."""
    from genloom.core.zoo import count_parameters, from_pretrained

    model = from_pretrained(target, component=component)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}) or ["-"]
    typer.echo(
        f"ok: {type(model).__name__} with {count_parameters(model):,} parameters ({', '.join(dtypes)}) from {target}"
    )


def _flatten(obj: Any, prefix: str, out: dict[str, dict[str, Any]], depth: int = 0) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        out[prefix or "<root>"] = {"shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
    elif isinstance(obj, dict) and depth < 8:
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out, depth + 1)
    elif isinstance(obj, list | tuple) and depth < 8 and any(isinstance(v, torch.Tensor | dict) for v in obj):
        for index, value in enumerate(obj):
            _flatten(value, f"{prefix}.{index}" if prefix else str(index), out, depth + 1)
    else:
        out[prefix or "<root>"] = {"value": type(obj).__name__}


def inspect_checkpoint(path: Path) -> dict[str, dict[str, Any]]:
    """Name -> shape/dtype (or value type) of every entry of a safetensors or (safely loaded) torch file."""
    from genloom.core.io import safe_torch_load, safetensors_shapes

    if not path.is_file():
        raise InputError(f"{path} is not a file")
    if path.suffix == ".safetensors":
        return {
            name: {"shape": list(shape), "dtype": dtype}
            for name, (shape, dtype) in safetensors_shapes(path).items()
        }
    if path.suffix not in _TORCH_SUFFIXES:
        raise InputError(
            f"{path}: expected a .safetensors or torch checkpoint ({', '.join(_TORCH_SUFFIXES)})"
        )
    entries: dict[str, dict[str, Any]] = {}
    _flatten(safe_torch_load(path), "", entries)
    return entries


@zoo_app.command("inspect")
def inspect_command(
    file: Annotated[
        Path, typer.Argument(help="A .safetensors file or a torch checkpoint (.pt/.pth/.ckpt/.bin).")
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the listing as JSON to this file.")] = None,
) -> None:
    """List the tensors of a checkpoint without running any code from it (pickles are loaded safely)."""
    from genloom.core.io import atomic_write_json, ensure_parent_dir

    if out is not None:
        ensure_parent_dir(out)  # fail before the (possibly long) load
    entries = inspect_checkpoint(file)
    table = Table(title=str(file))
    table.add_column("name", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    for name, entry in entries.items():
        table.add_row(name, str(entry.get("shape", "")), entry.get("dtype", entry.get("value", "")))
    _console().print(table)
    if out is not None:
        atomic_write_json(out, entries)
