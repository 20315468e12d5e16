"""GPU path of genloom.core.nn: the same modules in bf16, under torch.compile + CUDA graphs, FlexAttention."""

from __future__ import annotations

import pytest
import torch

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling.autoregressive import generate
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.speculative import speculative_generate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GREEDY = SamplingParams(temperature=0.0)


def _model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    base = dict(dim=128, n_layers=3, n_heads=8, n_kv_heads=2, vocab_size=97, rope="2d", rope_grid=[8, 8], rope_prefix=1,
                max_seq_len=65)  # fmt: skip
    return Transformer(TransformerConfig(**{**base, **kw})).eval().cuda()


@torch.no_grad()
def _stepwise(model: Transformer, tokens: torch.Tensor, static: bool = False, step=None) -> torch.Tensor:
    model.setup_cache(tokens.shape[0], tokens.shape[1], static=static)
    step = step or (lambda tok, pos: model(tok, input_pos=pos))
    outs = [model(tokens[:, :4], input_pos=torch.arange(4, device="cuda"))]
    for t in range(4, tokens.shape[1]):
        outs.append(step(tokens[:, t : t + 1], torch.tensor([t], device="cuda")).clone())
    model.remove_cache()
    return torch.cat(outs, 1)


def test_cuda_fp32_and_bf16_cached_decoding_match_teacher_forcing() -> None:
    model = _model()
    tokens = torch.randint(0, 97, (4, 40), device="cuda")
    with torch.no_grad():
        full = model(tokens)
    torch.testing.assert_close(_stepwise(model, tokens), full, atol=1e-4, rtol=0)
    model = model.to(torch.bfloat16)
    assert model.rope_cos.dtype == torch.float32
    with torch.no_grad():
        full_bf16 = model(tokens)
    stepped = _stepwise(model, tokens)
    assert stepped.dtype == torch.float32
    scale = full.abs().max()
    assert (full_bf16 - full).abs().max() < 0.05 * scale  # bf16 is close to fp32
    assert (stepped - full_bf16).abs().max() < 0.05 * scale  # and its cached path to its teacher forcing


def test_compiled_cuda_graph_decode_step_equals_eager() -> None:
    model = _model(1)
    tokens = torch.randint(0, 97, (2, 30), device="cuda")
    eager = _stepwise(model, tokens, static=True)

    def step(tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return model(tok, input_pos=pos)

    compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
    torch.testing.assert_close(_stepwise(model, tokens, static=True, step=compiled), eager, atol=1e-4, rtol=0)


def test_compiled_flex_block_causal_equals_sdpa() -> None:
    kw = dict(dim=256, n_heads=4, rope="1d", rope_grid=None, rope_prefix=0, mask="block_causal",
              block_sizes=[1, 4, 9, 16, 25, 9])  # fmt: skip
    sdpa = _model(2, **kw).to(torch.bfloat16)
    flex = _model(2, attn_impl="flex", **kw).to(torch.bfloat16)
    flex.load_state_dict(sdpa.state_dict())
    tokens = torch.randint(0, 97, (2, 64), device="cuda")
    with torch.no_grad():
        reference = sdpa(tokens)
        assert (flex(tokens) - reference).abs().max() < 0.02 * reference.abs().max()


def test_cuda_speculative_greedy_equals_plain_greedy() -> None:
    target, draft = _model(3), _model(4, n_layers=1)
    with torch.no_grad():
        target.output.weight.mul_(30.0)
    prompt = torch.randint(0, 97, (2, 3), device="cuda")
    plain = generate(target, prompt, 40, params=GREEDY)
    assert torch.equal(speculative_generate(target, draft, prompt, 40, gamma=4, params=GREEDY), plain)


def test_compile_decode_generation_equals_eager() -> None:
    model = _model(5)
    with torch.no_grad():
        model.output.weight.mul_(30.0)
    prompt = torch.randint(0, 97, (3, 2), device="cuda")
    eager = generate(model, prompt, 30, params=GREEDY)
    model.compile_decode()
    compiled = generate(model, prompt, 30, params=GREEDY)
    again = generate(model, prompt, 30, params=GREEDY)  # the cache is reused: no re-allocation
    assert model._static
    assert torch.equal(compiled, eager) and torch.equal(again, eager)
