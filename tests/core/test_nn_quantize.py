"""Int8 weight-only quantisation: bounded rounding error, a quantised model stays close to the float one, and
it halves the weight bytes; the quantised decoder still runs the cached AR loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genloom.core.errors import ConfigError
from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.nn.quantize import Int8Linear, quantize_int8_weight_only, quantize_per_channel_int8
from genloom.core.sampling import SamplingParams, generate


def test_per_channel_rounding_error_is_at_most_half_a_step() -> None:
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 1, 64)[:, None]
    q, scales = quantize_per_channel_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    error = (q.float() * scales[:, None] - w).abs()
    assert torch.all(error <= scales[:, None] / 2 + 1e-7)
    with pytest.raises(ConfigError, match="2-D"):
        quantize_per_channel_int8(torch.randn(2, 3, 4))


def test_int8_linear_matches_the_float_layer() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(5, 96)
    ref = linear(x)
    rel = (layer(x) - ref).norm() / ref.norm()
    assert rel < 1e-2
    assert layer.weight.element_size() == 1


def test_quantised_transformer_stays_close_and_decodes() -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=64, n_layers=2, n_heads=4, vocab_size=50, rope="1d", max_seq_len=32)
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, 50, (3, 12))
    ref = model(tokens)
    replaced = quantize_int8_weight_only(model, include=lambda name, _: name != "output")
    assert replaced == 2 * 5  # per layer: wqkv, wo, w1, w3, w2; the head is excluded
    assert isinstance(model.layers[0].attn.wo, Int8Linear) and type(model.output) is nn.Linear
    out = model(tokens)
    assert (out - ref).norm() / ref.norm() < 2e-2
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    new = generate(model, tokens[:, :4], 6, params=SamplingParams(temperature=0.0))
    assert new.shape == (3, 6)
