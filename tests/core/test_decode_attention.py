"""`genloom.core.nn.decode_attention`: one decode step's attention with the cache write inside, one kernel."""

from __future__ import annotations

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.nn.decode_attention import decode_attention, decode_attention_reference


def _step(batch=2, heads=4, kv_heads=2, dim=48, slots=37, pos=20, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    q, k, v = rand(batch, heads, 1, dim), rand(batch, kv_heads, 1, dim), rand(batch, kv_heads, 1, dim)
    k_cache, v_cache = rand(batch, kv_heads, slots, dim), rand(batch, kv_heads, slots, dim)
    return q, k, v, k_cache, v_cache, torch.tensor([pos], device=device)


def _by_hand(q, k, v, k_cache, v_cache, pos, scale):
    """Softmax attention over slots 0..pos written out in float64, slot pos taken from k, v."""
    keys = torch.cat([k_cache[:, :, :pos], k], 2).double()
    values = torch.cat([v_cache[:, :, :pos], v], 2).double()
    group = q.shape[1] // k_cache.shape[1]
    keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
    weights = (q.double() @ keys.transpose(-1, -2) * scale).softmax(-1)
    return weights @ values


@pytest.mark.parametrize("pos", [0, 20, 36])
def test_reference_writes_the_slot_and_attends_to_the_filled_ones(pos: int) -> None:
    q, k, v, k_cache, v_cache, input_pos = _step(pos=pos)
    before = k_cache.clone()
    want = _by_hand(q, k, v, k_cache, v_cache, pos, 0.3)
    got = decode_attention(q, k, v, k_cache, v_cache, input_pos, 0.3)  # CPU: the torch reference
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert torch.equal(k_cache[:, :, pos : pos + 1], k) and torch.equal(v_cache[:, :, pos : pos + 1], v)
    others = torch.ones(k_cache.shape[2], dtype=torch.bool)
    others[pos] = False
    assert torch.equal(k_cache[:, :, others], before[:, :, others])  # no other slot touched


KERNEL_CHECK = """
import torch
from genloom.core.nn import decode_attention as da
from genloom.core.nn.rope import rope_1d

for batch, heads, kv_heads, dim, pos in ((2, 4, 2, 48, 0), (2, 4, 2, 48, 15), (2, 4, 2, 48, 36),
                                         (1, 3, 3, 64, 17), (3, 8, 1, 32, 33)):
    g = torch.Generator().manual_seed(pos)
    rand = lambda *s: torch.randn(*s, generator=g)
    q, k, v = rand(batch, heads, 1, dim), rand(batch, kv_heads, 1, dim), rand(batch, kv_heads, 1, dim)
    k_cache, v_cache = rand(batch, kv_heads, 37, dim), rand(batch, kv_heads, 37, dim)
    cos, sin = (t[pos : pos + 1] for t in rope_1d(64, dim))
    for rope, layout in ((None, "interleaved"), ((cos, sin), "interleaved"), ((cos, sin), "half")):
        ref_k, ref_v = k_cache.clone(), v_cache.clone()
        caches = k_cache.clone(), v_cache.clone()
        want = da.decode_attention_reference(q, k, v, ref_k, ref_v, torch.tensor([pos]), 0.125, rope, layout)
        # 16 slots a loop step: several steps over 37 slots, a partial last one
        got = da.decode_attention_triton(q, k, v, *caches, torch.tensor([pos]), 0.125, rope, layout, block_n=16)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (pos, layout, (got - want).abs().max())
        assert torch.allclose(caches[0], ref_k, atol=1e-6) and torch.equal(caches[1], ref_v), "cache writes differ"
        strided = q.transpose(1, 2).contiguous().transpose(1, 2)  # heads not outermost: strides honoured
        again = da.decode_attention_triton(strided, k, v, *caches, torch.tensor([pos]), 0.125, rope, layout)
        assert torch.allclose(again, want, rtol=1e-4, atol=1e-5)
    if pos == 17:  # the rotation happened: without it the result differs
        plain = da.decode_attention_reference(q, k, v, k_cache.clone(), v_cache.clone(), torch.tensor([pos]), 0.125)
        assert not torch.allclose(plain, want, rtol=1e-2, atol=1e-3)
print("kernel equals the reference")
"""


def test_kernel_equals_the_reference_in_the_interpreter(run_triton_interpreted) -> None:
    # grouped-query heads, a head size that is not a power of two (masked lanes), slot 0 (no loop step), the
    # last slot, several loop steps with a partial one; float32 to rounding; the same cache writes
    assert "kernel equals the reference" in run_triton_interpreted(KERNEL_CHECK)


@pytest.mark.parametrize(
    ("dtype", "scale", "rope"),
    [("*bf16", "fp32", 1), ("*fp32", "fp32", 0), ("*bf16", "fp64", 0), ("*bf16", "fp32", 2)],
)  # torch.compile's launcher may pass the float scale as fp64: the loop must keep float32 types
def test_kernel_compiles_for_hopper(compile_triton_for_hopper, dtype: str, scale: str, rope: int) -> None:
    from genloom.core.nn import decode_attention as da

    pointers = dict.fromkeys(["q_ptr", "k_ptr", "v_ptr", "kc_ptr", "vc_ptr", "out_ptr"], dtype)
    strides = dict.fromkeys(
        ["q_sb", "q_sh", "k_sb", "k_sh", "v_sb", "v_sh", "c_sb", "c_sh", "c_ss", "o_sb", "o_sh"], "i64"
    )
    cubin = compile_triton_for_hopper(
        da._decode_attention_kernel,
        {**pointers, "pos_ptr": "*i64", "cos_ptr": "*fp32", "sin_ptr": "*fp32", **strides, "scale": scale},
        {"GROUP": 1, "D": 64, "BLOCK_D": 64, "BLOCK_N": da.BLOCK_N, "ROPE": rope},
    )
    assert len(cubin) > 1000


def test_bad_input_is_refused() -> None:
    q, k, v, k_cache, v_cache, pos = _step()
    with pytest.raises(InputError, match=r"q must be \[B, H, 1, D\]"):
        decode_attention(q.expand(-1, -1, 2, -1), k, v, k_cache, v_cache, pos, 0.1)
    with pytest.raises(InputError, match="not a multiple of"):
        decode_attention(q[:, :3], k, v, k_cache, v_cache, pos, 0.1)
    with pytest.raises(InputError, match=r"k must be \(2, 2, 1, 48\)"):
        decode_attention(q, k[:, :1], v, k_cache, v_cache, pos, 0.1)
    with pytest.raises(InputError, match="v_cache must match"):
        decode_attention(q, k, v, k_cache, v_cache[:, :, :5], pos, 0.1)
    with pytest.raises(InputError, match="one integer position"):
        decode_attention(q, k, v, k_cache, v_cache, pos.float(), 0.1)


def test_compiles_with_no_graph_break() -> None:
    q, k, v, k_cache, v_cache, pos = _step()
    explained = torch._dynamo.explain(lambda *a: decode_attention(*a, 0.2))(q, k, v, k_cache, v_cache, pos)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kernel_on_cuda_equals_the_reference_and_replays_in_a_graph(dtype: torch.dtype) -> None:
    from genloom.core.nn.rope import rope_1d

    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    cos, sin = (t[200:201].cuda() for t in rope_1d(257, 64))
    for layout in ("interleaved", "half"):  # the rotation inside the kernel
        q, k, v, k_cache, v_cache, pos = _step(batch=2, heads=12, kv_heads=4, dim=64, slots=257, pos=200,
                                               dtype=dtype, device="cuda")  # fmt: skip
        ref_k, ref_v = k_cache.clone(), v_cache.clone()
        want = decode_attention_reference(q, k, v, ref_k, ref_v, pos, 0.125, (cos, sin), layout)
        got = decode_attention(q, k, v, k_cache, v_cache, pos, 0.125, (cos, sin), layout)
        assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)
        assert torch.allclose(k_cache.float(), ref_k.float(), rtol=tol, atol=tol) and torch.equal(
            v_cache, ref_v
        )
    q, k, v, k_cache, v_cache, pos = _step(batch=2, heads=12, kv_heads=12, dim=64, slots=257, pos=200,
                                           dtype=dtype, device="cuda")  # fmt: skip
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    want = decode_attention_reference(q, k, v, ref_k, ref_v, pos, 0.125)
    got = decode_attention(q, k, v, k_cache, v_cache, pos, 0.125)
    assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
    step = torch.compile(lambda p: decode_attention(q, k, v, k_cache, v_cache, p, 0.125), fullgraph=True)
    step(pos)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(pos)
    pos.fill_(256)  # the graph reads the position from the device: another slot, no recapture
    graph.replay()
    ref_k[:, :, 256:257], ref_v[:, :, 256:257] = k, v
    want = _by_hand(q, k, v, ref_k, ref_v, 256, 0.125)
    assert torch.allclose(out.double(), want, rtol=tol, atol=tol)
    assert torch.equal(k_cache[:, :, 256:257], k)


@pytest.mark.parametrize("static", [True, False])
def test_transformer_decode_steps_take_it_with_the_masked_sdpa_results(
    monkeypatch, count_calls, static: bool
) -> None:
    from genloom.core.nn import attention
    from genloom.core.nn.config import TransformerConfig
    from genloom.core.nn.transformer import Transformer

    torch.manual_seed(0)
    config = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, rope="1d", max_seq_len=40
    )
    model = Transformer(config).eval()
    prompt = torch.randint(0, 50, (3, 6))
    calls = count_calls(attention, "decode_attention")

    def run(kernel: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(Transformer, "one_query_kernel", kernel)
        model.setup_cache(3, 24, static=static)
        outs = [model(prompt, input_pos=torch.arange(6))[:, -1]]  # the prompt: 6 queries, no kernel
        token = outs[-1].argmax(-1, keepdim=True)
        for pos in range(6, 14):
            outs.append(model(token, input_pos=torch.tensor([pos]))[:, -1])
            token = outs[-1].argmax(-1, keepdim=True)
        return outs

    with torch.no_grad():
        fused, plain = run(True), run(False)
    assert len(calls) == 2 * 8  # every layer of every one-token step, none for the prompt
    for a, b in zip(fused, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_other_masks_keep_sdpa(count_calls) -> None:
    from genloom.core.nn import attention
    from genloom.core.nn.config import TransformerConfig
    from genloom.core.nn.transformer import Transformer

    calls = count_calls(attention, "decode_attention")
    for mask, extra in (("prefix", {"prefix_len": 3}), ("causal", {})):
        config = TransformerConfig(
            dim=32, n_layers=1, n_heads=4, vocab_size=50, mask=mask, max_seq_len=20, **extra
        )
        model = Transformer(config).eval()
        model.setup_cache(2, 20, static=True)
        with torch.no_grad():
            model(torch.randint(0, 50, (2, 4)), input_pos=torch.arange(4))
            padding = torch.ones(2, 20, dtype=torch.bool)
            kwargs = {"key_padding_mask": padding} if mask == "causal" else {}
            model(torch.randint(0, 50, (2, 1)), input_pos=torch.tensor([4]), **kwargs)
    assert calls == []  # a prefix mask and a key padding mask are planned as SDPA masks


def test_the_op_rotates_as_the_reference_and_traces_with_its_layout_argument() -> None:
    """The registered op (what CUDA calls go through; off CUDA it runs the reference) takes the rotation and
    its layout by name, eagerly and inside a full-graph compile."""
    from genloom.core.nn import decode_attention as da
    from genloom.core.nn.rope import rope_1d

    q, k, v, k_cache, v_cache, pos = _step(batch=2, heads=4, kv_heads=2, dim=32, slots=16, pos=5)
    cos, sin = (t[5:6] for t in rope_1d(16, 32))
    want = decode_attention_reference(q, k, v, k_cache.clone(), v_cache.clone(), pos, 0.2, (cos, sin), "half")
    plain = decode_attention_reference(q, k, v, k_cache.clone(), v_cache.clone(), pos, 0.2)
    op = torch.ops.genloom_core.decode_attention
    got = op(q, k, v, k_cache.clone(), v_cache.clone(), pos, cos, sin, 0.2, "half")
    traced = torch.compile(
        lambda kc, vc: da._decode_attention_op(q, k, v, kc, vc, pos, cos, sin, 0.2, "half"), fullgraph=True
    )(k_cache.clone(), v_cache.clone())
    assert torch.allclose(got, want) and torch.allclose(traced, want)
    assert not torch.allclose(want, plain, atol=1e-3)  # the rotation took effect
