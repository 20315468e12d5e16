"""benchmarks/text_multi30k.py end to end on 100 Multi30k pairs, on the CPU (skips without ../shared/data/multi30k).

The AR teacher must memorise the pairs it trains on (an untrained model of the same configuration scores
about 0 BLEU on them), its beam outputs must become the distilled targets, every NAR family must train on
the raw and the distilled data in worker processes, and the outputs must respect the device tool's limits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from genloom.text.multi30k import corpus_bleu, load_multi30k
from genloom.text.pretrained import build_text_model, load_text_model

ROOT = Path(__file__).resolve().parents[2]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
SCRIPT = ROOT / "benchmarks" / "text_multi30k.py"
PAIRS, EVAL_PAIRS = 100, 40
SMOKE = [
    "--device", "cpu", "--limit-train", str(PAIRS), "--limit-test", str(EVAL_PAIRS), "--test-on-train",
    "--dim", "32", "--layers", "1", "--vocab-size", "1000", "--dropout", "0", "--lr", "5e-3",
    "--batch-size", "50", "--warmup-steps", "20", "--max-steps", "250", "--budget-ar", "120",
    "--budget-nar", "1", "--workers", "2", "--speed-sentences", "2", "--log-every", "100",
]  # fmt: skip


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("text_multi30k_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*options: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, str(SCRIPT), *SMOKE, "--data-dir", str(MULTI30K), *options]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def test_job_plan_from_families_and_variants():
    plan = _benchmark_module().plan_jobs
    assert plan("ar,nat,dat", "raw,distilled") == (
        True,
        [("nat", "raw"), ("nat", "distilled"), ("dat", "raw"), ("dat", "distilled")],
    )
    assert plan("nat:raw,ctc", "distilled") == (False, [("nat", "raw"), ("ctc", "distilled")])
    assert plan("ar", "raw") == (True, [])
    for families, variants in (("nat,mdlm", "raw"), ("nat:beam", "raw"), ("nat", "teacher"), ("", "raw")):
        with pytest.raises(ValueError, match="--families|--variants"):
            plan(families, variants)


def test_rows_from_inside_the_out_dir_is_refused(tmp_path):
    # the run would overwrite that JSON and delete that run's model tars before merging them
    parse = _benchmark_module().parse_args
    with pytest.raises(SystemExit):
        parse(["--out-dir", str(tmp_path), "--rows-from", str(tmp_path / "text_multi30k.json")])
    args = parse(["--out-dir", str(tmp_path / "second"), "--rows-from", str(tmp_path / "text_multi30k.json")])
    assert args.rows_from == [tmp_path / "text_multi30k.json"]


COMPILED_NAR_ROWS = {
    "vanilla NAT (compiled, graphed pass)",
    "CMLM (10 iterations, length beam 3) (compiled, graphed pass)",
    "CTC + GLAT (compiled, graphed pass)",
    "DA-Transformer, lookahead (compiled, graphed pass)",
    "DA-Transformer, lookahead + bigram LM (compiled, graphed pass)",
    "DA-Transformer, joint Viterbi + bigram LM (compiled, graphed pass)",
    "DA-Transformer, joint Viterbi + bigram LM (compiled, graphed pass, bf16)",
    "CTC + GLAT, beam 8 + bigram LM (compiled, graphed pass, bf16)",
}


@pytest.mark.skipif(not MULTI30K.exists(), reason="../shared/data/multi30k is absent")
def test_tiny_pipeline_trains_distils_and_reports_every_family(tmp_path):
    run = _run("--out-dir", str(tmp_path))
    bench = _benchmark_module()
    on_cpu = bench.decodings("cpu")  # the compiled AR and graphed NAR rows are GPU paths
    assert set(bench.DECODING) - set(on_cpu) == {
        "AR greedy (compiled, CUDA graphs, early exit)",
        "AR greedy (compiled, CUDA graphs, early exit, bf16)",
        "CTC + GLAT, beam 8 + bigram LM (graphed pass, bf16)",
        "vanilla NAT (graphed pass)",
        "CMLM (10 iterations, length beam 3) (graphed pass)",
        "CTC + GLAT (graphed pass)",
        "CTC + GLAT, beam 8 + bigram LM (graphed pass)",
        "DA-Transformer, lookahead (graphed pass)",
        "DA-Transformer, lookahead + bigram LM (graphed pass)",
        "DA-Transformer, beam 4 + bigram LM (graphed pass)",
        "DA-Transformer, joint Viterbi + bigram LM (graphed pass)",
        *COMPILED_NAR_ROWS,
    }
    # the compiled NAR rows (minutes of compiling on a GPU) are timed only when asked
    assert set(bench.decodings("cuda")) == set(bench.DECODING) - COMPILED_NAR_ROWS
    assert set(bench.decodings("cuda", compiled_nar=True)) == set(bench.DECODING)
    assert set(
        bench.decodings("cuda", compiled_nar=True, only=["early exit", "DA-Transformer, lookahead (c"])
    ) == {
        "AR greedy (compiled, CUDA graphs, early exit)",
        "AR greedy (compiled, CUDA graphs, early exit, bf16)",
        "DA-Transformer, lookahead (compiled, graphed pass)",
    }
    for name in on_cpu:  # every family row of the final table, raw and distilled
        assert f"| {name} |" in run.stdout
    results = json.loads((tmp_path / "text_multi30k.json").read_text())
    rows = results["rows"]
    assert {(r["decoding"], r["data"]) for r in rows if r["decoding"].startswith("AR")} == {
        ("AR greedy (static KV cache)", "raw"),
        ("AR beam 4", "raw"),
    }
    for name in [n for n in on_cpu if not n.startswith("AR")]:
        assert {r["data"] for r in rows if r["decoding"] == name} == {"raw", "distilled"}
    assert all(r["train_steps"] >= 1 for r in rows)
    assert results["distillation_fallbacks"] < PAIRS // 2  # the memorising teacher's outputs were used

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16e6 for p in files)

    # the trained AR against an untrained one of the same configuration, on the pairs it memorised
    with tarfile.open(tmp_path / "text_multi30k_models_0.tar") as tar:
        tar.extractall(tmp_path / "models", filter="data")
    trained, tokenizer, folder = load_text_model(tmp_path / "models" / "ar")
    half = bench.cast_copy(trained, torch.bfloat16)  # the bf16 rows' model: a rebuilt, cast copy
    assert next(trained.parameters()).dtype == torch.float32
    weights = zip(trained.state_dict().values(), half.state_dict().values(), strict=True)
    assert all(b.dtype == torch.bfloat16 and torch.equal(a.bfloat16(), b) for a, b in weights)
    config = json.loads((folder / "model" / "config.json").read_text())
    torch.manual_seed(0)
    untrained = build_text_model(config).eval()
    pairs = load_multi30k("train", data_dir=MULTI30K)[:EVAL_PAIRS]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    bleu = {}
    for label, model in (("trained", trained), ("untrained", untrained)):
        hypotheses, _, _ = bench.translate_all(model, tokenizer, sources, 64, "cpu")
        bleu[label] = corpus_bleu(hypotheses, references)
    ar_row = next(r for r in rows if r["decoding"] == "AR greedy (static KV cache)")
    assert ar_row["bleu"] == pytest.approx(bleu["trained"], abs=0.5)  # fp16 round trip of the weights
    assert bleu["untrained"] < 2.0 and bleu["trained"] > 30.0, bleu

    # the shared embedding: encoder input, decoder input and output projection are one matrix
    assert trained.model.encoder.tok_embeddings is trained.model.decoder.tok_embeddings
    assert trained.model.decoder.output.weight is trained.model.decoder.tok_embeddings.weight

    # a second run continues from the first one's teacher bundle: no BPE / AR / distillation, only the named
    # trainings, and the earlier rows merged into its table
    second = tmp_path / "second"
    run = _run(
        "--out-dir", str(second), "--teacher-from", str(tmp_path / bench.TEACHER_TAR),
        "--families", "nat:raw,dat", "--variants", "distilled", "--rows-from", str(tmp_path / "text_multi30k.json"),
    )  # fmt: skip
    assert not re.search(r"^  ar step|^BPE vocabulary \d+ at|^distilled \d+ pairs", run.stdout, re.MULTILINE)
    merged = json.loads((second / "text_multi30k.json").read_text())
    fresh = {(r["decoding"], r["data"]) for r in merged["rows"] if "from" not in r}
    assert fresh == {("vanilla NAT", "raw")} | {
        (name, "distilled") for name in on_cpu if name.startswith("DA-Transformer")
    }
    assert {(r["decoding"], r["data"]) for r in merged["rows"]} == {(r["decoding"], r["data"]) for r in rows}
    assert merged["distillation_fallbacks"] == results["distillation_fallbacks"]
    for name in on_cpu:
        assert f"| {name} |" in run.stdout
    assert sorted(p.name for p in second.iterdir()) == ["text_multi30k.json", "text_multi30k_models_0.tar"]
