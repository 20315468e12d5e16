"""Benchmark helpers: call counting, floor arithmetic, table rendering, and a real matmul on the GPU."""

from __future__ import annotations

import json
import time

import pytest
import torch

from genloom.core.bench import BenchRow, DeviceSpec, device_spec, floor_seconds, format_table, measure

SPEC = DeviceSpec("test GPU", bf16_flops=100e12, memory_bandwidth=1e12)


def test_measure_calls_warmup_plus_iters_and_times_them():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.002)

    timing = measure(work, warmup=2, iters=5, device="cpu")
    assert len(calls) == 7 and timing.iterations == 5
    assert 0.002 <= timing.minimum <= timing.median and timing.mean >= 0.002
    with pytest.raises(ValueError):
        measure(work, iters=0, device="cpu")


def test_floor_is_the_slower_of_compute_and_memory():
    assert floor_seconds(spec=SPEC, flops=200e12) == pytest.approx(2.0)
    assert floor_seconds(spec=SPEC, bytes_moved=3e12) == pytest.approx(3.0)
    assert floor_seconds(spec=SPEC, flops=200e12, bytes_moved=1e12) == pytest.approx(2.0)


def test_table_shows_floor_percentages_and_throughput():
    rows = [
        BenchRow("matmul", seconds=4.0, flops=200e12, reference_seconds=5.0),
        BenchRow("copy", seconds=2.0, bytes_moved=1e12),
        BenchRow("opaque", seconds=1.0),
    ]
    table = format_table(rows, spec=SPEC)
    assert "| matmul | 4000.000 | 2000.000 | 50.0 | 50.0 | - | 5000.000 |" in table
    assert "| copy | 2000.000 | 1000.000 | 50.0 | - | 500.0 | - |" in table
    assert "| opaque | 1000.000 | - | - | - | - | - |" in table
    assert "test GPU" in table
    assert "floor not shown" in format_table(rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_matmul_reaches_a_plausible_share_of_the_datasheet_peak():
    spec = device_spec("cuda")
    if spec is None:
        pytest.skip(f"no datasheet entry for {torch.cuda.get_device_name()}")
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    timing = measure(lambda: a @ b, warmup=3, iters=10)
    row = BenchRow("bf16 matmul 8192^3", seconds=timing.median, flops=2 * n**3)
    achieved = row.flops / row.seconds
    print("\n" + format_table([row], spec=spec))
    assert 0.4 * spec.bf16_flops < achieved < 1.05 * spec.bf16_flops


def test_run_bench_times_each_batch_and_reports_the_floor_fraction():
    from genloom.core.bench import BenchTarget, Work, format_bench, run_bench

    calls = []
    target = BenchTarget(
        name="sleepy",
        run=lambda batch: calls.append(batch) or time.sleep(0.001 * batch),
        work=lambda batch: Work(flops=1e12 * batch),
        sample_unit="image",
        unit="token",
        units_per_sample=16,
    )
    results = run_bench(target, [1, 4], spec=SPEC, device="cpu", warmup=1, iters=2)
    assert calls == [1, 1, 1, 4, 4, 4]
    assert [r.batch for r in results] == [1, 4]
    assert results[1].seconds >= 0.004 and results[1].floor == pytest.approx(0.04)
    assert results[1].fraction_of_floor == pytest.approx(0.04 / results[1].seconds)
    table = format_bench(target, results, spec=SPEC)
    assert "| 4 |" in table and "images / s" in table and "tokens / s" in table


def test_work_counts_of_a_transformer():
    from genloom.core.bench import linear_weight_count, transformer_flops, weight_bytes
    from genloom.core.nn import Transformer, TransformerConfig

    cfg = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, vocab_size=10, rope="1d", max_seq_len=16, mlp_hidden_dim=64
    )
    model = Transformer(cfg)
    linears = 2 * (32 * 96 + 32 * 32 + 3 * 32 * 64) + 32 * 10  # wqkv, wo, w1/w3/w2 per layer; the head
    assert linear_weight_count(model) == linears
    flops = transformer_flops(model, rows=3, queries=5, keys=7)
    assert flops == 2 * linears * 15 + 4 * 2 * 32 * 15 * 7
    assert weight_bytes(model) == 4 * sum(p.numel() for p in model.parameters())
    model.setup_cache(2, 16)  # a KV cache is not weights: a floor counts its filled part separately
    assert weight_bytes(model) == 4 * sum(p.numel() for p in model.parameters())


def test_bench_command_refuses_unknown_presets_and_bad_options():
    from typer.testing import CliRunner

    from genloom.core.cli import build_app

    runner = CliRunner()
    app = build_app(plugins=False)
    result = runner.invoke(app, ["bench", "no-such-preset", "--device", "cpu"])
    assert result.exit_code != 0 and "no installed package can benchmark" in str(result.exception)
    result = runner.invoke(app, ["bench", "x", "--device", "cpu", "--dtype", "int3"])
    assert "--dtype must be one of" in str(result.exception)


def test_kernel_table_row_and_json(tmp_path, capsys) -> None:
    from genloom.core.bench import finish_kernel_table, kernel_row

    assert kernel_row("dat", 150.0, (300.0, 75.25), 50.0) == "| dat | 150.0 | 300.0 | 75.2 | 50.0 | 3.0x |"
    out = tmp_path / "table.json"
    finish_kernel_table([{"name": "dat", "ours_us": 150.0}], None, torch.device("cpu"), out)
    assert json.loads(out.read_text()) == {"device": "cpu", "rows": [{"name": "dat", "ours_us": 150.0}]}
    assert capsys.readouterr().out == ""  # no device spec: no matmul-rate line
