"""Turn the JSON of `benchmarks/gpu_inference.py` (with the official samplers' JSON merged in) into the
markdown tables of docs/benchmarks.md: our figure, the official one from the same run, the floor, the ratios.

    python benchmarks/gpu_report.py gpu_inference.json > tables.md
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1e3:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def raster_ar_table(results: dict, official: dict) -> list[str]:
    lines = [
        "| LlamaGen-B, 256 tokens, CFG 4.0, top-k 2000, bf16 | ours eager (ms) | ours compiled (ms) | official eager (ms)"
        " | official compiled (ms) | floor (ms) | official / ours | ours / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in sorted(results.items()):
        if not key.startswith("ours_llamagen_b_b"):
            continue
        batch = row["batch"]
        off_eager = official.get(f"llamagen_gpt_b_eager_b{batch}", {}).get("median_s")
        off_fast = official.get(f"llamagen_gpt_b_compiled_b{batch}", {}).get("median_s")
        lines.append(
            f"| batch {batch} | {_ms(row.get('eager_s'))} | {_ms(row['compiled_s'])} | {_ms(off_eager)} | {_ms(off_fast)} "
            f"| {_ms(row.get('floor_s'))} | {_ratio(off_fast, row['compiled_s'])} | {_ratio(row['compiled_s'], row.get('floor_s'))} |"
        )
    return lines


def var_table(results: dict, official: dict) -> list[str]:
    lines = [
        "| VAR-d16, CFG 1.5, top-k 900, top-p 0.96, VQVAE decode included | ours eager (ms) | ours graphed (ms) "
        "| official (ms) | transformer FLOP floor (ms) | official / ours | ours / floor | same tokens as eager |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, row in sorted(results.items(), key=lambda kv: kv[1].get("batch", 0)):
        if not key.startswith("ours_var_d16_b"):
            continue
        batch = row["batch"]
        off = official.get(f"var_d16_b{batch}", {}).get("median_s")
        lines.append(
            f"| batch {batch} | {_ms(row.get('eager_s'))} | {_ms(row['graphed_s'])} | {_ms(off)} | {_ms(row.get('floor_s'))} "
            f"| {_ratio(off, row['graphed_s'])} | {_ratio(row['graphed_s'], row.get('floor_s'))} | {row.get('sampled_tokens_equal_eager')} |"
        )
    return lines


def passes_table(results: dict) -> list[str]:
    lines = [
        "| one pass, batch 64, bf16, compiled | TFLOP | eager (ms) | compiled (ms) | TFLOP/s | % of measured matmul rate |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in results.items():
        if key.startswith("ours_pass_"):
            lines.append(
                f"| {key.removeprefix('ours_pass_')} | {row['tflop']:.3f} | {_ms(row['eager_s'])} | {_ms(row['compiled_s'])} "
                f"| {row['tflops_per_s']:.0f} | {100 * row['fraction_of_matmul_rate']:.0f}% |"
            )
    return lines


def other_rows(results: dict) -> list[str]:
    lines = []
    for key in (
        "ceilings",
        "ours_llamagen_xl_step_b1",
        "ours_llamagen_b_int8_b1",
        "equality_ar_digits_bf16_b64",
        "equality_llamagen_b_random_weights",
    ):
        if key in results:
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in results[key].items()
            )
            lines.append(f"- `{key}`: {shown}")
    for key, row in results.items():
        if key.startswith("error_"):
            lines.append(f"- `{key}`: {row['error']}")
    return lines


def main(path: str) -> str:
    results = json.loads(Path(path).read_text())
    official = results.get("official", {})
    parts = [
        raster_ar_table(results, official),
        var_table(results, official),
        passes_table(results),
        other_rows(results),
    ]
    return "\n\n".join("\n".join(p) for p in parts if p)


if __name__ == "__main__":
    print(main(sys.argv[1]))
