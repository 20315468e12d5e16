"""`genloom.core.nn.padded_attention`: attention under a key-padding mask, one Triton kernel on CUDA."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from genloom.core.nn import Transformer, TransformerConfig
from genloom.core.nn import attention as attention_module
from genloom.core.nn.attention import Attention
from genloom.core.nn.padded_attention import (
    KeyPadding,
    key_padded_attention,
    launch_shape,
    padded_attention,
    padded_attention_reference,
)


def _by_hand(q, k, v, padding: KeyPadding, scale: float) -> torch.Tensor:
    """Masked softmax attention written out in float64; a row with nothing to attend gives zeros."""
    group = q.shape[1] // k.shape[1]
    keys, values = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    scores = q.double() @ keys.transpose(-1, -2) * scale
    allowed = padding.dense(q.shape[2]).expand_as(scores)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    return weights @ values


def test_dense_form_is_the_padding_and_the_diagonal() -> None:
    valid = torch.tensor([[True, False, True], [False, False, True]])
    assert torch.equal(KeyPadding(valid).dense(2), valid[:, None, None, :])
    with_self = KeyPadding(valid, self_diagonal=True).dense(3)[:, 0]
    assert with_self.shape == (2, 3, 3)
    assert torch.equal(with_self[1], torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 1]], dtype=torch.bool))


def test_cpu_takes_sdpa_with_the_dense_mask() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=g) for _ in range(3))
    padding = KeyPadding(torch.arange(9)[None, :] < torch.tensor([[9], [4]]), self_diagonal=True)
    got = padded_attention(q, k, v, padding, 0.25)
    assert torch.equal(got, padded_attention_reference(q, k, v, padding, 0.25))
    assert torch.allclose(got.double(), _by_hand(q, k, v, padding, 0.25), atol=1e-5)


def test_bad_shapes_are_refused_before_any_launch() -> None:
    from genloom.core.errors import InputError

    q, k = torch.randn(2, 4, 6, 16), torch.randn(2, 2, 5, 16)
    with pytest.raises(InputError, match=r"padding.valid must be \[2 or 1, 5\]"):
        padded_attention(q, k, k, KeyPadding(torch.ones(2, 6, dtype=torch.bool)), 0.25)
    with pytest.raises(InputError, match="k must be"):
        padded_attention(
            q,
            torch.randn(2, 3, 5, 16),
            torch.randn(2, 3, 5, 16),
            KeyPadding(torch.ones(2, 5, dtype=torch.bool)),
            0.25,
        )
    with pytest.raises(InputError, match="k, v"):
        padded_attention(q, k, k[:, :, :4], KeyPadding(torch.ones(2, 5, dtype=torch.bool)), 0.25)


def test_the_op_counts_the_flops_sdpa_would() -> None:
    q, k, v = torch.randn(2, 7, 4, 16), torch.randn(2, 5, 2, 16), torch.randn(2, 5, 2, 16)
    with FlopCounterMode(display=False) as counter:
        key_padded_attention(q, k, v, torch.ones(2, 5, dtype=torch.bool), 0.25, False)
    assert counter.get_total_flops() == 2 * (
        2 * 2 * 4 * 7 * 5 * 16
    )  # q k^T and p v: 2 B H Lq Lk D each, as SDPA


def _bidirectional(layers: int = 2) -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig(
        dim=32, n_layers=layers, n_heads=4, vocab_size=50, max_seq_len=16, mask="bidirectional"
    )
    return Transformer(config).eval()


@pytest.mark.parametrize("kernel_runs", [True, False])
def test_transformer_with_key_padding_equals_the_dense_mask(monkeypatch, kernel_runs: bool) -> None:
    # where the kernel would run (faked here: the CPU then falls back inside padded_attention) the layers get a
    # KeyPadding, elsewhere the dense mask built once; either way the dense-mask results
    monkeypatch.setattr("genloom.core.nn.transformer.kernel_runs_on", lambda x: kernel_runs)
    model = _bidirectional()
    tokens = torch.randint(0, 50, (3, 11))
    valid = torch.arange(11)[None, :] < torch.tensor([[11], [6], [1]])
    dense = (valid[:, None, None, :] | torch.eye(11, dtype=torch.bool)).expand(3, 1, 11, 11)
    plan = model._plan_attention(
        torch.arange(11), True, False, None, None, None, valid, 3, padded=kernel_runs
    )
    assert isinstance(plan[0], KeyPadding) == kernel_runs
    assert torch.equal(plan[0].dense(11) if kernel_runs else plan[0], dense)
    with torch.no_grad():
        planned = model.features(tokens, key_padding_mask=valid)
        explicit = model.features(tokens, mask=dense)
    assert torch.equal(planned, explicit)


def test_padded_kernel_flag_keeps_the_dense_path(monkeypatch, count_calls) -> None:
    monkeypatch.setattr("genloom.core.nn.transformer.kernel_runs_on", lambda x: True)
    calls = count_calls(attention_module, "padded_attention")
    model = _bidirectional(layers=1)
    valid = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        model.features(torch.zeros(1, 5, dtype=torch.long), key_padding_mask=valid)
        assert len(calls) == 1  # the planned KeyPadding reaches the padded path
        monkeypatch.setattr(Attention, "padded_kernel", False)
        model.features(torch.zeros(1, 5, dtype=torch.long), key_padding_mask=valid)
    assert len(calls) == 1  # switched off: the dense mask, planned once


def test_training_plans_the_dense_mask_once(monkeypatch, count_calls) -> None:
    # with autograd recording through the layers the kernel will not run: the planner builds the dense mask for
    # all layers instead of handing each a KeyPadding to expand
    monkeypatch.setattr("genloom.core.nn.transformer.kernel_runs_on", lambda x: True)
    calls = count_calls(attention_module, "padded_attention")
    model = _bidirectional().train()
    model.features(torch.zeros(1, 5, dtype=torch.long), key_padding_mask=torch.ones(1, 5, dtype=torch.bool))
    assert not calls


@pytest.mark.parametrize(("q_len", "head_dim", "want"), [(528, 64, (64, 32, 4, 3)), (16, 32, (16, 32, 4, 3))])
def test_launch_shape(q_len: int, head_dim: int, want: tuple) -> None:
    pytest.importorskip("triton")
    assert launch_shape(q_len, head_dim) == want


KERNEL_CHECK = """
import torch
from genloom.core.nn.padded_attention import KeyPadding, padded_attention_reference, padded_attention_triton

for seed, (batch, heads, kv_heads, q_len, k_len, dim, diagonal) in enumerate((
        (2, 4, 4, 72, 72, 32, True), (3, 4, 2, 20, 13, 48, False), (1, 2, 2, 130, 130, 64, True),
        (2, 2, 1, 5, 70, 16, False))):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, q_len, heads, dim, generator=g)
    k, v = (torch.randn(batch, k_len, kv_heads, dim, generator=g) for _ in range(2))
    valid = torch.rand(batch, k_len, generator=g) > 0.3
    valid[:, 0] = True
    padding = KeyPadding(valid, diagonal)
    got = padded_attention_triton(q, k, v, valid, dim ** -0.5, diagonal)
    want = padded_attention_reference(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), padding, dim ** -0.5)
    assert got.shape == q.shape and (got - want.transpose(1, 2)).abs().max() < 1e-5, (seed, got.shape)
q = torch.randn(1, 4, 1, 16)
nothing = padded_attention_triton(q, q, q, torch.zeros(1, 4, dtype=torch.bool), 0.25, False)
assert torch.equal(nothing, torch.zeros_like(q))
print("kernel equals the reference")
"""


def test_kernel_equals_the_reference_in_the_interpreter(run_triton_interpreted) -> None:
    # grouped-query heads, head sizes that are not powers of two (masked lanes), partial query and key blocks,
    # the diagonal rule, a row with nothing to attend (zeros); float32 to rounding
    assert "kernel equals the reference" in run_triton_interpreted(KERNEL_CHECK)


@pytest.mark.parametrize(("dtype", "diagonal"), [("*bf16", True), ("*fp16", False)])
def test_kernel_compiles_for_hopper(compile_triton_for_hopper, dtype: str, diagonal: bool) -> None:
    from genloom.core.nn import padded_attention as pa

    names = ["q", "k", "v", "valid", "out"]
    strides = [f"stride_{t}{d}" for t in "qkvo" for d in "bhl"] + ["stride_mb"]
    scalars = ["num_heads", "kv_group", "q_len", "k_len"]
    block_m, block_n, _, _ = pa.launch_shape(528, 64)
    cubin = compile_triton_for_hopper(
        pa._padded_attention_kernel,
        {
            **{n: dtype for n in names},
            "valid": "*i1",
            **dict.fromkeys(strides + scalars, "i32"),
            "scale_log2": "fp32",
        },
        {"HEAD_DIM": 64, "BLOCK_D": 64, "BLOCK_M": block_m, "BLOCK_N": block_n, "SELF_DIAGONAL": diagonal},
    )
    assert len(cubin) > 1000


@pytest.mark.gpu
@pytest.mark.parametrize(
    "shape", [(2, 8, 528, 528, 64, True), (2, 8, 528, 64, 64, False), (1, 4, 17, 17, 32, True)]
)
def test_kernel_on_cuda_matches_sdpa_and_replays_in_a_graph(shape: tuple) -> None:
    batch, heads, q_len, k_len, dim, diagonal = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, q_len, heads, dim, generator=g, device="cuda", dtype=torch.bfloat16).transpose(
        1, 2
    )
    k, v = (
        torch.randn(batch, k_len, heads, dim, generator=g, device="cuda", dtype=torch.bfloat16).transpose(
            1, 2
        )
        for _ in range(2)
    )
    valid = (
        torch.arange(k_len, device="cuda")[None, :]
        < torch.tensor([[k_len], [k_len // 3]], device="cuda")[:batch]
    )
    padding = KeyPadding(valid, diagonal)
    exact = _by_hand(q, k, v, padding, dim**-0.5)
    sdpa = padded_attention_reference(q, k, v, padding, dim**-0.5)
    with torch.no_grad():
        got = padded_attention(q, k, v, padding, dim**-0.5)
        # as good as SDPA's own bf16 kernels against the float64 attention
        assert (got.double() - exact).abs().max() <= 1.5 * (sdpa.double() - exact).abs().max() + 1e-3
        compiled = torch.compile(lambda: padded_attention(q, k, v, padding, dim**-0.5), fullgraph=True)
        compiled()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = compiled()
        valid[-1, : k_len // 2] = True  # the graph reads the flags from the device
        graph.replay()
        assert torch.equal(out, padded_attention(q, k, v, padding, dim**-0.5))
