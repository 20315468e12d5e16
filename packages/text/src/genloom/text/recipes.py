"""End-to-end recipes behind the CLI: train any family on any data spec, and sequence-level distillation.

Data specs: a synthetic task name (symbols a..i), `markov` (MDLM only), `stdlib` (MDLM on the standard
library's docstrings, BPE), a Multi30k folder (De->En, joint BPE trained on its training split), or a
`source<TAB>target` file (for example one written by `distill_to_tsv`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genloom.core.tokenizers import BPETokenizer
from genloom.text.corpus import ParallelCorpus, load_text_pairs
from genloom.text.diffuseq import DiffuSeq, DiffuSeqConfig
from genloom.text.errors import TextInputError
from genloom.text.glat import GlanceSchedule
from genloom.text.markov import MarkovChainSource
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
from genloom.text.pretrained import SymbolTokenizer, build_text_model, load_text_model, save_text_model
from genloom.text.sedd import ScoreEntropyLM, SEDDConfig
from genloom.text.seq2seq import FAMILIES, Seq2SeqConfig
from genloom.text.specials import MASK_ID, NUM_SPECIAL
from genloom.text.stdlib_corpus import stdlib_docstrings
from genloom.text.tasks import TASK_NAMES, Seq2SeqTask
from genloom.text.training import text_train_config, train

SYNTHETIC_SYMBOLS = 9
MAX_TEXT_TOKENS = 64


def _text_tokenizer(texts: list[str], vocab_size: int) -> BPETokenizer:
    return BPETokenizer.train(texts, vocab_size=vocab_size)


def _mdlm_data(data: str, vocab_size: int, length: int) -> tuple[Callable, object, int]:
    """(batch sampler, tokenizer, vocabulary size) for MDLM training."""
    if data == "markov":
        source = MarkovChainSource(num_states=6, seed=0)
        return (
            (lambda g, n: source.sample(n, length, generator=g) + NUM_SPECIAL),
            SymbolTokenizer.letters(6),
            11,
        )
    if data == "stdlib":
        texts = stdlib_docstrings()
        tokenizer = _text_tokenizer(texts, vocab_size)
        stream = torch.tensor([i for ids in tokenizer.encode_batch(texts, add_eos=True) for i in ids])
        windows = stream[: len(stream) // length * length].view(-1, length)
        windows = windows.masked_fill(windows == MASK_ID, 0)
        return (
            lambda g, n: windows[torch.randint(0, len(windows), (n,), generator=g)],
            tokenizer,
            tokenizer.vocab_size,
        )
    raise TextInputError(f"MDLM trains on 'markov' or 'stdlib', got {data!r}")


def _seq2seq_model(
    family: str,
    vocab: int,
    dim: int,
    layers: int,
    max_source: int,
    max_target: int,
    upsample: float,
    data: str,
    steps: int,
) -> tuple[nn.Module, GlanceSchedule | None]:
    """A translator of `family` (ar, nat, cmlm, ctc, dat) and its glancing schedule (CTC / DA-T only)."""
    config = Seq2SeqConfig(
        family=family,
        vocab_size=vocab,
        dim=dim,
        encoder_layers=layers,
        decoder_layers=layers,
        n_heads=4,
        max_source_length=max_source,
        max_target_length=max_target,
        upsample_ratio=upsample,
        dropout=0.0 if data in TASK_NAMES else 0.1,
    )
    glance = GlanceSchedule(start=0.5, end=0.1, anneal_steps=steps) if family in ("ctc", "dat") else None
    return build_text_model({"model": config.to_dict()}), glance


def train_family(
    family: str,
    data: str,
    out: str | Path,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    dim: int = 128,
    layers: int = 3,
    lr: float = 1e-3,
    vocab_size: int = 6000,
    upsample: float = 2.0,
    device: str = "cpu",
    on_progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train `family` on `data`, save it into `out` (model/ + tokenizer/), return measured metrics."""
    if family in ("mdlm", "sedd"):  # absorbing diffusion LMs: MDLM's ELBO or SEDD's score entropy
        length = 12 if data == "markov" else 64
        sampler, tokenizer, vocab = _mdlm_data(data, vocab_size, length)
        config_class, model_class = (
            (SEDDConfig, ScoreEntropyLM) if family == "sedd" else (MDLMConfig, MaskedDiffusionLM)
        )
        config = config_class(
            vocab_size=vocab, mask_id=MASK_ID, dim=dim, n_layers=layers, n_heads=4, max_seq_len=length
        )
        model = model_class(config).to(device)
        train(
            model,
            lambda g: sampler(g, batch_size).to(device),
            text_train_config(steps=steps, lr=lr),
            on_step=on_progress,
        )
        held_out = sampler(torch.Generator().manual_seed(1234), 256).to(device)
        metrics = {"elbo_perplexity": model.elbo_perplexity(held_out, num_times=16)}
        save_text_model(model, tokenizer, out)
        return metrics
    if family not in FAMILIES + ("diffuseq",):
        raise TextInputError(
            f"unknown family {family!r}; expected one of {', '.join(FAMILIES + ('mdlm', 'sedd', 'diffuseq'))}"
        )
    if data in TASK_NAMES:
        task = Seq2SeqTask(name=data, num_symbols=SYNTHETIC_SYMBOLS, min_length=2, max_length=8)
        tokenizer = SymbolTokenizer.letters(SYNTHETIC_SYMBOLS)
        sample = task.sample
        vocab, max_source, max_target = task.vocab_size, task.max_length, task.max_target_length
    else:
        pairs = load_text_pairs(data)
        tokenizer = _text_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], vocab_size)
        corpus = ParallelCorpus.from_text(
            tokenizer, pairs, max_source=MAX_TEXT_TOKENS, max_target=MAX_TEXT_TOKENS
        )
        sample = corpus.sample
        vocab, max_source, max_target = tokenizer.vocab_size, MAX_TEXT_TOKENS, MAX_TEXT_TOKENS
    if family == "diffuseq":  # continuous embedding diffusion over [source; target]
        config = DiffuSeqConfig(
            vocab_size=vocab, dim=dim, n_layers=layers, n_heads=4,
            max_source_length=max_source, max_target_length=max_target,
        )  # fmt: skip
        model = DiffuSeq(config).to(device)
        glance = None
    else:
        model, glance = _seq2seq_model(
            family, vocab, dim, layers, max_source, max_target, upsample, data, steps
        )
        model = model.to(device)

    def next_batch(generator: torch.Generator):
        batch = sample(batch_size, generator=generator)
        return type(batch)(
            *(t.to(device) for t in (batch.source, batch.source_length, batch.target, batch.target_length))
        )

    train(model, next_batch, text_train_config(steps=steps, lr=lr), glance=glance, on_step=on_progress)
    metrics: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if data in TASK_NAMES:
        test = task.sample(500, generator=torch.Generator().manual_seed(2024))
        out_tokens = model.translate(test.source.to(device), test.source_length.to(device))
        metrics["exact_match"] = task.accuracy(test, out_tokens.tokens)
    save_text_model(model, tokenizer, out)
    return metrics


def distill_to_tsv(
    teacher: str, data: str, out: str | Path, *, num: int = 20000, beam: int = 4, device: str = "cpu"
) -> int:
    """Write `source<TAB>teacher translation` for the training sources of `data` (atomically); returns the count."""
    from genloom.text.cli import translate_lines

    model, tokenizer, _ = load_text_model(teacher, device=device)
    if not hasattr(model, "translate"):
        raise TextInputError(f"teacher {teacher!r} is not a translator")
    if data in TASK_NAMES:
        task = Seq2SeqTask(name=data, num_symbols=SYNTHETIC_SYMBOLS, min_length=2, max_length=8)
        batch = task.sample(num, generator=torch.Generator().manual_seed(0))
        sources = [
            tokenizer.decode(row[:n]) for row, n in zip(batch.source.tolist(), batch.source_length.tolist())
        ]
    else:
        sources = [s for s, _ in load_text_pairs(data)]
    options = {"beam_size": beam} if model.config.family == "ar" else {}
    outputs, _ = translate_lines(
        model, tokenizer, sources, batch_size=128, truncate=True, device=device, **options
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".distill.", dir=out.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        for source, target in zip(sources, outputs):
            f.write(f"{source}\t{target}\n")
    os.replace(tmp, out)
    return len(sources)
