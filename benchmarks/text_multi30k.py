"""Multi30k De->En: the AR baseline against every NAR family, with and without sequence-level distillation.

    .venv/bin/python benchmarks/text_multi30k.py --device cuda --data-dir .data/multi30k --out-dir OUT

Steps: joint BPE (core `BPETokenizer`) on the training split; train the AR encoder-decoder; translate the
test set (greedy on a static KV cache, and beam 4) and the training sources (beam 4: the distilled
targets); train each NAR family on the raw and on the distilled targets; report detokenised sacreBLEU on
test_2016_flickr, decoder passes, parameters, and sentences per second at batch 1 and 64.

Every training runs under a wall-clock budget: a short probe on a throw-away copy measures steps/s, the
schedule is sized to the budget, and the run stops at the budget whatever happens. Trained models are
written (fp16, with the tokenizer) into `OUT/text_multi30k_models_*.tar` as they finish, and
`--speed-from TARS` measures their CPU speed later. A tiny CPU smoke run:
`--limit-train 2000 --limit-test 50 --dim 64 --layers 1 --budget-ar 10 --budget-nar 5 --probe-steps 4`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from genloom.core.tokenizers import BPETokenizer
from genloom.text.corpus import ParallelCorpus
from genloom.text.glat import GlanceSchedule
from genloom.text.multi30k import corpus_bleu, load_multi30k
from genloom.text.pretrained import build_text_model, load_text_model, save_text_model
from genloom.text.seq2seq import Seq2SeqConfig
from genloom.text.tasks import Seq2SeqBatch, pad_sequences
from genloom.text.training import text_train_config, train

MAX_TOKENS = 64
TAR_STEM = "text_multi30k_models"
# decoding options per family (the row name says which)
DECODING = {
    "ar greedy (static KV cache)": ("ar", {}),
    "ar beam 4": ("ar", {"beam_size": 4}),
    "nat": ("nat", {}),
    "cmlm": ("cmlm", {"iterations": 10, "length_beam": 3}),
    "ctc": ("ctc", {}),
    "dat lookahead": ("dat", {"strategy": "lookahead"}),
    "dat viterbi": ("dat", {"strategy": "viterbi"}),
    "dat beam 4": ("dat", {"strategy": "beam", "beam_size": 4}),
}


def default_data_dir() -> Path:
    env = os.environ.get("GENLOOM_DATA_DIR")
    if env:
        return Path(env) / "multi30k"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def translate_all(model, tokenizer, sources: list[str], batch_size: int, device: str, **options):
    """(hypotheses, decoder passes of the last batch, sentences per second); truncates over-long sources."""
    ids = [s[: model.config.max_source_length] or [tokenizer.unk_id] for s in tokenizer.encode_batch(sources)]
    outputs, passes = [], 0
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(ids), batch_size):
        source, length = pad_sequences(ids[i : i + batch_size])
        result = model.translate(source.to(device), length.to(device), **options)
        outputs.extend(tokenizer.decode(row) for row in result.tokens)
        passes = result.decoder_passes
    _sync(device)
    return outputs, passes, len(ids) / (time.perf_counter() - start)


def model_config(family: str, vocab: int, args) -> Seq2SeqConfig:
    return Seq2SeqConfig(
        family=family, vocab_size=vocab, dim=args.dim, encoder_layers=args.layers, decoder_layers=args.layers,
        n_heads=args.heads, dropout=args.dropout, max_source_length=MAX_TOKENS, max_target_length=MAX_TOKENS,
        upsample_ratio={"ctc": args.ctc_upsample, "dat": args.dat_upsample}.get(family, 2.0),
    )  # fmt: skip


def _batches(corpus: ParallelCorpus, args):
    def next_batch(generator: torch.Generator) -> Seq2SeqBatch:
        b = corpus.sample(args.batch_size, generator=generator)
        return Seq2SeqBatch(
            *(t.to(args.device) for t in (b.source, b.source_length, b.target, b.target_length))
        )

    return next_batch


def _config(args, steps: int, lr_warmup: int):
    precision = "bf16" if args.device.startswith("cuda") else "fp32"
    return text_train_config(steps=steps, lr=args.lr, warmup_steps=lr_warmup, precision=precision)


def measure_steps_per_s(model, corpus: ParallelCorpus, args, glance: bool) -> float:
    """Optimizer steps per second of this architecture, from a short run on a throw-away copy."""
    probe = copy.deepcopy(model)
    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        _sync(args.device)
        stamps.append(time.perf_counter())

    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=args.probe_steps) if glance else None
    train(probe, _batches(corpus, args), _config(args, args.probe_steps, 1), glance=schedule, on_step=on_step)
    # the first steps pay for allocation and kernel selection (new shapes keep arriving early on): on the
    # H100 run of 2026-11-23 a 24-step probe timing its last 3/4 under-estimated the rate up to 3.4x
    skip = max(1, len(stamps) // 2)
    del probe
    return (len(stamps) - 1 - skip) / max(stamps[-1] - stamps[skip], 1e-9)


def build_and_train(family: str, corpus: ParallelCorpus, vocab: int, args, budget_s: float) -> tuple:
    """Train one model under a wall-clock budget: (model, steps run, seconds)."""
    torch.manual_seed(args.seed)
    model = build_text_model({"model": model_config(family, vocab, args).to_dict()}).to(args.device)
    glance = family in ("ctc", "dat")
    rate = measure_steps_per_s(model, corpus, args, glance)
    steps = max(args.probe_steps, min(args.max_steps, int(0.95 * budget_s * rate)))
    print(f"  {family}: {rate:.1f} steps/s at batch {args.batch_size} -> {steps} steps in {budget_s:.0f}s",
          flush=True)  # fmt: skip
    schedule = GlanceSchedule(start=0.5, end=0.1, anneal_steps=steps) if glance else None
    start = time.time()
    losses = train(
        model, _batches(corpus, args), _config(args, steps, min(4000, steps // 10)), glance=schedule,
        on_step=lambda s, loss: print(f"  {family} step {s} loss {loss:.3f}", flush=True)
        if s % args.log_every == 0 else None,
        time_budget_s=budget_s,
    )  # fmt: skip
    seconds = time.time() - start
    print(f"  {family}: {len(losses)} steps in {seconds:.0f}s, final loss {losses[-1]:.3f}", flush=True)
    return model, len(losses), seconds


def evaluate(name: str, model, tokenizer, test, args, *, options: dict, bleu: bool = True) -> dict:
    """BLEU over `test` (timed at batch 64) and sentences/s at batch 1 over its first sentences."""
    sources, references = [s for s, _ in test], [t for _, t in test]
    translate_all(model, tokenizer, sources[:64], 64, args.device, **options)  # warm-up
    timed64 = sources if bleu else sources[: args.speed_sentences_64]
    hyps, passes, speed64 = translate_all(model, tokenizer, timed64, 64, args.device, **options)
    _, _, speed1 = translate_all(model, tokenizer, sources[: args.speed_sentences], 1, args.device, **options)
    row = {
        "model": name,
        "decoder_passes": passes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sent_per_s_batch1": round(speed1, 1),
        "sent_per_s_batch64": round(speed64, 1),
    }
    if bleu:
        row["bleu"] = round(corpus_bleu(hyps, references), 2)
    print(json.dumps(row), flush=True)
    return row


class ModelArchive:
    """Trained models (fp16 + tokenizer), appended to tars as they finish so that a cut run keeps them; a new
    tar `{stem}_{i}.tar` starts before one would pass `max_bytes` (files that come back are capped)."""

    def __init__(self, folder: Path, stem: str, *, max_bytes: int = 15 * 2**20) -> None:
        self.folder, self.stem, self.max_bytes, self.index = folder, stem, max_bytes, 0
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{stem}_*.tar"):
            old.unlink()

    def add(self, name: str, model, tokenizer) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            saved = save_text_model(model, tokenizer, Path(tmp) / name)
            size = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
            path = self.folder / f"{self.stem}_{self.index}.tar"
            if path.exists() and path.stat().st_size + size > self.max_bytes:
                self.index += 1
                path = self.folder / f"{self.stem}_{self.index}.tar"
            with tarfile.open(path, "a") as tar:
                tar.add(saved, arcname=name)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def print_table(rows: list[dict]) -> None:
    print("\n| model | BLEU | passes | params | sent/s b1 | sent/s b64 | steps | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r.get('bleu', '')} | {r['decoder_passes']} | {r['parameters']:,} | "
              f"{r['sent_per_s_batch1']} | {r['sent_per_s_batch64']} | {r.get('train_steps', '')} | "
              f"{r.get('train_seconds', '')} |")  # fmt: skip


def speed_from_archive(args) -> None:
    """Sentences/s of archived models on this machine (`--speed-from`), without retraining."""
    test = load_multi30k("test", data_dir=args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.speed_from:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
        for folder in sorted(Path(tmp).iterdir()):
            model, tokenizer, _ = load_text_model(folder, device=args.device)
            family = model.config.family
            for label, (fam, options) in DECODING.items():
                if fam == family:
                    name = f"{label} ({folder.name})" if family != "ar" else label
                    rows.append(evaluate(name, model, tokenizer, test, args, options=options, bleu=False))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        args.out_dir / "text_multi30k_speed.json",
        {"device": args.device, "threads": torch.get_num_threads(), "rows": rows},
    )
    print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default="nat,cmlm,ctc,dat")
    parser.add_argument("--budget-ar", type=float, default=70.0, help="training seconds of the AR model")
    parser.add_argument("--budget-nar", type=float, default=32.0, help="training seconds of each NAR model")
    parser.add_argument("--deadline-s", type=float, default=0.0, help="whole-run seconds: NAR budgets "
                        "shrink so that the run ends by then (0: no deadline)")  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=30000)
    parser.add_argument("--probe-steps", type=int, default=60, help="steps of the throughput probe")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--vocab-size", type=int, default=6000)
    parser.add_argument("--ctc-upsample", type=float, default=3.0)
    parser.add_argument("--dat-upsample", type=float, default=4.0)
    parser.add_argument("--limit-train", type=int, default=0, help="use only the first N training pairs")
    parser.add_argument("--limit-test", type=int, default=0, help="use only the first N test pairs")
    parser.add_argument("--speed-sentences", type=int, default=100, help="sentences timed at batch 1")
    parser.add_argument("--speed-sentences-64", type=int, default=256, help="sentences timed at batch 64 "
                        "by --speed-from (training runs time the whole test set)")  # fmt: skip
    parser.add_argument("--distil-batch", type=int, default=512)
    parser.add_argument("--no-raw", action="store_true", help="skip NAR training on the raw targets")
    parser.add_argument("--log-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--speed-from",
        type=Path,
        nargs="+",
        help="model tars of a training run: measure speed only, on --device",
    )
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.speed_from:
        speed_from_archive(args)
        return
    run_start = time.time()
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
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"BPE vocabulary {vocab}; {len(raw)} training pairs; device {args.device} ({device_name})", flush=True
    )
    archive = ModelArchive(args.out_dir, TAR_STEM)
    results = {"device": device_name, "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    rows = results["rows"]

    def record(row: dict, steps: int, seconds: float) -> None:
        row.update(train_steps=steps, train_seconds=round(seconds))
        rows.append(row)
        _write_json(args.out_dir / "text_multi30k.json", results)

    ar, steps, seconds = build_and_train("ar", raw, vocab, args, args.budget_ar)
    archive.add("ar", ar, tokenizer)
    for label in ("ar greedy (static KV cache)", "ar beam 4"):
        record(evaluate(label, ar, tokenizer, test, args, options=DECODING[label][1]), steps, seconds)

    start = time.time()
    distilled_targets, _, _ = translate_all(
        ar, tokenizer, [s for s, _ in train_pairs], args.distil_batch, args.device, beam_size=4
    )
    # an empty AR output (or one over the length limit, dropped by from_text) keeps the reference target
    lengths = [len(ids) for ids in tokenizer.encode_batch(distilled_targets)]
    fallback = [not 0 < n <= MAX_TOKENS for n in lengths]
    results["distillation_fallbacks"] = sum(fallback)
    distilled = ParallelCorpus.from_text(
        tokenizer,
        [(s, t if bad else d) for (s, t), d, bad in zip(train_pairs, distilled_targets, fallback)],
        max_source=MAX_TOKENS,
        max_target=MAX_TOKENS,
    )
    results["distillation_seconds"] = round(time.time() - start, 1)
    print(f"distilled {len(distilled)} pairs in {time.time() - start:.0f}s ({sum(fallback)} kept the reference)",
          flush=True)  # fmt: skip
    del ar

    jobs = [
        (family, label, corpus)
        for family in args.families.split(",")
        for label, corpus in ([] if args.no_raw else [("raw", raw)]) + [("distilled", distilled)]
    ]
    for index, (family, label, corpus) in enumerate(jobs):
        budget = args.budget_nar
        if args.deadline_s:  # leave ~15 s per remaining model for its probe and evaluation
            left = len(jobs) - index
            budget = min(budget, max(3.0, (args.deadline_s - (time.time() - run_start)) / left - 15.0))
        model, steps, seconds = build_and_train(family, corpus, vocab, args, budget)
        archive.add(f"{family}-{label}", model, tokenizer)
        for name, (fam, options) in DECODING.items():
            if fam == family:
                record(
                    evaluate(f"{name} ({label})", model, tokenizer, test, args, options=options),
                    steps,
                    seconds,
                )
        del model
    results["total_seconds"] = round(time.time() - run_start)
    _write_json(args.out_dir / "text_multi30k.json", results)
    print(f"total {results['total_seconds']}s")
    print_table(rows)


if __name__ == "__main__":
    main()
