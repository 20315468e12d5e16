"""LlamaGen's GPT converted into RasterAR reproduces teacher-forcing, cached and CFG logits (atol 1e-4)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genloom.image.convert import load_llamagen_gpt

pytestmark = pytest.mark.parity


@torch.no_grad()
def test_llamagen_gpt_logits(parity_dir) -> None:
    folder = parity_dir("llamagen")
    cases = load_file(folder / "cases.safetensors")
    model = load_llamagen_gpt(folder / "gpt.safetensors", n_heads=4, grid=(4, 4))
    assert model.config.num_classes == 10 and model.transformer.config.n_layers == 2
    close = dict(atol=1e-4, rtol=0)
    torch.testing.assert_close(model(cases["cond_idx"], cases["tokens"][:, :-1]), cases["tf.logits"], **close)
    torch.testing.assert_close(
        model.decode_logits(cases["cond_idx"], cases["tokens"]), cases["cached.logits"], **close
    )
    cfg = model.decode_logits(cases["gen.cond"], cases["gen.tokens"], cfg_scale=4.0)
    torch.testing.assert_close(cfg, cases["gen.cfg_logits"], **close)
