"""The compiled decode path: the same tokens as the eager `generate` (greedy and seeded sampling, CFG, EOS,
padded batch buckets, early exit per chunk of steps, which runs fewer steps once every row has ended), and no
recompilation from one call to the next (compiles are counted)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.sampling import CompiledDecoder, SamplingError, SamplingParams, generate
from genloom.core.sampling.autoregressive import DecodeStats


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


# model _lm(1) on _prompts(5, seed=1) under greedy decoding: every row emits token 17 within its first 6
# tokens (rows 0..4 at 5, 4, 1, 2, 1), so with eos 17 a batch can stop long before a budget of 30
_EOS, _FIRST_EOS = 17, (5, 4, 1, 2, 1)


def _passes_with_exit(tokens: torch.Tensor, every: int, *, eos: int = _EOS, first: int = 1) -> int:
    """Forward passes of a run with `exit_every=every` that produced `tokens` [B, budget]: the eager prefill
    (`first=1`; 0 when the first token is a compiled step too) plus the chunks of compiled steps up to the one
    holding the last row's first EOS (the whole budget if a row never ends)."""
    budget, hit = tokens.shape[1], tokens == eos
    if not bool(hit.any(1).all()):
        return budget
    last = int(hit.int().argmax(1).max())
    return min(budget, first + every * max(1, -(-(last + 1 - first) // every)))


def _counting_steps(decoder: CompiledDecoder) -> list[int]:
    """Wrap the decoder's compiled step; returns the list that grows by one per step call."""
    calls: list[int] = []
    step = decoder._step

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return step(*args, **kwargs)

    decoder._step = counted
    return calls


@pytest.mark.parametrize("rows", [(0, 1), (0, 3), (0, 5), (2, 5)], ids=["b1", "b3", "b5", "b3_late_rows"])
def test_early_exit_gives_the_eager_greedy_tokens_and_stops_after_the_chunk_where_all_rows_ended(
    rows: tuple[int, int],
) -> None:
    model = _lm(1)
    prompt = _prompts(5, seed=1)[rows[0] : rows[1]]
    params = SamplingParams(temperature=0.0)
    eager = generate(model, prompt, 30, params=params, eos_id=_EOS)
    full = CompiledDecoder(model, params=params, eos_id=_EOS, backend=CompileCounter())
    early = CompiledDecoder(model, params=params, eos_id=_EOS, backend=CompileCounter(), exit_every=4)
    calls = _counting_steps(early)
    full_stats, early_stats = DecodeStats(), DecodeStats()
    assert torch.equal(full.generate(prompt, 30, stats=full_stats), eager)
    assert torch.equal(early.generate(prompt, 30, stats=early_stats), eager)
    assert full_stats.forward_passes == 30
    # the last row ends at token `last`; chunks hold tokens 1-4, 5-8, ...: run up to the chunk holding `last`
    last = max(_FIRST_EOS[rows[0] : rows[1]])
    chunks = max(1, -(-last // 4))
    assert len(calls) == 4 * chunks < 29
    assert (
        early_stats.forward_passes == early_stats.new_tokens == 1 + 4 * chunks == _passes_with_exit(eager, 4)
    )


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_k=6)],
    ids=["greedy", "top_k"],
)
def test_a_one_token_prompt_is_the_first_compiled_step(params: SamplingParams) -> None:
    """A seq2seq decoder starts from BOS alone: no eager prefill, the first token comes from the compiled step
    (counted), with the eager loop's tokens and seeded samples, and chunks that count it."""
    model = _lm(1)
    prompt = _prompts(4, length=1, seed=3)
    first_eos = generate(model, prompt, 30, params=SamplingParams(temperature=0.0))[:, :8]
    eos = int(first_eos[0, 3])  # a token that ends row 0 at its fourth token (or earlier)
    for exit_every in (None, 3, 5):
        eager = generate(
            model, prompt, 30, params=params, eos_id=eos, generator=torch.Generator().manual_seed(11)
        )
        decoder = CompiledDecoder(
            model, params=params, eos_id=eos, backend=CompileCounter(), exit_every=exit_every
        )
        calls = _counting_steps(decoder)
        stats = DecodeStats()
        got = decoder.generate(prompt, 30, generator=torch.Generator().manual_seed(11), stats=stats)
        assert torch.equal(got, eager)
        passes = 30 if exit_every is None else _passes_with_exit(eager, exit_every, eos=eos, first=0)
        assert len(calls) == stats.forward_passes == stats.new_tokens == passes
        if exit_every is not None and bool((eager == eos).any(1).all()):
            assert passes % exit_every == 0 or passes == 30  # whole chunks from token 0 on


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_k=6)],
    ids=["greedy", "top_k"],
)
def test_a_guided_one_token_prompt_enters_the_first_compiled_step_as_embeddings(
    params: SamplingParams,
) -> None:
    """With CFG the conditional and unconditional prompt rows differ, so the first step takes both rows'
    embeddings (one eager lookup) instead of the token feed: no eager forward, the eager loop's tokens."""
    model = _lm(1)
    prompt, uncond = _prompts(3, length=1, seed=4), torch.full((3, 1), 2)
    eager = generate(
        model, prompt, 9, params=params, cfg_scale=2.0, uncond_prompt=uncond,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    decoder = CompiledDecoder(model, params=params, cfg_scale=2.0, backend=CompileCounter())
    steps = _counting_steps(decoder)
    for _ in range(2):
        got = decoder.generate(prompt, 9, uncond_prompt=uncond, generator=torch.Generator().manual_seed(5))
        assert torch.equal(got, eager)
    assert len(steps) == 18  # 9 compiled steps a call: the first token too (an eager prefill would leave 8)


@pytest.mark.parametrize("exit_every", [1, 3, 7, 40])
def test_early_exit_keeps_the_seeded_samples_of_the_full_loop(exit_every: int) -> None:
    model = _lm(1)
    prompt = _prompts(5, seed=1)
    params = SamplingParams(temperature=0.7, top_k=5)
    full = CompiledDecoder(model, params=params, eos_id=_EOS, backend=CompileCounter())
    early = CompiledDecoder(
        model, params=params, eos_id=_EOS, backend=CompileCounter(), exit_every=exit_every
    )
    passes = []
    for seed in range(3):
        eager = generate(
            model, prompt, 25, params=params, eos_id=_EOS, generator=torch.Generator().manual_seed(seed)
        )
        want = full.generate(prompt, 25, generator=torch.Generator().manual_seed(seed))
        stats = DecodeStats()
        got = early.generate(prompt, 25, generator=torch.Generator().manual_seed(seed), stats=stats)
        assert torch.equal(want, eager)
        assert torch.equal(got, want)
        assert stats.forward_passes == _passes_with_exit(eager, exit_every)
        passes.append(stats.forward_passes)
    assert min(passes) < 25 if exit_every < 24 else passes == [25, 25, 25]  # seed 2 ends early


@pytest.mark.parametrize(
    ("params", "null"),
    [(SamplingParams(temperature=0.0), 3), (SamplingParams(temperature=0.5, top_k=3), _EOS)],
    ids=["greedy", "top_k"],  # greedy: every call ends at token 5; top_k: seed 3 ends at token 9
)
def test_early_exit_with_cfg_guided_steps_and_kv_buckets_equals_eager(
    params: SamplingParams, null: int
) -> None:
    model = _lm(1)
    prompt, uncond = _prompts(5, seed=1), torch.full((5, 5), null)
    options = dict(params=params, cfg_scale=1.2, eos_id=_EOS)
    decoder = CompiledDecoder(model, **options, kv_bucket=8, exit_every=3, backend=CompileCounter())
    passes = []
    for seed in range(4):
        eager = generate(
            model, prompt, 24, **options, uncond_prompt=uncond, guided_steps=5,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        stats = DecodeStats()
        fast = decoder.generate(
            prompt, 24, uncond_prompt=uncond, guided_steps=5, generator=torch.Generator().manual_seed(seed),
            stats=stats,
        )  # fmt: skip
        assert torch.equal(fast, eager)
        assert stats.forward_passes == _passes_with_exit(eager, 3)
        passes.append(stats.forward_passes)
    assert min(passes) < 24


def test_early_exit_compiles_nothing_new_from_call_to_call() -> None:
    model = _lm(1)
    counter = CompileCounter()
    decoder = CompiledDecoder(
        model, params=SamplingParams(temperature=0.0), eos_id=_EOS, backend=counter, exit_every=4
    )
    prompts = _prompts(5, seed=1)
    decoder.generate(prompts[:3], 20)
    first = counter.frame_count
    assert first >= 1
    # same bucket (3 and 4 rows both run at 4), other rows (so another exit step), other budget
    decoder.generate(prompts[1:5], 20)
    decoder.generate(prompts[2:5], 13)
    decoder.generate(prompts[:3], 20, stats=DecodeStats())
    assert counter.frame_count == first


def test_early_exit_needs_an_eos_and_a_positive_chunk() -> None:
    model = _lm()
    with pytest.raises(SamplingError, match="eos_id"):
        CompiledDecoder(model, exit_every=4, backend=CompileCounter())
    for bad in (0, -2, 2.0, True):
        with pytest.raises(SamplingError, match="exit_every"):
            CompiledDecoder(model, eos_id=3, exit_every=bad, backend=CompileCounter())


@pytest.mark.gpu
@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, top_k=5)],
    ids=["greedy", "top_k"],
)
def test_early_exit_loop_graphs_give_the_eager_tokens_on_gpu(params: SamplingParams) -> None:
    model = _lm(1).cuda()  # float32: the fused kernels keep every argmax
    prompts = _prompts(5, seed=1).cuda()
    full = CompiledDecoder(model, params=params, eos_id=_EOS)
    early = CompiledDecoder(model, params=params, eos_id=_EOS, exit_every=4)
    # first call of a bucket: step by step (compiling); then the captured chunk graphs are replayed
    for seed, (start, stop) in enumerate([(0, 3), (0, 3), (1, 5), (2, 5), (0, 1), (0, 1), (0, 5), (0, 5)]):
        prompt = prompts[start:stop]
        eager = generate(
            model, prompt, 30, params=params, eos_id=_EOS, generator=torch.Generator("cuda").manual_seed(seed)
        )
        want = full.generate(prompt, 30, generator=torch.Generator("cuda").manual_seed(seed))
        stats = DecodeStats()
        got = early.generate(prompt, 30, generator=torch.Generator("cuda").manual_seed(seed), stats=stats)
        assert torch.equal(want, eager)
        assert torch.equal(got, eager)
        assert stats.forward_passes == _passes_with_exit(eager, 4)
    assert len(early._loops) == 3  # buckets 4, 1 and 8, each captured once and replayed
    assert all(len(loop.graphs) == 8 for loop in early._loops.values())  # 29 steps: 7 chunks of 4, one of 1
    # a one-token prompt (a seq2seq decoder's BOS): every token from the graphs, the first one included
    for seed in range(3):
        prompt = prompts[:2, :1]
        eager = generate(
            model, prompt, 30, params=params, eos_id=_EOS, generator=torch.Generator("cuda").manual_seed(seed)
        )
        stats = DecodeStats()
        got = early.generate(prompt, 30, generator=torch.Generator("cuda").manual_seed(seed), stats=stats)
        assert torch.equal(got, eager)
        assert stats.forward_passes == _passes_with_exit(eager, 4, first=0)
    assert max(len(loop.graphs) for loop in early._loops.values()) == 8  # 30 steps from token 0: 8 chunks


@pytest.mark.gpu
@pytest.mark.parametrize("graph", ["loop", "step"])
def test_cuda_graphs_sample_the_eager_tokens_on_gpu(graph: str) -> None:
    model = _lm(4).cuda()  # float32: the fused kernels keep every argmax
    prompt, uncond = _prompts(3).cuda(), torch.full((3, 5), 2, device="cuda")
    params = SamplingParams(temperature=1.0, top_k=9)
    decoder = CompiledDecoder(model, params=params, cfg_scale=2.0, graph=graph)
    for seed in range(3):  # loop graph: the first call runs step by step, the next ones replay the capture
        eager_gen, fast_gen = (
            torch.Generator("cuda").manual_seed(seed),
            torch.Generator("cuda").manual_seed(seed),
        )
        eager = generate(
            model, prompt, 24, params=params, cfg_scale=2.0, uncond_prompt=uncond, generator=eager_gen
        )
        fast = decoder.generate(prompt, 24, uncond_prompt=uncond, generator=fast_gen)
        assert torch.equal(fast, eager)
        # the loop graph draws inside the capture: the caller's generator still advances as the eager loop's
        assert torch.equal(fast_gen.get_state(), eager_gen.get_state())
    for seed in range(2):  # no generator: the default one, drawn from and advanced the same way
        torch.cuda.manual_seed(seed)
        eager = generate(model, prompt, 24, params=params, cfg_scale=2.0, uncond_prompt=uncond)
        eager_state = torch.cuda.get_rng_state()
        torch.cuda.manual_seed(seed)
        assert torch.equal(decoder.generate(prompt, 24, uncond_prompt=uncond), eager)
        assert torch.equal(torch.cuda.get_rng_state(), eager_state)
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


def test_a_one_token_prompt_without_a_known_vocabulary_keeps_the_eager_prefill() -> None:
    class Wrapped(torch.nn.Module):  # a model with no `config`: the logits' width is unknown before a pass
        def __init__(self, inner: Transformer) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return self.inner(*args, **kwargs)

        def setup_cache(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            self.inner.setup_cache(*args, **kwargs)

        def truncate_cache(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            self.inner.truncate_cache(*args, **kwargs)

    model = _lm(1)
    prompt = _prompts(2, length=1, seed=3)
    params = SamplingParams(temperature=0.0)
    decoder = CompiledDecoder(Wrapped(model), params=params, backend=CompileCounter(), cache_step=8)
    calls = _counting_steps(decoder)
    assert torch.equal(decoder.generate(prompt, 6), generate(model, prompt, 6, params=params))
    assert len(calls) == 5  # the first token from the eager prefill


def test_a_decoder_compiles_past_dynamos_default_recompile_limit() -> None:
    """A guided one-token prompt compiles two step variants per batch bucket (the first step's embeddings,
    then tokens): six buckets are twelve variants, more than dynamo's default limit of 8, which made the
    ninth fail with FailOnRecompileLimitHit; the decoder raises the limit while it steps, and restores it."""
    model = _lm()
    decoder = CompiledDecoder(
        model, params=SamplingParams(top_k=5), cfg_scale=2.0, cache_step=8, backend=CompileCounter()
    )
    limit = torch._dynamo.config.recompile_limit
    for batch in (1, 2, 3, 5, 9, 17):
        prompt = _prompts(batch, length=1, seed=batch)
        eager = generate(model, prompt, 3, params=decoder.params, cfg_scale=2.0,
                         uncond_prompt=torch.zeros_like(prompt), generator=torch.Generator().manual_seed(batch))  # fmt: skip
        got = decoder.generate(
            prompt, 3, uncond_prompt=torch.zeros_like(prompt), generator=torch.Generator().manual_seed(batch)
        )
        assert torch.equal(got, eager)
    assert torch._dynamo.config.recompile_limit == limit
