"""`genloom.core.nn.decode_layer`: a whole layer's decode step as one persistent kernel with grid barriers."""

from __future__ import annotations

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.nn import decode_layer as dl
from genloom.core.nn.block import Block
from genloom.core.nn.config import TransformerConfig
from genloom.core.nn.transformer import Transformer


def _layer(batch=2, dim=64, heads=4, kv_heads=2, head_dim=16, hidden=96, slots=16, dtype=torch.float32,
           device="cpu", seed=0):  # fmt: skip
    """x, weights (WEIGHT_ORDER), caches of random values."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=device, dtype=dtype)

    weights = (
        rand(dim, scale=0.2, shift=1.0),
        rand((heads + 2 * kv_heads) * head_dim, dim, scale=dim**-0.5),
        rand(dim, heads * head_dim, scale=(heads * head_dim) ** -0.5),
        rand(dim, scale=0.2, shift=1.0),
        rand(2 * hidden, dim, scale=dim**-0.5),
        rand(dim, hidden, scale=hidden**-0.5),
    )
    caches = rand(batch, kv_heads, slots, head_dim), rand(batch, kv_heads, slots, head_dim)
    return rand(batch, 1, dim), weights, caches


def test_reference_is_the_block_of_modules() -> None:
    """The reference equals a `Block` (RMSNorms, fused qkv, SwiGLU) stepping on its KV cache."""
    config = TransformerConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=10, rope="1d",
                               max_seq_len=16, rope_layout="half")  # fmt: skip
    model = Transformer(config).eval()
    model.fuse_projections()
    model.setup_cache(2, 16, static=True)
    block = model.layers[0]
    block.fused_decode_kernels = False
    x, _, _ = _layer()
    pos = torch.tensor([5])
    block.attn.kv_cache.k_cache.normal_()
    block.attn.kv_cache.v_cache.normal_()
    caches = block.attn.kv_cache.k_cache.clone(), block.attn.kv_cache.v_cache.clone()
    cos, sin = model.rope_cos[5:6], model.rope_sin[5:6]
    with torch.no_grad():
        want = block(x, rope=(cos, sin), is_causal=True, input_pos=pos)
        attn, mlp = block.attn, block.mlp
        weights = (block.attn_norm.weight, attn.wqkv.weight, attn.wo.weight, block.mlp_norm.weight,
                   mlp.w13.weight, mlp.w2.weight)  # fmt: skip
        got = dl.decode_layer_reference(
            x, weights, *caches, pos, (cos, sin), eps=(block.attn_norm.eps, block.mlp_norm.eps), scale=attn.scale,
            n_heads=4, rope_layout="half",
        )  # fmt: skip
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(caches[0], block.attn.kv_cache.k_cache, atol=1e-6)


KERNEL_CHECK = """
import torch
from genloom.core.nn import decode_layer as dl
from genloom.core.nn.rope import rope_1d
import importlib.util, sys
spec = importlib.util.spec_from_file_location("t", {path!r})
t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)

cases = (  # rows, dim, heads, kv heads, head size, hidden, programs, pos, rope layout
    (2, 64, 4, 2, 16, 96, 5, 7, "half"),
    (1, 64, 4, 4, 16, 96, 3, 0, "interleaved"),      # slot 0: no cache loop step
    (4, 96, 6, 2, 16, 80, 7, 15, None),              # dims not powers of two, the last slot, no rope
    (3, 64, 2, 1, 32, 128, 64, 9, "interleaved"),    # more programs than outputs of the 64-wide products
)
for rows, dim, heads, kv_heads, head_dim, hidden, programs, pos, layout in cases:
    x, weights, caches = t._layer(rows, dim, heads, kv_heads, head_dim, hidden, slots=16, seed=pos)
    rope = None if layout is None else tuple(r[pos : pos + 1] for r in rope_1d(16, head_dim))
    ref_caches = tuple(c.clone() for c in caches)
    kw = dict(eps=(1e-5, 1e-6), scale=head_dim**-0.5, n_heads=heads, rope_layout=layout or "half")
    want = dl.decode_layer_reference(x, weights, *ref_caches, torch.tensor([pos]), rope, **kw)
    sync = torch.zeros(2, dtype=torch.int32)
    got = dl.decode_layer(x, weights, *caches, torch.tensor([pos]), rope, sync, programs=programs,
                                 staged=True, **kw)
    err = (got - want).abs().max().item()
    assert err < 1e-5, (rows, dim, programs, err)
    for cache, ref in zip(caches, ref_caches):  # k and v come from the kernel's own qkv product
        assert torch.allclose(cache, ref, atol=1e-5), (cache - ref).abs().max()
    assert sync.tolist() == [0, 0]
print("layer kernel equals the reference")
"""


def test_kernel_stages_equal_the_reference_in_the_interpreter(run_triton_interpreted) -> None:
    # the kernel's code stage by stage (the interpreter runs programs one after another, so the fused launch,
    # whose barriers spin, runs on the GPU only): grouped-query heads, uneven chunks, masked tiles, programs
    # without work, rows 1-4, slot 0, no rope; float32 to rounding; the same cache writes
    assert "layer kernel equals the reference" in run_triton_interpreted(KERNEL_CHECK.format(path=__file__))


@pytest.mark.parametrize(("dtype", "rows", "rope"), [("bf16", 2, 1), ("fp32", 4, 2), ("bf16", 1, 0)])
def test_fused_kernel_compiles_for_hopper(
    compile_triton_for_hopper, dtype: str, rows: int, rope: int
) -> None:
    """The fused launch (barriers, prefetches) at LlamaGen-B's sizes on 132 programs compiles for sm_90."""
    pointers = ["x", "y", "attn_norm", "wqkv", "wo", "mlp_norm", "w13", "w2", "k_cache", "v_cache",
                "qkv_buf", "attn_buf", "h_buf", "g_buf"]  # fmt: skip
    signature = {name: f"*{dtype}" for name in pointers}
    signature.update(pos_ptr="*i64", cos_ptr="*fp32", sin_ptr="*fp32", sync="*i32", M="i32", eps_attn="fp32",
                     eps_mlp="fp32", scale="fp32", c_sb="i32", c_sh="i32", c_ss="i32")  # fmt: skip
    order = list(dl._decode_layer_kernel.arg_names)
    signature = {name: signature[name] for name in order if name in signature}
    qkv, out, gate_up, down = (dl._split(3 * 768, 768, 132), dl._split(768, 768, 132),
                               dl._split(2048, 768, 132, tiles=2), dl._split(768, 2048, 132))  # fmt: skip
    constexprs = dict(
        D=768, HID=2048, H=12, HKV=12, DH=64, BLOCK_M=rows, BLOCK_D=1024, BLOCK_DH=64, BLOCK_S=128,
        QKV_CHUNK=qkv[0], QKV_BLOCK=qkv[1], QKV_BK=qkv[2], O_CHUNK=out[0], O_BLOCK=out[1], O_BK=out[2],
        GU_CHUNK=gate_up[0], GU_BLOCK=gate_up[1], GU_BK=gate_up[2], DN_CHUNK=down[0], DN_BLOCK=down[1],
        DN_BK=down[2], ROPE=rope, STAGE=0,
    )  # fmt: skip
    assert len(compile_triton_for_hopper(dl._decode_layer_kernel, signature, constexprs)) > 1000


def test_chunks_cover_every_output_once() -> None:
    """`_split`: programs x chunk covers the outputs, the tile holds the chunk, a chunk's weights ~ a tile."""
    for n, k, programs, tiles in (
        (2304, 768, 132, 1),
        (768, 2048, 132, 1),
        (2048, 768, 132, 2),
        (200, 96, 7, 1),
    ):
        chunk, block, block_k = dl._split(n, k, programs, tiles)
        assert chunk * programs >= n > (chunk - 1) * programs  # the smallest chunk that covers n
        assert block >= chunk and block & (block - 1) == 0 and block < 2 * chunk + 1
        assert block * tiles * block_k <= max(dl.TILE_ELEMENTS, 16 * block * tiles)


def test_bad_inputs_raise_clear_errors() -> None:
    x, weights, caches = _layer()
    pos, sync = torch.tensor([3]), torch.zeros(2, dtype=torch.int32)
    kw = dict(eps=(1e-5, 1e-5), scale=0.25, n_heads=4)
    with pytest.raises(InputError, match=r"x must be \[B, 1, D\]"):
        dl.decode_layer(x.expand(-1, 2, -1), weights, *caches, pos, None, sync, **kw)
    with pytest.raises(InputError, match=r"wo must be \(64, 64\)"):
        dl.decode_layer(x, (*weights[:2], weights[2][:, :32], *weights[3:]), *caches, pos, None, sync, **kw)
    with pytest.raises(InputError, match="w13 is torch.float64 but x is torch.float32"):
        dl.decode_layer(x, (*weights[:4], weights[4].double(), weights[5]), *caches, pos, None, sync, **kw)
    with pytest.raises(InputError, match="not a multiple of"):
        dl.decode_layer(x, weights, *caches, pos, None, sync, **{**kw, "n_heads": 3})
    with pytest.raises(InputError, match="one integer position"):
        dl.decode_layer(x, weights, *caches, pos.float(), None, sync, **kw)
    with pytest.raises(InputError, match="rope_layout must be one of"):
        dl.decode_layer(x, weights, *caches, pos, None, sync, **kw, rope_layout="spiral")
    with pytest.raises(InputError, match=r"rope cos must be this position's row"):
        dl.decode_layer(x, weights, *caches, pos, (torch.ones(2, 8), torch.ones(2, 8)), sync, **kw)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_block_decode_steps_take_it_with_the_modules_results(monkeypatch, count_calls, rows: int) -> None:
    """`Block` one-token steps on the static cache run `decode_layer` (forced on the CPU, where it runs its
    reference): the modules' logits at every step; the prompt call, 5-row steps and layers with biases do not."""
    monkeypatch.setattr(Block, "decode_kernel_devices", ("cpu",))
    calls = count_calls(dl, "decode_layer")
    config = TransformerConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, rope="1d",
                               max_seq_len=32)  # fmt: skip
    model = Transformer(config).eval()
    model.fuse_projections()

    def run(layer: bool, batch: int) -> list[torch.Tensor]:
        monkeypatch.setattr(Block, "fused_decode_layer", layer)
        monkeypatch.setattr(Block, "fused_decode_kernels", layer)
        model.setup_cache(batch, 16, static=True)
        outs = [model(torch.arange(3 * batch).reshape(batch, 3) % 50, input_pos=torch.arange(3))[:, -1]]
        for pos in range(3, 9):
            outs.append(model(outs[-1].argmax(-1, keepdim=True), input_pos=torch.tensor([pos]))[:, -1])
        return outs

    with torch.no_grad():
        for batch in (rows, 5):
            fused, modules = run(True, batch), run(False, batch)
            assert len(calls) == (12 if batch <= 4 else 0)  # 2 layers x 6 one-token steps
            calls.clear()
            for a, b in zip(fused, modules, strict=True):
                assert torch.allclose(a, b, atol=1e-5)
    monkeypatch.setattr(Block, "fused_decode_layer", True)
    monkeypatch.setattr(Block, "fused_decode_kernels", True)
    x = torch.randn(2, 1, 64)
    kwargs = dict(rope=None, mask=None, is_causal=True, input_pos=torch.tensor([3]), block_mask=None)
    assert model.layers[0]._takes_decode_layer(x, kwargs)
    assert not model.layers[0]._takes_decode_layer(x, {**kwargs, "is_causal": False})
    model.layers[0].attn.wo.bias = torch.nn.Parameter(torch.zeros(64))
    assert not model.layers[0]._takes_decode_layer(x, kwargs)


# ---------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_on_cuda_equals_the_reference_over_many_launches(dtype: torch.dtype) -> None:
    """The fused launch with its barriers (one program per SM): the reference's output and cache writes at
    every position of a generation, its counters left zero; inside a CUDA graph too."""
    from genloom.core.nn.rope import rope_1d

    tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    for rows, dim, heads, kv_heads, hidden in (
        (2, 768, 12, 12, 2048),
        (4, 256, 8, 2, 688),
        (1, 128, 4, 4, 256),
    ):
        x, weights, caches = _layer(
            rows, dim, heads, kv_heads, 64, hidden, slots=64, dtype=dtype, device="cuda"
        )
        ref_caches = tuple(c.clone() for c in caches)
        sync = torch.zeros(2, dtype=torch.int32, device="cuda")
        cos, sin = (t.cuda() for t in rope_1d(64, 64))
        kw = dict(eps=(1e-5, 1e-5), scale=0.125, n_heads=heads, rope_layout="interleaved")
        for pos in range(0, 64, 3):
            p, rope = torch.tensor([pos], device="cuda"), (cos[pos : pos + 1], sin[pos : pos + 1])
            want = dl.decode_layer_reference(x, weights, *ref_caches, p, rope, **kw)
            got = dl.decode_layer(x, weights, *caches, p, rope, sync, **kw)
            scale = want.float().abs().max()
            assert (got.float() - want.float()).abs().max() <= tol * scale, (rows, dim, pos)
            assert sync.tolist() == [0, 0]
        for cache, ref in zip(caches, ref_caches, strict=True):
            assert torch.allclose(cache.float(), ref.float(), rtol=tol, atol=tol)
    p = torch.tensor([10], device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = dl.decode_layer(x, weights, *caches, p, None, sync, **kw)
    for pos in (20, 40):
        p.fill_(pos)
        graph.replay()
        want = dl.decode_layer_reference(x, weights, *ref_caches, p, None, **kw)
        assert (out.float() - want.float()).abs().max() <= tol * want.float().abs().max()
    assert sync.tolist() == [0, 0]


@pytest.mark.gpu
def test_compiled_decoder_with_the_layer_kernel_gives_the_eager_tokens(monkeypatch, count_calls) -> None:
    """A compiled float32 decode loop (graphs) runs `decode_layer` in its steps (switched on) and samples the
    eager loop's tokens, greedy and seeded with CFG."""
    from genloom.core.sampling import CompiledDecoder, SamplingParams, generate

    monkeypatch.setattr(Block, "fused_decode_layer", True)
    torch.manual_seed(0)
    config = TransformerConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=300, rope="1d",
                               max_seq_len=96)  # fmt: skip
    model = Transformer(config).cuda().eval()
    prompt, uncond = torch.randint(0, 300, (2, 5), device="cuda"), torch.full((2, 5), 2, device="cuda")
    calls = count_calls(dl, "decode_layer")
    for params, cfg in (
        (SamplingParams(temperature=0.0), None),
        (SamplingParams(temperature=1.0, top_k=20), 2.0),
    ):
        decoder = CompiledDecoder(model, params=params, cfg_scale=cfg)
        for seed in range(2):  # the first call compiles step by step, the second replays the loop graph
            kw = dict(uncond_prompt=uncond) if cfg else {}
            eager = generate(model, prompt, 40, params=params, cfg_scale=cfg,
                             generator=torch.Generator("cuda").manual_seed(seed), **kw)  # fmt: skip
            fast = decoder.generate(prompt, 40, generator=torch.Generator("cuda").manual_seed(seed), **kw)
            assert torch.equal(fast, eager)
    assert calls  # traced into the compiled steps
