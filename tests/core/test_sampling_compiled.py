"""The compiled decode path: the same tokens as the eager `generate` (greedy and seeded sampling, CFG, EOS,
padded batch buckets), and no recompilation from one call to the next (compiles are counted)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling import CompiledDecoder, SamplingError, SamplingParams, generate


def _lm(seed: int = 0, vocab: int = 37) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab, rope="1d", max_seq_len=48
    )
    return Transformer(cfg).eval()


def _prompts(batch: int, length: int = 5, vocab: int = 37, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.8, top_k=5),
        SamplingParams(temperature=1.2, top_k=10, top_p=0.9),
        SamplingParams(top_p=0.8),
    ],
    ids=["greedy", "plain", "top_k", "top_k_top_p", "top_p"],
)
def test_compiled_equals_eager_token_for_token(params: SamplingParams) -> None:
    model = _lm()
    prompt = _prompts(3)
    eager = generate(model, prompt, 16, params=params, generator=torch.Generator().manual_seed(7))
    decoder = CompiledDecoder(model, params=params, backend=CompileCounter())
    fast = decoder.generate(prompt, 16, generator=torch.Generator().manual_seed(7))
    assert fast.shape == (3, 16)
    assert torch.equal(fast, eager)


def test_compiled_cfg_and_eos_equal_eager() -> None:
    model = _lm(1)
    prompt, uncond = _prompts(2, seed=1), torch.full((2, 5), 3)
    params = SamplingParams(temperature=1.0, top_k=8)
    eager = generate(
        model, prompt, 20, params=params, cfg_scale=2.5, uncond_prompt=uncond, eos_id=4,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    decoder = CompiledDecoder(model, params=params, cfg_scale=2.5, eos_id=4, backend=CompileCounter())
    fast = decoder.generate(prompt, 20, uncond_prompt=uncond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fast, eager)


def test_no_recompilation_across_calls_and_within_a_bucket() -> None:
    model = _lm(2)
    counter = CompileCounter()
    decoder = CompiledDecoder(model, params=SamplingParams(top_k=6), backend=counter)
    decoder.generate(_prompts(3), 12, generator=torch.Generator().manual_seed(0))
    first = counter.frame_count
    assert first >= 1
    # same bucket (3 and 4 rows both run at 4), other prompts, other seed, other length of output
    decoder.generate(_prompts(4, seed=5), 12, generator=torch.Generator().manual_seed(1))
    decoder.generate(_prompts(3, seed=6), 9, generator=torch.Generator().manual_seed(2))
    assert counter.frame_count == first
    decoder.generate(_prompts(5, seed=7), 12)  # bucket 8: one new graph
    assert counter.frame_count == first + 1


def test_padded_rows_do_not_change_the_real_rows() -> None:
    model = _lm(3)
    decoder = CompiledDecoder(model, params=SamplingParams(temperature=0.0), backend=CompileCounter())
    prompt = _prompts(5, seed=9)
    assert decoder.bucket(5) == 8
    together = decoder.generate(prompt, 10)
    alone = decoder.generate(prompt[2:3], 10)
    assert torch.equal(together[2:3], alone)


def test_bad_input_is_refused() -> None:
    model = _lm()
    with pytest.raises(SamplingError, match="uncond_prompt"):
        CompiledDecoder(model, cfg_scale=2.0, backend=CompileCounter()).generate(_prompts(2), 4)
    with pytest.raises(SamplingError, match="largest bucket"):
        CompiledDecoder(model, batch_buckets=(1, 2), backend=CompileCounter()).generate(_prompts(3), 4)
    with pytest.raises(SamplingError, match="positive"):
        CompiledDecoder(model, batch_buckets=(0,))


@pytest.mark.gpu
@pytest.mark.parametrize("graph", ["loop", "step"])
def test_cuda_graphs_sample_the_eager_tokens_on_gpu(graph: str) -> None:
    model = _lm(4).cuda()  # float32: the fused kernels keep every argmax
    prompt, uncond = _prompts(3).cuda(), torch.full((3, 5), 2, device="cuda")
    params = SamplingParams(temperature=1.0, top_k=9)
    decoder = CompiledDecoder(model, params=params, cfg_scale=2.0, graph=graph)
    for seed in range(3):  # loop graph: the first call runs step by step, the next ones replay the capture
        eager = generate(
            model, prompt, 24, params=params, cfg_scale=2.0, uncond_prompt=uncond,
            generator=torch.Generator("cuda").manual_seed(seed),
        )  # fmt: skip
        fast = decoder.generate(
            prompt, 24, uncond_prompt=uncond, generator=torch.Generator("cuda").manual_seed(seed)
        )
        assert torch.equal(fast, eager)
    if graph == "loop":
        assert len(decoder._loops) == 1


def test_guided_steps_limit_guidance_like_llamagen_cfg_interval() -> None:
    model = _lm(5)
    prompt, uncond = _prompts(2, seed=2), torch.full((2, 5), 1)
    params = SamplingParams(temperature=0.0)
    limited = generate(model, prompt, 12, params=params, cfg_scale=4.0, uncond_prompt=uncond, guided_steps=3)
    full = generate(model, prompt, 12, params=params, cfg_scale=4.0, uncond_prompt=uncond)
    assert torch.equal(limited[:, :3], full[:, :3])
    # after the guided steps the conditional model alone continues the guided prefix
    continuation = generate(model, torch.cat([prompt, limited[:, :3]], 1), 9, params=params)
    assert torch.equal(limited[:, 3:], continuation)
    counter = CompileCounter()
    decoder = CompiledDecoder(model, params=params, cfg_scale=4.0, backend=counter)
    assert torch.equal(decoder.generate(prompt, 12, uncond_prompt=uncond, guided_steps=3), limited)
    assert counter.frame_count == 2  # one graph guided, one not
    with pytest.raises(SamplingError, match="guided_steps"):
        generate(model, prompt, 4, guided_steps=2)


def test_kv_buckets_read_only_the_filled_cache_and_match_eager() -> None:
    model = _lm(6)
    prompt = _prompts(2, seed=4)
    params = SamplingParams(temperature=0.9, top_k=7)
    eager = generate(model, prompt, 20, params=params, generator=torch.Generator().manual_seed(5))
    counter = CompileCounter()
    decoder = CompiledDecoder(model, params=params, kv_bucket=8, backend=counter)
    fast = decoder.generate(prompt, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(fast, eager)
    # positions 5..23 are read in buckets of 8 slots: 8, 16, 24 -> three graphs (the cache holds 48)
    assert counter.frame_count == 3
