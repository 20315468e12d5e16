"""Multi30k De->En: the AR baseline against every NAR family, with and without sequence-level distillation.

    .venv/bin/python benchmarks/text_multi30k.py --device cuda --data-dir .data/multi30k --out-dir OUT

Steps, sized to fit one wall-clock deadline (`--deadline-s`):
1. joint BPE (core `BPETokenizer`) on the training split; the corpus is padded once into device tensors
   served as length-bucketed batches (`genloom.text.corpus.BucketedBatches`);
2. train the AR encoder-decoder (the teacher) alone on the GPU for `--budget-ar` seconds;
3. distil the training sources with it (beam search, sources sorted by length, large batches);
4. train every NAR family on the raw and on the distilled targets, all at once as spawned worker processes
   sharing the GPU (`--workers`), each for the same `--budget-nar` seconds (shrunk to meet the deadline);
5. evaluate every model alone on the GPU: detokenised sacreBLEU on test_2016_flickr, decoder passes,
   parameters, fp16 size, sentences per second at batch 1 and 64. The table is printed last.

A run can be split over several calls: steps 1-3 write `OUT/text_multi30k_teacher.tar` (BPE, fp16 AR,
distilled targets), which `--teacher-from` loads instead of recomputing them; `--families` (ar, nat, cmlm,
ctc, dat; `dat:distilled` names one variant) and `--variants` (raw, distilled) choose what trains, the
whole NAR budget going to those trainings; `--rows-from` merges an earlier run's rows into the table.
Models share one embedding matrix (encoder input, decoder input, output) unless `--no-share-all-embeddings`.

Every training follows its wall-clock budget: learning rate and GLAT ratio are functions of the elapsed
fraction of the budget (`train(..., schedule_by_time=True)`), so a run ends annealed whatever throughput
the machine gives. Trained models are written (fp16, with the tokenizer) into
`OUT/text_multi30k_models_*.tar` and the results into `OUT/text_multi30k.json`; `--speed-from TARS`
measures their speed later. A tiny CPU smoke run (the options of tests/text/test_multi30k_benchmark.py):
`--device cpu --limit-train 100 --limit-test 40 --test-on-train --dim 32 --layers 1 --vocab-size 1000
--dropout 0 --lr 5e-3 --batch-size 50 --max-steps 250 --budget-ar 120 --budget-nar 1 --workers 2`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import multiprocessing
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from genloom.core.tokenizers import BPETokenizer
from genloom.text.corpus import BucketedBatches, ParallelCorpus
from genloom.text.glat import GlanceSchedule
from genloom.text.multi30k import corpus_bleu, load_multi30k
from genloom.text.preset_export import PRESET_MAX_BYTES
from genloom.text.pretrained import build_text_model, load_text_model, save_text_model
from genloom.text.seq2seq import Seq2SeqConfig
from genloom.text.tasks import pad_sequences
from genloom.text.training import text_train_config, train

MAX_TOKENS = 64
TAR_STEM = "text_multi30k_models"
TEACHER_TAR = "text_multi30k_teacher.tar"  # the reusable teacher bundle (see `write_teacher_bundle`)
NAR_FAMILIES = ("nat", "cmlm", "ctc", "dat")
VARIANTS = ("raw", "distilled")
WORKER_START_S = 15.0  # spawning a worker, importing torch and starting CUDA, before its budget starts
LM_LOOKAHEAD = {"strategy": "lookahead", "bigram": "train", "lm_weight": 0.6, "collapse_repeats": True}
LM_BEAM = {**LM_LOOKAHEAD, "strategy": "beam", "beam_size": 4, "length_alpha": 1.0}
LM_VITERBI = {**LM_LOOKAHEAD, "strategy": "joint-viterbi", "lm_weight": 0.5}
# beam 8 summing the paths of one translation, weights chosen on the validation set (session 13, CPU)
LM_MERGED_BEAM = {**LM_BEAM, "beam_size": 8, "lm_weight": 0.5, "length_alpha": 1.2, "merge_prefixes": True}
# CTC prefix beam search with the LM (weights chosen on the validation set, session 6)
LM_CTC_BEAM = {"beam_size": 8, "bigram": "train", "lm_weight": 0.5, "length_bonus": 3.0}
# decoding options per table row (the row name says which)
DECODING = {
    "AR greedy (static KV cache)": ("ar", {}),
    "AR greedy (compiled, CUDA graphs, early exit)": ("ar", {"compiled": True}),
    "AR greedy (compiled, CUDA graphs, early exit, bf16)": ("ar", {"compiled": True, "dtype": "bfloat16"}),
    "AR beam 4": ("ar", {"beam_size": 4}),
    "vanilla NAT": ("nat", {}),
    "vanilla NAT (graphed pass)": ("nat", {"graphed": True}),
    "CMLM (10 iterations, length beam 3)": ("cmlm", {"iterations": 10, "length_beam": 3}),
    "vanilla NAT (compiled, graphed pass)": ("nat", {"graphed": "inductor"}),
    "CMLM (10 iterations, length beam 3) (graphed pass)": (
        "cmlm",
        {"iterations": 10, "length_beam": 3, "graphed": True},
    ),
    "CMLM (10 iterations, length beam 3) (compiled, graphed pass)": (
        "cmlm",
        {"iterations": 10, "length_beam": 3, "graphed": "inductor"},
    ),
    "CTC + GLAT": ("ctc", {}),
    "CTC + GLAT (graphed pass)": ("ctc", {"graphed": True}),
    "CTC + GLAT (compiled, graphed pass)": ("ctc", {"graphed": "inductor"}),
    "CTC + GLAT, beam 8 + bigram LM": ("ctc", {**LM_CTC_BEAM}),
    "CTC + GLAT, beam 8 + bigram LM (graphed pass)": ("ctc", {**LM_CTC_BEAM, "graphed": True}),
    "CTC + GLAT, beam 8 + bigram LM (graphed pass, bf16)": (
        "ctc",
        {**LM_CTC_BEAM, "graphed": True, "dtype": "bfloat16"},
    ),
    "CTC + GLAT, beam 8 + bigram LM (compiled, graphed pass, bf16)": (
        "ctc",
        {**LM_CTC_BEAM, "graphed": "inductor", "dtype": "bfloat16"},
    ),
    "DA-Transformer, lookahead": ("dat", {"strategy": "lookahead"}),
    "DA-Transformer, lookahead (graphed pass)": ("dat", {"strategy": "lookahead", "graphed": True}),
    "DA-Transformer, lookahead (compiled, graphed pass)": (
        "dat",
        {"strategy": "lookahead", "graphed": "inductor"},
    ),
    "DA-Transformer, Viterbi": ("dat", {"strategy": "viterbi"}),
    "DA-Transformer, beam 4": ("dat", {"strategy": "beam", "beam_size": 4}),
    # a bigram LM of the training targets ("bigram": "train", built in the model's BPE); weights 0.6 / 0.5, beam 4
    # and length_alpha 1.0 / length_beta 1.0 chosen on the validation set (multi30k-dat on the CPU, session 6)
    "DA-Transformer, lookahead + bigram LM": ("dat", {**LM_LOOKAHEAD}),
    "DA-Transformer, lookahead + bigram LM (graphed pass)": ("dat", {**LM_LOOKAHEAD, "graphed": True}),
    "DA-Transformer, lookahead + bigram LM (compiled, graphed pass)": (
        "dat",
        {**LM_LOOKAHEAD, "graphed": "inductor"},
    ),
    "DA-Transformer, beam 4 + bigram LM": ("dat", {**LM_BEAM}),
    "DA-Transformer, beam 4 + bigram LM (graphed pass)": ("dat", {**LM_BEAM, "graphed": True}),
    "DA-Transformer, beam 8 + bigram LM, paths summed": ("dat", {**LM_MERGED_BEAM}),
    "DA-Transformer, joint Viterbi + bigram LM": ("dat", {**LM_VITERBI}),
    "DA-Transformer, joint Viterbi + bigram LM (graphed pass)": ("dat", {**LM_VITERBI, "graphed": True}),
    "DA-Transformer, joint Viterbi + bigram LM (compiled, graphed pass)": (
        "dat",
        {**LM_VITERBI, "graphed": "inductor"},
    ),
    "DA-Transformer, joint Viterbi + bigram LM (compiled, graphed pass, bf16)": (
        "dat",
        {**LM_VITERBI, "graphed": "inductor", "dtype": "bfloat16"},
    ),
}


def default_data_dir() -> Path:
    env = os.environ.get("GENLOOM_DATA_DIR")
    if env:
        return Path(env) / "multi30k"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _setup_torch(device: str, threads: int | None = None) -> None:
    """TF32 matmuls on CUDA; `threads` CPU threads (the workers share the machine's cores)."""
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def decodings(
    device: str, family: str | None = None, *, compiled_nar: bool = False, only: Sequence[str] = ()
) -> dict[str, tuple[str, dict]]:
    """The table's decodings that run on `device` (compiled AR decoding and the NAR passes replayed from CUDA
    graphs are GPU paths), of one family or all; compiled NAR passes only with --compiled-nar; with `only`
    (parts of row names), the rows whose name holds one of them."""
    parts = [part for part in only if part]
    return {
        name: (fam, options)
        for name, (fam, options) in DECODING.items()
        if (family is None or fam == family)
        and (compiled_nar or not isinstance(options.get("graphed"), str))
        and (str(device).startswith("cuda") or not (options.get("compiled") or options.get("graphed")))
        and (not parts or any(part in name for part in parts))
    }


def translate_all(
    model, tokenizer, sources: list[str], batch_size: int, device: str, *, by_length: bool = False, **options
) -> tuple[list[str], int, float]:
    """(hypotheses in input order, decoder passes of the last batch, sentences per second); over-long
    sources are truncated. `by_length` decodes the sources sorted by length (little padding, and a batch
    stops when its similar-length rows all end): for distillation, not for the timed test runs."""
    ids = [s[: model.config.max_source_length] or [tokenizer.unk_id] for s in tokenizer.encode_batch(sources)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if by_length else list(range(len(ids)))
    outputs: list[str] = [""] * len(ids)
    passes = 0
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        source, length = pad_sequences([ids[r] for r in rows])
        result = model.translate(source, length, **options)  # CPU batch: checked on the host, then moved
        for r, tokens in zip(rows, result.tokens):
            outputs[r] = tokenizer.decode(tokens)
        passes = result.decoder_passes
    _sync(device)
    return outputs, passes, len(ids) / (time.perf_counter() - start)


def model_config(family: str, vocab: int, args) -> Seq2SeqConfig:
    return Seq2SeqConfig(
        family=family, vocab_size=vocab, dim=args.dim, encoder_layers=args.layers, decoder_layers=args.layers,
        n_heads=args.heads, dropout=args.dropout, max_source_length=MAX_TOKENS, max_target_length=MAX_TOKENS,
        upsample_ratio={"ctc": args.ctc_upsample, "dat": args.dat_upsample}.get(family, 2.0),
        share_all_embeddings=args.share_all_embeddings,
    )  # fmt: skip


def train_model(family: str, pairs: list, vocab: int, args, budget_s: float, tag: str) -> tuple:
    """Train one model for `budget_s` seconds on encoded (source, target) pairs: (model, training stats)."""
    torch.manual_seed(args.seed)
    model = build_text_model({"model": model_config(family, vocab, args).to_dict()}).to(args.device)
    batches = BucketedBatches(ParallelCorpus(pairs), args.batch_size, device=args.device, seed=args.seed)
    glance = GlanceSchedule(start=0.5, end=0.1, anneal_steps=1000) if family in ("ctc", "dat") else None
    config = text_train_config(
        steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps, seed=args.seed,
        precision="bf16" if args.device.startswith("cuda") else "fp32",
        log_every=args.log_every, check_finite_every=args.log_every, ema_decay=args.ema_decay,
    )  # fmt: skip
    start = time.perf_counter()
    losses = train(
        model, batches, config, glance=glance, time_budget_s=budget_s, schedule_by_time=True,
        on_step=lambda s, loss: print(f"  {tag} step {s} loss {loss:.3f} ({time.perf_counter() - start:.0f}s)",
                                      flush=True),
        on_step_every=args.log_every,
    )  # fmt: skip
    _sync(args.device)
    seconds = time.perf_counter() - start
    tail = losses[-min(len(losses), 50) :]
    stats = {
        "train_steps": len(losses),
        "train_seconds": round(seconds, 1),
        "steps_per_s": round(len(losses) / seconds, 1),
        "epochs": round(len(losses) / len(batches), 1),
        "final_loss": round(sum(tail) / len(tail), 3) if tail else math.nan,  # no step: budget spent
    }
    print(f"  {tag}: {json.dumps(stats)}", flush=True)
    return model, stats


def nar_job(job: dict) -> dict:
    """One NAR training (run in a worker process): its weights on the CPU and its training stats."""
    args = argparse.Namespace(**job["args"])
    _setup_torch(args.device, job["threads"])
    tag = f"{job['family']}-{job['label']}"
    model, stats = train_model(job["family"], job["pairs"], job["vocab"], args, job["budget_s"], tag)
    # weights travel as bytes: tensors sent between processes each hold a file descriptor open
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    return {"family": job["family"], "label": job["label"], "state": buffer.getvalue(), **stats}


def run_nar_jobs(jobs: list[dict], args) -> list[dict]:
    """Run the NAR trainings: in `args.workers` spawned processes sharing the device (CUDA needs spawn), or
    one after the other in this process when `args.workers` <= 1. Results come back as jobs finish."""
    if args.workers <= 1:
        return [nar_job(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=min(args.workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(nar_job, job): f"{job['family']}-{job['label']}" for job in jobs}
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except Exception as error:  # one failed training (e.g. out of memory) must not lose the table
                print(f"  {futures[future]} FAILED: {type(error).__name__}: {error}", flush=True)
    return results


def distil(ar, tokenizer, train_pairs: list, args) -> tuple[list[str], dict]:
    """The AR model's beam outputs for the training sources, as training targets; an empty output (or one
    over the length limit) keeps the reference target."""
    start = time.perf_counter()
    outputs, _, _ = translate_all(
        ar, tokenizer, [s for s, _ in train_pairs], args.distil_batch, args.device, by_length=True,
        beam_size=args.distil_beam,
    )  # fmt: skip
    lengths = [len(ids) for ids in tokenizer.encode_batch(outputs)]
    fallback = [not 0 < n <= MAX_TOKENS for n in lengths]
    targets = [t if bad else d for (_, t), d, bad in zip(train_pairs, outputs, fallback)]
    stats = {
        "distillation_seconds": round(time.perf_counter() - start, 1),
        "distillation_fallbacks": sum(fallback),
    }
    print(f"distilled {len(targets)} pairs: {json.dumps(stats)}", flush=True)
    return targets, stats


def write_teacher_bundle(path: Path, ar, tokenizer, targets: list[str], info: dict) -> int:
    """The tar `--teacher-from` reads: `ar/` (the fp16 teacher and the BPE tokenizer, `save_text_model`),
    `distilled.json.gz` (one distilled target per training pair, in training order) and `teacher.json`
    (the AR's training stats, the distillation stats, the number of training pairs). Returns its bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_text_model(ar, tokenizer, folder / "ar")
        (folder / "distilled.json.gz").write_bytes(gzip.compress(json.dumps(targets).encode("utf-8")))
        (folder / "teacher.json").write_text(json.dumps({**info, "train_pairs": len(targets)}, indent=2))
        tmp_path = path.with_suffix(".part")
        with tarfile.open(tmp_path, "w") as tar:
            for name in ("ar", "distilled.json.gz", "teacher.json"):
                tar.add(folder / name, arcname=name)
        tmp_path.replace(path)
    return path.stat().st_size


def load_teacher_bundle(path: Path, device: str) -> tuple:
    """(AR teacher in float32, its BPE tokenizer, distilled targets, teacher.json) from a tar or folder
    written by `write_teacher_bundle`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(path)
        if folder.is_file():
            with tarfile.open(folder) as tar:
                tar.extractall(tmp, filter="data")
            folder = Path(tmp)
        missing = [n for n in ("ar", "distilled.json.gz", "teacher.json") if not (folder / n).exists()]
        if missing:
            raise SystemExit(f"--teacher-from {path}: not a teacher bundle (missing {', '.join(missing)})")
        ar, tokenizer, _ = load_text_model(folder / "ar", device=device)
        targets = json.loads(gzip.decompress((folder / "distilled.json.gz").read_bytes()))
        info = json.loads((folder / "teacher.json").read_text())
    return ar, tokenizer, targets, info


_BIGRAMS: dict[int, torch.Tensor] = {}


def train_bigram(tokenizer, vocab_size: int, args) -> torch.Tensor:
    """Add-k bigram LM [V, V] of the training targets (the English side) in `tokenizer`'s BPE, built once per
    tokenizer: the table the "+ bigram LM" DA-Transformer rows score jumps with."""
    if id(tokenizer) not in _BIGRAMS:
        from genloom.text.dag_beam import bigram_log_probs

        targets = [en for _, en in load_multi30k("train", data_dir=args.data_dir)]
        _BIGRAMS[id(tokenizer)] = bigram_log_probs(tokenizer.encode_batch(targets), vocab_size)
    return _BIGRAMS[id(tokenizer)]


def cast_copy(model, dtype: torch.dtype):
    """The model rebuilt from its config and weights in `dtype`, without the original's captured graphs."""
    fresh = type(model)(model.config).to(next(model.parameters()).device)
    fresh.load_state_dict(model.state_dict())
    return fresh.to(dtype).eval()


def evaluate(
    name: str, model, tokenizer, test, args, *, options: dict, bleu: bool = True, batch1: bool = True
) -> dict:
    """BLEU over `test` (timed at batch 64) and sentences/s at batch 1 over its first sentences (skipped
    when not `batch1`: a run short of time keeps its BLEU column)."""
    if options.get("bigram") == "train":
        options = {**options, "bigram": train_bigram(tokenizer, model.config.vocab_size, args)}
    if "dtype" in options:  # a row of the model in another precision: a cast copy (decoding stays float32)
        options = dict(options)
        model = cast_copy(model, getattr(torch, options.pop("dtype")))
    sources, references = [s for s, _ in test], [t for _, t in test]
    timed64 = sources if bleu else sources[: args.speed_sentences_64]
    # warm-up; graphed passes capture a CUDA graph per padded source width and the compiled AR per length
    # budget: all of them before timing (a capture inside the timed loop would charge it to the decoder)
    captures = bool(options.get("graphed") or options.get("compiled"))
    translate_all(model, tokenizer, timed64 if captures else sources[:64], 64, args.device, **options)
    hyps, passes, speed64 = translate_all(model, tokenizer, timed64, 64, args.device, **options)
    speed1 = None
    if batch1:
        warm = sources[: args.speed_sentences] if captures else sources[:8]
        translate_all(model, tokenizer, warm, 1, args.device, **options)  # warm-up (graph capture)
        timed = [
            translate_all(model, tokenizer, sources[: args.speed_sentences], 1, args.device, **options)[2]
            for _ in range(args.speed_repeats)
        ]
        speed1 = statistics.median(timed)
    row = {
        "model": name,
        "decoder_passes": passes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sent_per_s_batch1": None if speed1 is None else round(speed1, 1),
        "sent_per_s_batch64": round(speed64, 1),
    }
    if bleu:
        row["bleu"] = round(corpus_bleu(hyps, references), 2)
        row["example"] = hyps[0]
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

    def add(self, name: str, model, tokenizer) -> int:
        """Archive `model` as `name/`; returns the bytes of its fp16 weights file."""
        with tempfile.TemporaryDirectory() as tmp:
            saved = save_text_model(model, tokenizer, Path(tmp) / name)
            weights = (saved / "model" / "model.safetensors").stat().st_size
            size = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
            path = self.folder / f"{self.stem}_{self.index}.tar"
            if path.exists() and path.stat().st_size + size > self.max_bytes:
                self.index += 1
                path = self.folder / f"{self.stem}_{self.index}.tar"
            with tarfile.open(path, "a") as tar:
                tar.add(saved, arcname=name)
        return weights


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _cell(rows: list, key: str) -> str:
    """'raw / distilled' values of `key` for the rows there are ('-' where a value is missing)."""
    values = [row.get(key) for row in rows if row is not None]
    return " / ".join("-" if v is None else str(v) for v in values) or "n/a"


def format_table(rows: list[dict]) -> str:
    """The markdown table of the run: one line per decoding, raw and distilled models side by side."""
    lines = [
        "| family | BLEU raw | BLEU distilled | passes | params | fp16 MB | steps raw / dist "
        "| b1 sent/s raw / dist | b64 sent/s raw / dist |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in DECODING:
        found = {r["data"]: r for r in rows if r["decoding"] == name}
        if not found:
            continue
        raw, dist = found.get("raw"), found.get("distilled")
        pair = [raw, dist]
        any_row = raw or dist
        lines.append(
            f"| {name} | {_cell([raw], 'bleu')} | {_cell([dist], 'bleu')} | {_cell(pair, 'decoder_passes')} | "
            f"{any_row['parameters']:,} | {any_row['fp16_bytes'] / 1e6:.2f} | {_cell(pair, 'train_steps')} | "
            f"{_cell(pair, 'sent_per_s_batch1')} | {_cell(pair, 'sent_per_s_batch64')} |"
        )
    return "\n".join(lines)


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
            rows_wanted = decodings(args.device, family, compiled_nar=args.compiled_nar, only=args.rows)
            for label, (_, options) in rows_wanted.items():
                name = f"{label} ({folder.name})" if family != "ar" else label
                rows.append(
                    evaluate(name, model, tokenizer, test, args, options=options, bleu=args.speed_bleu)
                )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        args.out_dir / "text_multi30k_speed.json",
        {"device": args.device, "threads": torch.get_num_threads(), "rows": rows},
    )
    for r in rows:
        print(
            f"| {r['model']} | {r.get('bleu', '')} | {r['decoder_passes']} | {r['sent_per_s_batch1']} | "
            f"{r['sent_per_s_batch64']} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--data-dir", type=Path, default=default_data_dir())
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--families", default="ar,nat,cmlm,ctc,dat", help="comma-separated subset of ar,nat,cmlm,ctc,dat; a "
        "NAR family may name its variant ('dat:distilled'), else every --variants one trains")  # fmt: skip
    add("--variants", default="raw,distilled", help="NAR training targets: raw, distilled or both")
    add("--teacher-from", type=Path, help="teacher bundle (tar or folder) of an earlier run: BPE, AR teacher "
        "and distilled targets are loaded instead of computed")  # fmt: skip
    add("--rows-from", type=Path, nargs="+", default=[], help="text_multi30k.json of earlier runs: their rows "
        "join the table (a row this run measures again replaces theirs)")  # fmt: skip
    add("--share-all-embeddings", action=argparse.BooleanOptionalAction, default=True, help="one embedding "
        "matrix for encoder input, decoder input and output (joint BPE)")  # fmt: skip
    add("--budget-ar", type=float, default=150.0, help="training seconds of the AR model")
    add("--budget-nar", type=float, default=230.0, help="training seconds of each NAR model")
    add("--deadline-s", type=float, default=0.0, help="whole-run seconds: the NAR budget shrinks so that the "
        "run ends by then, counting --eval-reserve-s for the evaluation (0: no deadline)")  # fmt: skip
    add("--eval-reserve-s", type=float, default=90.0, help="seconds kept for evaluating every model")
    add("--workers", type=int, default=8, help="NAR trainings at once (processes); <= 1: one by one here")
    add("--max-steps", type=int, default=100_000, help="cap on optimizer steps of one training")
    add("--batch-size", type=int, default=256)
    add("--lr", type=float, default=1e-3)
    add("--ema-decay", type=float, default=None, help="evaluate and keep an exponential moving average of "
        "the weights (e.g. 0.999; default: the last weights)")  # fmt: skip
    add("--warmup-steps", type=int, default=300)
    add("--dim", type=int, default=128)
    add("--layers", type=int, default=3)
    add("--heads", type=int, default=4)
    add("--dropout", type=float, default=0.1)
    add("--vocab-size", type=int, default=3500, help="joint BPE size (3,500: the DAT weights stay "
        "under 5 MB in fp16)")  # fmt: skip
    add("--ctc-upsample", type=float, default=3.0)
    add("--dat-upsample", type=float, default=4.0)
    add("--limit-train", type=int, default=0, help="use only the first N training pairs")
    add("--limit-test", type=int, default=0, help="use only the first N test pairs")
    add("--test-on-train", action="store_true", help="evaluate on the first --limit-test training pairs "
        "(smoke runs: a model that memorised them scores high, a broken pipeline does not)")  # fmt: skip
    add("--speed-sentences", type=int, default=100, help="sentences timed at batch 1")
    add("--speed-sentences-64", type=int, default=256, help="sentences timed at batch 64 by --speed-from "
        "(training runs time the whole test set)")  # fmt: skip
    add("--distil-batch", type=int, default=1024)
    add("--distil-beam", type=int, default=4)
    add("--log-every", type=int, default=500)
    add("--seed", type=int, default=0)
    add("--out-dir", type=Path, default=Path("benchmarks/results"))
    add("--speed-from", type=Path, nargs="+", help="model tars of a training run: measure speed only")
    add("--speed-bleu", action="store_true", help="--speed-from: also the test BLEU of every timed row (its "
        "batch-64 speed then over the whole test set)")  # fmt: skip
    add("--speed-repeats", type=int, default=1, help="timed batch-1 passes over the sentences; the median")
    add("--rows", nargs="+", default=[], help="--speed-from: time only the rows whose name holds one of "
        "these parts (e.g. 'early exit' 'compiled, graphed')")  # fmt: skip
    add("--compiled-nar", action="store_true", help="also time CTC / DA-Transformer passes compiled by "
        "inductor before capture (a compile per padded source width and batch size: minutes of warm-up)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        args.ar, args.jobs = plan_jobs(args.families, args.variants)
    except ValueError as error:
        parser.error(str(error))
    out_dir = args.out_dir.resolve()
    for earlier in args.rows_from:
        if earlier.resolve().parent == out_dir:
            parser.error(
                f"--rows-from {earlier} lies in --out-dir {args.out_dir}: this run would overwrite it and delete "
                "that run's model tars; write this run into another --out-dir"
            )
    return args


def plan_jobs(families: str, variants: str) -> tuple[bool, list[tuple[str, str]]]:
    """(--families names ar, the NAR (family, variant) trainings) from the --families / --variants lists."""
    default = [v for v in variants.split(",") if v]
    if not default or set(default) - set(VARIANTS):
        raise ValueError(f"--variants must list {' and/or '.join(VARIANTS)}, got {variants!r}")
    ar, jobs = False, []
    for item in [f for f in families.split(",") if f]:
        family, _, variant = item.partition(":")
        if family == "ar" and not variant:
            ar = True
            continue
        if family not in NAR_FAMILIES or (variant and variant not in VARIANTS):
            raise ValueError(
                f"--families item {item!r}: expected ar or one of {', '.join(NAR_FAMILIES)}, optionally "
                f"followed by :raw or :distilled"
            )
        jobs += [(family, v) for v in ([variant] if variant else default) if (family, v) not in jobs]
    if not ar and not jobs:
        raise ValueError(f"--families {families!r} names nothing to train")
    return ar, jobs


def load_data(args) -> tuple[list, list]:
    """(training pairs, evaluation pairs) as text, cut by --limit-train / --limit-test."""
    train_pairs = load_multi30k("train", data_dir=args.data_dir)
    if args.limit_train:
        train_pairs = train_pairs[: args.limit_train]
    test = train_pairs if args.test_on_train else load_multi30k("test", data_dir=args.data_dir)
    if args.limit_test:
        test = test[: args.limit_test]
    return train_pairs, test


def nar_budget(args, elapsed: float, jobs: int) -> float:
    """Seconds of each NAR training: --budget-nar, shrunk so that all waves of workers and the evaluation
    end by --deadline-s."""
    waves = math.ceil(jobs / max(args.workers, 1))
    budget = args.budget_nar
    if args.deadline_s:
        start = WORKER_START_S if args.workers > 1 else 0.0
        budget = min(budget, (args.deadline_s - elapsed - args.eval_reserve_s) / waves - start)
    return max(budget, 1.0)


def merge_rows(rows: list[dict], earlier: list[Path]) -> list[dict]:
    """This run's rows plus the rows of earlier runs' JSON that this run did not measure again."""
    measured = {(r["decoding"], r["data"]) for r in rows}
    merged = []
    for path in earlier:
        for row in json.loads(Path(path).read_text())["rows"]:
            key = (row["decoding"], row["data"])
            if key not in measured:
                merged.append({**row, "from": str(path)})
                measured.add(key)
    return merged + rows


def prepare_teacher(args, train_pairs: list, archive: ModelArchive, results: dict, elapsed) -> tuple:
    """(tokenizer, AR teacher or None, its stats, distilled targets or None): loaded from --teacher-from, or
    BPE + AR training + distillation here (then written as the teacher bundle into --out-dir)."""
    if args.teacher_from:
        ar, tokenizer, targets, info = load_teacher_bundle(args.teacher_from, args.device)
        if len(targets) != len(train_pairs):
            raise SystemExit(
                f"--teacher-from {args.teacher_from} holds {len(targets)} distilled targets but this run has "
                f"{len(train_pairs)} training pairs: use the --limit-train of the run that wrote it"
            )
        results.update(
            {k: v for k, v in info.items() if k.startswith("distillation")},
            teacher_from=str(args.teacher_from),
        )
        ar_stats = info["ar_stats"]
        print(f"teacher bundle {args.teacher_from} loaded at {elapsed():.0f}s", flush=True)
        return tokenizer, ar.eval(), ar_stats, targets
    tokenizer = BPETokenizer.train(
        [s for s, _ in train_pairs] + [t for _, t in train_pairs], vocab_size=args.vocab_size
    )
    print(f"BPE vocabulary {tokenizer.vocab_size} at {elapsed():.0f}s", flush=True)
    needs_teacher = args.ar or any(v == "distilled" for _, v in args.jobs)
    if not needs_teacher:
        return tokenizer, None, None, None
    raw = ParallelCorpus.from_text(tokenizer, train_pairs, max_source=MAX_TOKENS, max_target=MAX_TOKENS)
    ar, ar_stats = train_model("ar", raw.pairs, tokenizer.vocab_size, args, args.budget_ar, "ar")
    ar_stats["fp16_bytes"] = archive.add("ar", ar, tokenizer)
    targets, distil_stats = distil(ar, tokenizer, train_pairs, args)
    results.update(distil_stats)
    size = write_teacher_bundle(
        args.out_dir / TEACHER_TAR, ar, tokenizer, targets, {"ar_stats": ar_stats, **distil_stats}
    )
    print(f"teacher bundle {TEACHER_TAR}: {size / 1e6:.1f} MB at {elapsed():.0f}s", flush=True)
    return tokenizer, ar.eval(), ar_stats, targets


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _setup_torch(args.device)
    if args.speed_from:
        speed_from_archive(args)
        return
    run_start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - run_start  # noqa: E731
    train_pairs, test = load_data(args)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    archive = ModelArchive(args.out_dir, TAR_STEM)
    results = {"device": device_name, "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    tokenizer, ar, ar_stats, targets = prepare_teacher(args, train_pairs, archive, results, elapsed)
    vocab = tokenizer.vocab_size
    print(f"BPE vocabulary {vocab}; {len(train_pairs)} training pairs; device {args.device} ({device_name}); "
          f"teacher ready at {elapsed():.0f}s", flush=True)  # fmt: skip

    corpora = {}
    for variant in dict.fromkeys(v for _, v in args.jobs):
        pairs = train_pairs if variant == "raw" else [(s, t) for (s, _), t in zip(train_pairs, targets)]
        corpora[variant] = ParallelCorpus.from_text(
            tokenizer, pairs, max_source=MAX_TOKENS, max_target=MAX_TOKENS
        )
    trained = []
    if args.jobs:
        budget = nar_budget(args, elapsed(), len(args.jobs))
        print(f"{len(args.jobs)} NAR trainings of {budget:.0f}s, {args.workers} at once; at {elapsed():.0f}s",
              flush=True)  # fmt: skip
        threads = max(1, (os.cpu_count() or 1) // max(1, min(args.workers, len(args.jobs))))
        job_args = {k: v for k, v in vars(args).items() if k not in ("speed_from", "jobs")}
        trained = run_nar_jobs(
            [
                {"family": f, "label": label, "pairs": corpora[label].pairs, "vocab": vocab, "args": job_args,
                 "budget_s": budget, "threads": threads}
                for f, label in args.jobs
            ],
            args,
        )  # fmt: skip
        print(f"NAR trainings done at {elapsed():.0f}s", flush=True)

    def record(name: str, model, stats: dict, data: str) -> None:
        late = bool(args.deadline_s) and elapsed() > args.deadline_s - 20  # keep BLEU, drop batch-1 timing
        row = evaluate(
            f"{name} ({data})", model, tokenizer, test, args, options=DECODING[name][1], batch1=not late
        )
        row.update(decoding=name, data=data, **stats)
        results["rows"].append(row)
        _write_json(args.out_dir / "text_multi30k.json", results)

    if args.ar:
        for name in decodings(args.device, "ar", compiled_nar=args.compiled_nar):
            record(name, ar, ar_stats, "raw")
    del ar
    order = {job: i for i, job in enumerate(args.jobs)}
    for job in sorted(trained, key=lambda j: order[(j["family"], j["label"])]):
        model = build_text_model({"model": model_config(job["family"], vocab, args).to_dict()})
        model.load_state_dict(torch.load(io.BytesIO(job.pop("state")), weights_only=True))
        model.to(args.device).eval()
        stats = {k: v for k, v in job.items() if k not in ("family", "label")}
        stats["fp16_bytes"] = archive.add(f"{job['family']}-{job['label']}", model, tokenizer)
        for name in decodings(args.device, job["family"], compiled_nar=args.compiled_nar):
            record(name, model, stats, job["label"])
    results["rows"] = merge_rows(results["rows"], args.rows_from)
    results["presets_fit_5MB"] = {
        r["model"]: r["fp16_bytes"] <= PRESET_MAX_BYTES
        for r in results["rows"]
        if r["data"] == "distilled" or r["decoding"].startswith("AR")
    }
    results["total_seconds"] = round(elapsed())
    results["table"] = format_table(results["rows"])
    _write_json(args.out_dir / "text_multi30k.json", results)
    print(f"total {results['total_seconds']}s\n")
    print(results["table"])


if __name__ == "__main__":
    main()
