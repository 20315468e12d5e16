"""`genloom text` commands: translate, generate, train, distill. Local files only, offline.

Without `--model`, `translate` uses the shipped DA-Transformer sort preset and `generate` the shipped
Markov MDLM preset. Errors a user can fix (empty input, over-long lines, unknown symbols, a graph too
small for its target) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import typer

from genloom.core.errors import GenloomError
from genloom.text.errors import TextInputError

app = typer.Typer(
    help="genloom-text: non-autoregressive and diffusion text generation.", no_args_is_help=True
)

DEFAULT_TRANSLATOR = "text-sort-dat"
DEFAULT_GENERATOR = "text-markov-mdlm"


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def translate_lines(
    model: torch.nn.Module,
    tokenizer,
    lines: list[str],
    *,
    batch_size: int = 64,
    truncate: bool = False,
    device: str = "cpu",
    **decode_options,
) -> tuple[list[str], int]:
    """Translate text lines in batches; returns (output lines, decoder passes of the last batch)."""
    from genloom.text.corpus import encode_lines
    from genloom.text.tasks import pad_sequences

    if not lines:
        raise TextInputError("empty input: no line to translate")
    ids = encode_lines(tokenizer, lines, max_length=model.config.max_source_length, truncate=truncate)
    outputs, passes = [], 0
    for start in range(0, len(ids), batch_size):
        source, source_length = pad_sequences(ids[start : start + batch_size])
        result = model.translate(source.to(device), source_length.to(device), **decode_options)
        outputs.extend(tokenizer.decode(row) for row in result.tokens)
        passes = result.decoder_passes
    return outputs, passes


@app.command()
def translate(
    model: str = typer.Option(DEFAULT_TRANSLATOR, help="preset name or model folder"),
    input_file: Path | None = typer.Option(
        None, "--input", help="text file, one sentence a line (default stdin)"
    ),
    strategy: str = typer.Option(
        "lookahead", help="DA-Transformer decoding: greedy, lookahead, viterbi, joint-viterbi or beam"
    ),
    beam: int = typer.Option(1, help="beam size (AR, CTC; DA-Transformer with --strategy beam)"),
    lm_weight: float = typer.Option(
        0.0, help="DA-Transformer / CTC: weight of the model folder's bigram LM (bigram.safetensors)"
    ),
    length_alpha: float = typer.Option(0.0, help="DA-Transformer beam: score / path vertices ** alpha"),
    merge_prefixes: bool = typer.Option(
        False, help="DA-Transformer beam: sum the paths that emit the same tokens (the official beam search)"
    ),
    length_bonus: float = typer.Option(0.0, help="CTC beam with --lm-weight: score added per label"),
    draft: str | None = typer.Option(
        None, help="AR only: a smaller AR preset / folder for speculative decoding"
    ),
    iterations: int = typer.Option(4, help="CMLM Mask-Predict iterations"),
    truncate: bool = typer.Option(False, help="truncate over-long lines with a warning instead of failing"),
    device: str = typer.Option("cpu"),
    fast: bool = typer.Option(
        False,
        help="CUDA fast path: NAR passes (and their decoding) replayed from CUDA graphs, AR greedy compiled",
    ),
    dtype: str = typer.Option(
        "float32", help="weights and network precision: float32 or bfloat16 (decoding stays float32)"
    ),
) -> None:
    """Translate each input line with a seq2seq model (any family)."""
    from genloom.text.pretrained import load_text_model

    try:
        if dtype not in ("float32", "bfloat16"):
            raise TextInputError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
        net, tokenizer, folder = load_text_model(model, device=device, dtype=getattr(torch, dtype))
        if not hasattr(net, "translate"):
            raise TextInputError(f"model {model!r} is not a translator (it is a {type(net).__name__})")
        text = input_file.read_text(encoding="utf-8") if input_file else sys.stdin.read()
        lines = [line for line in text.splitlines()]
        options = {
            "dat": {
                "strategy": strategy,
                "beam_size": beam,
                "length_alpha": length_alpha,
                "merge_prefixes": merge_prefixes,
            },  # fmt: skip
            "ar": {"beam_size": beam},
            "ctc": {"beam_size": beam},
            "cmlm": {"iterations": iterations},
        }.get(net.config.family, {})
        if lm_weight:
            if net.config.family not in ("dat", "ctc"):
                raise TextInputError("--lm-weight (a bigram LM) needs a DA-Transformer or CTC --model")
            options.update(bigram=load_bigram(folder, net.config.vocab_size), lm_weight=lm_weight)
            if net.config.family == "dat":
                options["collapse_repeats"] = True  # the LM scores the tokens as emitted: repeats merged
            else:
                options["length_bonus"] = length_bonus
        if fast:
            if not str(device).startswith("cuda"):
                raise TextInputError(
                    f"--fast replays CUDA graphs: it needs --device cuda, got --device {device}"
                )
            if net.config.family == "ar" and (beam != 1 or draft is not None):
                raise TextInputError("--fast runs the AR's greedy decoding: drop --beam / --draft")
            options["compiled" if net.config.family == "ar" else "graphed"] = True
        if draft is not None:
            if net.config.family != "ar":
                raise TextInputError("--draft (speculative decoding) needs an AR --model")
            options["draft"] = load_text_model(draft, device=device)[0]
        outputs, passes = translate_lines(net, tokenizer, lines, truncate=truncate, device=device, **options)
    except GenloomError as err:
        _fail(err)
    for line in outputs:
        typer.echo(line)
    typer.secho(f"[{net.config.family}: {passes} decoder passes per batch]", err=True, fg=typer.colors.BLUE)


def load_bigram(folder: Path, vocab_size: int) -> torch.Tensor:
    """The bigram LM table of a model folder (`genloom text bigram` writes its counts)."""
    from genloom.core.io import load_safetensors
    from genloom.text.dag_beam import BIGRAM_FILE, bigram_log_probs_from_counts

    path = Path(folder) / BIGRAM_FILE
    if not path.is_file():
        raise TextInputError(
            f"{path} is missing: --lm-weight needs the model's bigram counts; write them with "
            f"`genloom text bigram --model {folder} --targets train.en`"
        )
    return bigram_log_probs_from_counts(load_safetensors(path), vocab_size)


@app.command()
def bigram(
    model: str = typer.Option(..., help="model folder (or preset name) whose tokenizer encodes the targets"),
    targets: Path = typer.Option(..., help="text file of target-language sentences, one a line"),
    out: Path | None = typer.Option(None, help="output file (default: <model folder>/bigram.safetensors)"),
) -> None:
    """Count the target side's token bigrams in the model's vocabulary (the LM `--lm-weight` reads)."""
    from genloom.core.io import atomic_save_safetensors
    from genloom.text.dag_beam import BIGRAM_FILE, bigram_counts
    from genloom.text.pretrained import load_text_model

    try:
        net, tokenizer, folder = load_text_model(model)
        if not targets.is_file():
            raise TextInputError(f"--targets {targets} is not a file")
        lines = [line for line in targets.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise TextInputError(f"--targets {targets} holds no sentence")
        counts = bigram_counts(tokenizer.encode_batch(lines), net.config.vocab_size)
        path = out or Path(folder) / BIGRAM_FILE
        atomic_save_safetensors(counts, path)
    except GenloomError as err:
        _fail(err)
    typer.echo(f"{path}: {counts['count'].numel():,} distinct bigrams from {len(lines):,} sentences")


@app.command()
def generate(
    model: str = typer.Option(DEFAULT_GENERATOR, help="MDLM or SEDD preset name or model folder"),
    steps: int = typer.Option(64, help="diffusion steps (steps that reveal nothing are skipped)"),
    num: int = typer.Option(4, help="number of samples"),
    length: int = typer.Option(0, help="tokens per sample (default: the model's maximum)"),
    prompt: str = typer.Option("", help="prefix to continue (semi-autoregressive block decoding)"),
    seed: int = typer.Option(0),
) -> None:
    """Sample text from a masked diffusion LM."""
    from genloom.text.pretrained import load_text_model

    try:
        net, tokenizer, _ = load_text_model(model)
        if not hasattr(net, "elbo_nll"):
            raise TextInputError(f"model {model!r} is not a diffusion LM (it is a {type(net).__name__})")
        generator = torch.Generator().manual_seed(seed)
        if prompt:
            prefix = torch.tensor([tokenizer.encode(prompt)] * num)
            room = net.config.max_seq_len - prefix.shape[1]
            size = length or room
            if size < 1 or size > room:
                raise TextInputError(
                    f"prompt of {prefix.shape[1]} tokens leaves {room} tokens; asked for {size}"
                )
            torch.manual_seed(seed)
            tokens = net.block_sample(prefix, size, steps=max(steps // size, 1) * size, block_length=size)
            calls = max(steps // size, 1) * size
        else:
            out = net.sample(num, length or net.config.max_seq_len, steps=steps, generator=generator)
            tokens, calls = out.tokens, out.num_model_calls
    except GenloomError as err:
        _fail(err)
    for row in tokens.tolist():
        typer.echo(tokenizer.decode(row))
    typer.secho(f"[{type(net).__name__}: {calls} denoiser passes]", err=True, fg=typer.colors.BLUE)


@app.command()
def train(
    family: str = typer.Option(..., help="ar, nat, cmlm, ctc, dat, mdlm, sedd or diffuseq"),
    data: str = typer.Option(..., help="synthetic task name, a Multi30k folder, or a source<TAB>target file"),
    out: Path = typer.Option(..., help="folder to write the trained model into"),
    steps: int = typer.Option(1000),
    batch_size: int = typer.Option(64),
    dim: int = typer.Option(128),
    layers: int = typer.Option(3),
    lr: float = typer.Option(1e-3),
    vocab_size: int = typer.Option(6000, help="BPE vocabulary for text data"),
    upsample: float = typer.Option(2.0, help="CTC / DA-Transformer upsampling ratio"),
    device: str = typer.Option("cpu"),
) -> None:
    """Train a model of any family on a task or a parallel corpus, and save it (fp16) into --out."""
    from genloom.text.recipes import train_family

    try:
        metrics = train_family(
            family,
            data,
            out,
            steps=steps,
            batch_size=batch_size,
            dim=dim,
            layers=layers,
            lr=lr,
            vocab_size=vocab_size,
            upsample=upsample,
            device=device,
            on_progress=lambda step, loss: (
                typer.echo(f"step {step} loss {loss:.4f}", err=True) if step % 100 == 0 else None
            ),
        )
    except GenloomError as err:
        _fail(err)
    typer.echo(f"saved {out} {metrics}")


@app.command()
def distill(
    teacher: str = typer.Option(..., help="AR (or any) translator preset or folder"),
    data: str = typer.Option(..., help="synthetic task name, a Multi30k folder or a source<TAB>target file"),
    out: Path = typer.Option(..., help="TSV file to write: source<TAB>teacher translation"),
    num: int = typer.Option(20000, help="synthetic tasks: number of sources to draw"),
    beam: int = typer.Option(4),
    device: str = typer.Option("cpu"),
) -> None:
    """Sequence-level knowledge distillation: re-translate the training sources with a teacher."""
    from genloom.text.recipes import distill_to_tsv

    try:
        start = time.time()
        count = distill_to_tsv(teacher, data, out, num=num, beam=beam, device=device)
    except GenloomError as err:
        _fail(err)
    typer.echo(f"wrote {count} distilled pairs to {out} in {time.time() - start:.1f}s")


@app.command("export-preset")
def export_preset(
    source: Path = typer.Argument(..., help="model folder, or a text_multi30k_models_*.tar of the benchmark"),
    name: str = typer.Option(..., help="preset name, e.g. multi30k-dat"),
    out: Path = typer.Option(
        ..., help="preset folder to write (e.g. packages/text/src/genloom/text/presets/NAME)"
    ),
    member: str = typer.Option("", help="model inside a tar or folder of models, e.g. dat-distilled"),
    description: str = typer.Option("", help="preset description (default: the registered one)"),
    results: Path = typer.Option(
        None, help="the benchmark's text_multi30k.json: its rows become the card metric"
    ),
) -> None:
    """Make a shippable preset folder (fp16 model + tokenizer + preset.json) from a trained translator."""
    from genloom.text.preset_export import benchmark_metric, export_translator_preset
    from genloom.text.zoo import MULTI30K_PRESETS

    try:
        metric = None
        if results is not None:  # the benchmark names its models <family>[-distilled] (tar members, folders)
            family, _, data = (member or source.name).partition("-")
            metric = benchmark_metric(results, family, data or "raw")
        folder = export_translator_preset(
            source, out, name=name, member=member or None, metric=metric,
            description=description or MULTI30K_PRESETS.get(name, name),
        )  # fmt: skip
    except GenloomError as err:
        _fail(err)
    typer.echo(f"wrote preset {name} to {folder}")
