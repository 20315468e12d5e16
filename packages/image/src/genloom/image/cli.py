"""`genloom image` commands: sample, train, reconstruct, train-tokenizer.

Every command reads local files only. Without `--model`, `sample` uses the first shipped generator preset.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from genloom.image.data import load_dataset
from genloom.image.errors import CheckpointError
from genloom.image.grid import save_grid
from genloom.image.presets import PRESETS_DIR, shipped_generator_names

app = typer.Typer(
    help="genloom-image: class-conditional image generation and image tokenizers.", no_args_is_help=True
)


def shipped_generators() -> list[str]:
    return shipped_generator_names(PRESETS_DIR)


def resolve_model_folder(model: str | None) -> Path:
    """A preset name shipped in the package, or a path to a preset folder."""
    shipped = shipped_generators()
    if model is None:
        if not shipped:
            raise CheckpointError(
                "this install ships no trained generator preset yet; pass --model PATH to a folder written by "
                "`genloom image train` or scripts/train_image_presets.py"
            )
        model = shipped[0]
    if (PRESETS_DIR / model / "model").is_dir():
        return PRESETS_DIR / model
    path = Path(model)
    if path.is_dir():
        return path
    raise CheckpointError(
        f"--model {model!r} is neither a shipped preset {shipped} nor an existing preset folder"
    )


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def sample(
    model: str | None = typer.Option(None, "--model", help="shipped preset name or preset folder"),
    class_: str | None = typer.Option(
        None, "--class", help="class id or name (default: cycle over all classes)"
    ),
    n: int = typer.Option(
        16, "--n", "--samples", min=1, help="number of images (--samples under torchrun, which takes --n)"
    ),
    cfg: float | None = typer.Option(
        None, "--cfg", help="guidance scale (1 = off, >= 0; default: the preset's)"
    ),
    seed: int = typer.Option(0, "--seed"),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="default: the preset's"),
    top_p: float | None = typer.Option(None, "--top-p", help="default: the preset's"),
    temperature: float | None = typer.Option(
        None, "--temperature", min=0.0, help="default: the preset's (1.0)"
    ),
    output: Path = typer.Option(Path("samples.png"), "-o", "--output", help="PNG grid to write"),
    out_dir: Path | None = typer.Option(
        None,
        "--out-dir",
        help="also write every image as its own PNG here, made in chunks that `torchrun` shares out over its "
        "processes (one GPU each with --device cuda); chunk c uses seed + c, so the images do not depend on "
        "the number of processes; a rerun makes only the chunks still missing",
    ),
    chunk: int = typer.Option(64, "--chunk", min=1, help="with --out-dir: images per chunk"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (under torchrun: the rank's own GPU)"),
) -> None:
    """Sample class-conditional images into a PNG grid (and, with --out-dir, one PNG each, sharded)."""
    from genloom.image.pipeline import ImagePipeline

    try:
        if cfg is not None and cfg < 0:
            raise ValueError(f"--cfg must be >= 0 (1 = no guidance), got {cfg}")
        pipeline = ImagePipeline.load(resolve_model_folder(model))
        if class_ is None:
            labels = torch.arange(n) % len(pipeline.class_names)
        else:
            labels = torch.full((n,), pipeline.class_index(class_), dtype=torch.long)
        params = pipeline.default_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
        if out_dir is not None:
            _sample_sharded(pipeline, labels, out_dir, output, chunk=chunk, device=device,
                            cfg_scale=cfg, sampling=params, seed=seed)  # fmt: skip
            return
        images = pipeline.to(device).sample(labels, cfg_scale=cfg, sampling=params, seed=seed)
    except ValueError as err:
        _fail(err)
    save_grid(images, output)
    typer.echo(f"wrote {n} samples to {output}")


def _sample_sharded(pipeline, labels: torch.Tensor, out_dir: Path, grid: Path, *, chunk: int, device: str,
                    seed: int, **options) -> None:  # noqa: ANN001, ANN003  # fmt: skip
    """`sample --out-dir`: chunks of images through core's `generate_sharded` (every rank a block of chunks,
    each chunk's PNGs and record written as it finishes); the main rank writes the grid of the first 64."""
    from genloom.core.train.distributed import generate_sharded, init_distributed
    from genloom.image.grid import read_images, save_images

    info = init_distributed()
    if device == "cuda":
        device = f"cuda:{info.local_rank}"
    pipeline.to(device)
    n_chunks = -(-len(labels) // chunk)

    def make(index: int) -> list[str]:
        rows = labels[index * chunk : (index + 1) * chunk]
        images = pipeline.sample(rows, seed=seed + index, **options)
        return save_images(images, out_dir, first_index=index * chunk)

    names = [name for part in generate_sharded(make, n_chunks, out_dir / "chunks") for name in part]
    if info.is_main:
        save_grid(read_images([out_dir / name for name in names[:64]]), grid)
        typer.echo(f"wrote {len(names)} samples to {out_dir} ({info.world_size} process(es)); grid {grid}")


@app.command("train-tokenizer")
def train_tokenizer_command(
    data: str = typer.Option("digits", "--data", help="digits, shapes or an image folder"),
    out: Path = typer.Option(..., "--out", help="folder for the trained tokenizer"),
    kind: str = typer.Option("vq", "--kind", help="vq (ar, maskgit), multiscale (var) or kl (mar)"),
    steps: int = typer.Option(3000, "--steps", min=1),
    codebook_size: int = typer.Option(256, "--codebook-size", min=2),
    gan_weight: float = typer.Option(0.0, "--gan-weight", min=0.0, help="patch-GAN loss weight (0 = off)"),
    dead_code_after: int = typer.Option(
        200, "--dead-code-after", min=1, help="VQ and multi-scale VQ: restart codes idle this many steps"
    ),
    image_size: int = typer.Option(32, "--image-size", help="for image folders (a multiple of 8)"),
    resize: bool = typer.Option(False, "--resize", help="resize folder images of another size"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Train an image tokenizer; reports held-out reconstruction error and codebook usage."""
    from genloom.image.recipes import build_tokenizer
    from genloom.image.tokenizer_training import TokenizerTrainConfig, train_tokenizer

    family_of = {"vq": "ar", "multiscale": "var", "kl": "mar"}
    try:
        if kind not in family_of:
            raise ValueError(f"--kind {kind!r} is not a tokenizer kind; expected one of {list(family_of)}")
        if image_size % 8:
            raise ValueError(f"--image-size must be a multiple of 8, got {image_size}")
        train, held_out = _load_train_and_held_out(data, image_size=image_size, resize=resize)
    except ValueError as err:
        _fail(err)
    model = build_tokenizer(
        family_of[kind], train.channels, codebook_size=codebook_size, image_size=train.image_size
    )
    if kind == "vq":
        model.quantize.dead_code_after = model.config.dead_code_after = dead_code_after
    config = TokenizerTrainConfig(
        steps=steps,
        gan_weight=gan_weight,
        gan_start_step=steps // 2,
        log_every=max(1, steps // 10),
        restart_scale_codes_after=dead_code_after,
    )
    report = train_tokenizer(model, train, held_out=held_out, config=config, device=device, log=typer.echo)
    model.cpu().save_pretrained(out)
    final = report.final
    usage = "" if final.codebook_usage is None else f", codebook usage {final.codebook_usage:.3f}"
    typer.echo(f"saved {out}: held-out MSE {final.mse:.4f}, PSNR {final.psnr:.2f} dB{usage}")


@app.command()
def train(
    family: str = typer.Option("ar", "--family", help="generator family: ar, var, maskgit or mar"),
    data: str = typer.Option("digits", "--data", help="digits, shapes or an image folder"),
    out: Path = typer.Option(..., "--out", help="preset folder to write"),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="trained tokenizer folder (default: train one)"
    ),
    steps: int = typer.Option(5000, "--steps", min=1),
    tokenizer_steps: int = typer.Option(3000, "--tokenizer-steps", min=1),
    image_size: int = typer.Option(32, "--image-size"),
    resize: bool = typer.Option(False, "--resize"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Train a class-conditional generator (and its tokenizer unless one is given) into a preset folder."""
    from genloom.image.generator_training import GeneratorTrainConfig, train_generator
    from genloom.image.pipeline import TOKENIZER_OF, ImagePipeline
    from genloom.image.recipes import DEFAULT_SAMPLING, FAMILIES, build_generator, build_tokenizer
    from genloom.image.tokenizer_training import TokenizerTrainConfig, calibrate_latent_scale, train_tokenizer

    try:
        if family not in FAMILIES:
            raise ValueError(
                f"--family {family!r} is not a generator family; expected one of {list(FAMILIES)}"
            )
        if image_size % 8:
            raise ValueError(f"--image-size must be a multiple of 8, got {image_size}")
        train_set, held_out = _load_train_and_held_out(data, image_size=image_size, resize=resize)
        tok = TOKENIZER_OF[family].from_pretrained(tokenizer) if tokenizer is not None else None
    except ValueError as err:
        _fail(err)
    if tok is None:
        tok = build_tokenizer(family, train_set.channels, image_size=train_set.image_size)
        config = TokenizerTrainConfig(steps=tokenizer_steps, log_every=max(1, tokenizer_steps // 10))
        train_tokenizer(tok, train_set, held_out=held_out, config=config, device=device, log=typer.echo)
        if family == "mar":
            calibrate_latent_scale(tok, train_set.images[:2048])
        tok = tok.cpu().eval()
    model = build_generator(
        family, num_classes=train_set.num_classes, tokenizer=tok, image_size=train_set.image_size
    )
    config = GeneratorTrainConfig(steps=steps, log_every=max(1, steps // 20))
    model = train_generator(
        model, tok, train_set, held_out=held_out, config=config, device=device, log=typer.echo
    )
    info = {"dataset": data, **DEFAULT_SAMPLING[family]}
    ImagePipeline(tok, model.cpu(), class_names=train_set.class_names, info=info).save(out)
    typer.echo(f"saved preset folder {out}")


@app.command()
def reconstruct(
    tokenizer: Path = typer.Option(
        ..., "--tokenizer", help="tokenizer folder, or a preset folder with tokenizer/"
    ),
    data: str = typer.Option("digits", "--data", help="digits, shapes or an image folder"),
    n: int = typer.Option(16, "--n", min=1),
    image_size: int = typer.Option(32, "--image-size"),
    resize: bool = typer.Option(False, "--resize"),
    output: Path = typer.Option(Path("reconstruction.png"), "-o", "--output"),
) -> None:
    """Encode and decode images with a tokenizer; writes originals (top rows) above reconstructions."""
    from genloom.core.zoo.pretrained import component_dir
    from genloom.image.io import CONFIG_NAME, read_family
    from genloom.image.pipeline import TOKENIZERS
    from genloom.image.tokenizer_training import evaluate_tokenizer

    try:
        # a preset folder: its tokenizer/ or the one of the preset its preset.json names (tokenizer_from)
        folder = component_dir(tokenizer, "tokenizer") if (tokenizer / "preset.json").is_file() else tokenizer
        family = read_family(folder) if (folder / CONFIG_NAME).is_file() else None
        if family not in TOKENIZERS:
            raise CheckpointError(
                f"{folder} is not a tokenizer folder (family {family!r}, expected one of {sorted(TOKENIZERS)})"
            )
        model = TOKENIZERS[family].from_pretrained(folder)
        train_set, held_out = _load_train_and_held_out(data, image_size=image_size, resize=resize)
        images = (held_out if held_out is not None else train_set).images[:n]
        metrics = evaluate_tokenizer(model, images)
        with torch.no_grad():
            if family == "image.tokenizer.kl":
                recon = model.decode(model.encode(images).mode()).clamp(-1, 1)
            else:
                recon = model.decode(model.encode(images)).clamp(-1, 1)
    except ValueError as err:
        _fail(err)
    nrow = min(8, n)
    save_grid(torch.cat([images, recon]), output, nrow=nrow)
    typer.echo(f"wrote {output}: MSE {metrics.mse:.4f}, PSNR {metrics.psnr:.2f} dB")


def _load_train_and_held_out(data: str, *, image_size: int, resize: bool):
    if data in ("digits", "shapes"):
        return load_dataset(data, "train"), load_dataset(data, "test")
    folder = load_dataset(data, image_size=image_size, resize=resize)
    if folder.skipped:
        typer.echo(f"skipped {len(folder.skipped)} unreadable files in {data}")
    return folder, None
