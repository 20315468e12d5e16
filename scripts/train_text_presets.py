"""Train the tiny shipped presets of genloom-text on CPU and write them into the package.

    .venv/bin/python scripts/train_text_presets.py [--out packages/text/src/genloom/text/presets] [--steps 600]

Every seq2seq family (and DiffuSeq) learns the sort task (letters in, sorted letters out); the MDLM learns
a 6-state Markov chain. Each preset's card records its measured metric (exact-match accuracy on 500 held-out
sources, or ELBO perplexity against the true perplexity).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import torch

from genloom.core.zoo.sources import write_preset_json
from genloom.text.diffuseq import DiffuSeq, DiffuSeqConfig
from genloom.text.glat import GlanceSchedule
from genloom.text.markov import MarkovChainSource
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
from genloom.text.pretrained import SymbolTokenizer, build_text_model, save_text_model
from genloom.text.sedd import ScoreEntropyLM, SEDDConfig
from genloom.text.seq2seq import Seq2SeqConfig
from genloom.text.specials import MASK_ID, NUM_SPECIAL
from genloom.text.tasks import Seq2SeqTask
from genloom.text.training import text_train_config, train
from genloom.text.zoo import PRESETS

DIFFUSEQ_STEPS = 20  # denoising steps the shipped DiffuSeq preset is measured with
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "packages/text/src/genloom/text/presets"


def _preset(name: str):
    return next(p for p in PRESETS if p.name == name)


def ship_sort_model(out, name, model, tokenizer, task, test, steps, start, **translate_options) -> None:  # noqa: ANN001
    """Measure a trained sort model as it ships (fp16 weights) on the held-out sources, save it and its card."""
    model.half().float()
    out_tokens = model.translate(test.source, test.source_length, **translate_options)
    accuracy = task.accuracy(test, out_tokens.tokens)
    save_text_model(model, tokenizer, out / name)
    preset = _preset(name)
    card = {**preset.card, "metric": {"exact_match_sort_500": round(accuracy, 4),
                                      "decoder_passes": out_tokens.decoder_passes,
                                      "train_steps": steps, "train_seconds_cpu": round(time.time() - start, 1)}}  # fmt: skip
    write_preset_json(out / name, dataclasses.replace(preset, card=card))
    print(f"{name}: exact match {accuracy:.3f}, passes {out_tokens.decoder_passes}", flush=True)


def train_sort_presets(out: Path, steps: int, families: list[str]) -> None:
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    tokenizer = SymbolTokenizer.letters(task.num_symbols)
    test = task.sample(500, generator=torch.Generator().manual_seed(2024))
    for family in families:
        torch.manual_seed(0)
        config = Seq2SeqConfig(
            family=family, vocab_size=task.vocab_size, dim=64, encoder_layers=2, decoder_layers=2, n_heads=4,
            dropout=0.0, max_source_length=task.max_length, max_target_length=task.max_target_length,
            upsample_ratio=2.0,
        )  # fmt: skip
        model = build_text_model({"model": config.to_dict()})
        glance = GlanceSchedule(start=0.5, end=0.1, anneal_steps=steps) if family in ("ctc", "dat") else None
        start = time.time()
        train(
            model,
            lambda g: task.sample(64, generator=g),
            text_train_config(steps=steps, lr=3e-3),
            glance=glance,
        )
        ship_sort_model(out, f"text-sort-{family}", model, tokenizer, task, test, steps, start)


def train_sort_diffuseq(out: Path, steps: int) -> None:
    """DiffuSeq on the sort task: continuous diffusion over [source; target] embeddings, 20 denoising steps."""
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    tokenizer = SymbolTokenizer.letters(task.num_symbols)
    test = task.sample(500, generator=torch.Generator().manual_seed(2024))
    torch.manual_seed(0)
    config = DiffuSeqConfig(
        vocab_size=task.vocab_size, embed_dim=16, dim=64, n_layers=2, n_heads=4,
        max_source_length=task.max_length, max_target_length=task.max_target_length, diffusion_steps=100,
    )  # fmt: skip
    model = DiffuSeq(config)
    start = time.time()
    train(
        model,
        lambda g: task.sample(64, generator=g),
        text_train_config(steps=steps, lr=2e-3, warmup_steps=20),
    )
    options = {"steps": DIFFUSEQ_STEPS, "generator": torch.Generator().manual_seed(0)}
    ship_sort_model(out, "text-sort-diffuseq", model, tokenizer, task, test, steps, start, **options)


def train_markov_mdlm(out: Path, steps: int, *, kind: str = "mdlm") -> None:
    """States 0..5 are ids 5..10 (letters a..f after the specials); the mask is the shared id 3. `kind`:
    "mdlm" (masked diffusion, ELBO loss) or "sedd" (score entropy on the same backbone)."""
    source = MarkovChainSource(num_states=6, seed=0)
    length = 12
    torch.manual_seed(0)
    config_class, model_class = (
        (SEDDConfig, ScoreEntropyLM) if kind == "sedd" else (MDLMConfig, MaskedDiffusionLM)
    )
    config = config_class(
        vocab_size=NUM_SPECIAL + 6, mask_id=MASK_ID, dim=64, n_layers=2, n_heads=4, max_seq_len=length
    )
    model = model_class(config)
    train(
        model,
        lambda g: source.sample(128, length, generator=g) + NUM_SPECIAL,
        text_train_config(steps=steps, lr=3e-3),
    )
    held_out = source.sample(1024, length, generator=torch.Generator().manual_seed(9))
    model.half().float()
    elbo = model.elbo_perplexity(
        held_out + NUM_SPECIAL, num_times=32, generator=torch.Generator().manual_seed(1)
    )
    true = math.exp(-source.log_likelihood(held_out).mean().item() / length)
    name = f"text-markov-{kind}"
    save_text_model(model, SymbolTokenizer.letters(6), out / name)
    preset = _preset(name)
    card = {**preset.card, "metric": {"elbo_perplexity": round(elbo, 4), "true_perplexity": round(true, 4),
                                      "train_steps": steps}}  # fmt: skip
    write_preset_json(out / name, dataclasses.replace(preset, card=card))
    print(f"{name}: ELBO perplexity {elbo:.3f} vs true {true:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--families", default="ar,nat,cmlm,ctc,dat,mdlm,sedd,diffuseq")
    parser.add_argument("--diffuseq-steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    families = args.families.split(",")
    train_sort_presets(args.out, args.steps, [f for f in families if f not in ("mdlm", "sedd", "diffuseq")])
    if "diffuseq" in families:
        train_sort_diffuseq(args.out, args.diffuseq_steps)
    if "mdlm" in families:
        train_markov_mdlm(args.out, max(args.steps, 800))
    if "sedd" in families:
        train_markov_mdlm(args.out, max(args.steps, 800), kind="sedd")


if __name__ == "__main__":
    main()
