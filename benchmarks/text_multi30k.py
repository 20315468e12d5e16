"""Multi30k De->En: the AR baseline against every NAR family, with and without sequence-level distillation.

    .venv/bin/python benchmarks/text_multi30k.py --device cuda --data-dir ../shared/data/multi30k

Steps: joint BPE (core `BPETokenizer`) on the training split; train the AR encoder-decoder; translate the
test set (greedy on a static KV cache, and beam 4) and the training sources (beam 4: the distilled
targets); train each NAR family on the raw and on the distilled targets; report detokenised sacreBLEU on
test_2016_flickr, decoder passes, parameters, and sentences per second at batch 1 and 64. A tiny CPU smoke
run: `--steps-ar 30 --steps-nar 30 --limit-train 2000 --limit-test 50 --dim 64 --layers 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from genloom.core.tokenizers import BPETokenizer
from genloom.text.corpus import ParallelCorpus
from genloom.text.glat import GlanceSchedule
from genloom.text.multi30k import corpus_bleu, load_multi30k
from genloom.text.pretrained import build_text_model
from genloom.text.seq2seq import Seq2SeqConfig
from genloom.text.tasks import Seq2SeqBatch, pad_sequences
from genloom.text.training import text_train_config, train

MAX_TOKENS = 64


def default_data_dir() -> Path:
    env = os.environ.get("GENLOOM_DATA_DIR")
    if env:
        return Path(env) / "multi30k"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def translate_all(model, tokenizer, sources: list[str], batch_size: int, device: str, **options):
    """(hypotheses, decoder passes of the last batch, sentences per second); truncates over-long sources."""
    ids = [s[: model.config.max_source_length] or [tokenizer.unk_id] for s in tokenizer.encode_batch(sources)]
    outputs, passes = [], 0
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(ids), batch_size):
        source, length = pad_sequences(ids[i : i + batch_size])
        result = model.translate(source.to(device), length.to(device), **options)
        outputs.extend(tokenizer.decode(row) for row in result.tokens)
        passes = result.decoder_passes
    if device == "cuda":
        torch.cuda.synchronize()
    return outputs, passes, len(ids) / (time.perf_counter() - start)


def build_and_train(family: str, corpus: ParallelCorpus, vocab: int, args, steps: int) -> torch.nn.Module:
    config = Seq2SeqConfig(
        family=family, vocab_size=vocab, dim=args.dim, encoder_layers=args.layers, decoder_layers=args.layers,
        n_heads=args.heads, dropout=args.dropout, max_source_length=MAX_TOKENS, max_target_length=MAX_TOKENS,
        upsample_ratio={"ctc": args.ctc_upsample, "dat": args.dat_upsample}.get(family, 2.0),
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = build_text_model({"model": config.to_dict()}).to(args.device)
    glance = GlanceSchedule(start=0.5, end=0.1, anneal_steps=steps) if family in ("ctc", "dat") else None

    def next_batch(generator: torch.Generator) -> Seq2SeqBatch:
        b = corpus.sample(args.batch_size, generator=generator)
        return Seq2SeqBatch(
            *(t.to(args.device) for t in (b.source, b.source_length, b.target, b.target_length))
        )

    start = time.time()
    losses = train(
        model,
        next_batch,
        text_train_config(steps=steps, lr=args.lr, warmup_steps=min(4000, steps // 10),
                          precision="bf16" if args.device == "cuda" else "fp32"),
        glance=glance,
        on_step=lambda s, loss: print(f"  {family} step {s} loss {loss:.3f}", flush=True)
        if s % args.log_every == 0 else None,
    )  # fmt: skip
    print(f"  {family}: {steps} steps in {time.time() - start:.0f}s, final loss {losses[-1]:.3f}", flush=True)
    return model


def evaluate(name: str, model, tokenizer, test, args, **options) -> dict:
    sources, references = [s for s, _ in test], [t for _, t in test]
    hyps, passes, speed64 = translate_all(model, tokenizer, sources, 64, args.device, **options)
    _, _, speed1 = translate_all(model, tokenizer, sources[: args.speed_sentences], 1, args.device, **options)
    row = {
        "model": name,
        "bleu": round(corpus_bleu(hyps, references), 2),
        "decoder_passes": passes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sent_per_s_batch1": round(speed1, 1),
        "sent_per_s_batch64": round(speed64, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default="nat,cmlm,ctc,dat")
    parser.add_argument("--steps-ar", type=int, default=30000)
    parser.add_argument("--steps-nar", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--ctc-upsample", type=float, default=3.0)
    parser.add_argument("--dat-upsample", type=float, default=4.0)
    parser.add_argument("--limit-train", type=int, default=0, help="use only the first N training pairs")
    parser.add_argument("--limit-test", type=int, default=0, help="use only the first N test pairs")
    parser.add_argument("--speed-sentences", type=int, default=200, help="sentences timed at batch 1")
    parser.add_argument("--no-raw", action="store_true", help="skip NAR training on the raw targets")
    parser.add_argument("--log-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/text_multi30k.json"))
    args = parser.parse_args()

    train_pairs = load_multi30k("train", data_dir=args.data_dir)
    test = load_multi30k("test", data_dir=args.data_dir)
    if args.limit_train:
        train_pairs = train_pairs[: args.limit_train]
    if args.limit_test:
        test = test[: args.limit_test]
    tokenizer = BPETokenizer.train(
        [s for s, _ in train_pairs] + [t for _, t in train_pairs], vocab_size=args.vocab_size
    )
    vocab = tokenizer.vocab_size
    raw = ParallelCorpus.from_text(tokenizer, train_pairs, max_source=MAX_TOKENS, max_target=MAX_TOKENS)
    print(f"BPE vocabulary {vocab}; {len(raw)} training pairs; device {args.device}", flush=True)

    rows = []
    ar = build_and_train("ar", raw, vocab, args, args.steps_ar)
    rows.append(evaluate("ar greedy (static KV cache)", ar, tokenizer, test, args))
    rows.append(evaluate("ar beam 4", ar, tokenizer, test, args, beam_size=4))

    start = time.time()
    distilled_targets, _, _ = translate_all(
        ar, tokenizer, [s for s, _ in train_pairs], 256, args.device, beam_size=4
    )
    distilled = ParallelCorpus.from_text(
        tokenizer,
        list(zip([s for s, _ in train_pairs], distilled_targets)),
        max_source=MAX_TOKENS,
        max_target=MAX_TOKENS,
    )
    print(f"distilled {len(distilled)} pairs in {time.time() - start:.0f}s", flush=True)

    options = {"cmlm": {"iterations": 10, "length_beam": 3}, "dat": {"strategy": "lookahead"}}
    for family in args.families.split(","):
        for label, corpus in ([] if args.no_raw else [("raw", raw)]) + [("distilled", distilled)]:
            model = build_and_train(family, corpus, vocab, args, args.steps_nar)
            rows.append(
                evaluate(f"{family} ({label})", model, tokenizer, test, args, **options.get(family, {}))
            )
            if family == "dat":
                rows.append(
                    evaluate(f"dat viterbi ({label})", model, tokenizer, test, args, strategy="viterbi")
                )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"device": args.device, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
            indent=2,
        )
    )
    print("\n| model | BLEU | passes | params | sent/s b1 | sent/s b64 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['bleu']} | {r['decoder_passes']} | {r['parameters']:,} | "
              f"{r['sent_per_s_batch1']} | {r['sent_per_s_batch64']} |")  # fmt: skip


if __name__ == "__main__":
    main()
