"""Official architectures at random init: the published sizes (LlamaGen-B 111M, VAR-d16 310M, the VQ
tokenizers), the official sampling defaults, and the bench target that times them."""

from __future__ import annotations

import pytest
import torch

from genloom.image.bench import bench_target
from genloom.image.errors import CheckpointError
from genloom.image.official_sizes import random_official_pipeline


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_llamagen_b_and_var_d16_have_the_published_sizes() -> None:
    llamagen = random_official_pipeline("llamagen-b")
    assert llamagen.family == "ar" and llamagen.generator.num_tokens == 256
    assert 110 < _millions(llamagen.generator) < 113  # GPT-B: 111M
    assert llamagen.info["cfg_scale"] == 4.0 and llamagen.info["top_k"] == 2000
    var = random_official_pipeline("var-d16")
    assert var.family == "var" and var.generator.num_tokens == 680
    assert 305 < _millions(var.generator) < 315  # VAR-d16: 310M
    assert 105 < _millions(var.tokenizer) < 112  # the VQVAE: 109M
    with pytest.raises(CheckpointError, match="random-weight architecture"):
        random_official_pipeline("mar-b")


def test_bench_targets_for_random_weights_and_shipped_presets() -> None:
    cpu = torch.device("cpu")
    assert bench_target("llamagen-b", device=cpu, dtype=torch.float32, fast=False) is None  # not shipped
    target = bench_target("var-d16", device=cpu, dtype=torch.float32, fast=False, random_weights=True)
    assert "random weights" in target.name and target.units_per_sample == 680
    assert target.work(2).flops > 2 * 2 * 310e6 * 680  # at least 2 FLOPs per weight per token, CFG rows
    shipped = bench_target("var-digits", device=cpu, dtype=torch.float32, fast=False)
    images = shipped.run(2)
    assert images.shape[0] == 2 and torch.isfinite(images).all()
