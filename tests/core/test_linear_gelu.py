"""`genloom.core.nn.linear_gelu`: a GELU layer's up-projection as one Triton GEMM on CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from genloom.core.errors import InputError
from genloom.core.nn import linear_gelu as lg
from genloom.core.nn.config import TransformerConfig
from genloom.core.nn.mlp import MLP


def test_cpu_takes_the_modules_computation() -> None:
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(3, 5, 8, generator=g), torch.randn(12, 8, generator=g), torch.randn(12)
    got = lg.linear_gelu(x, weight, bias, "tanh")
    assert got.shape == (3, 5, 12)
    assert torch.equal(got, F.gelu(x @ weight.T + bias, approximate="tanh"))
    assert torch.equal(lg.linear_gelu(x, weight), F.gelu(x @ weight.T))


def test_bad_input_is_refused_before_any_launch() -> None:
    x, weight = torch.randn(4, 8), torch.randn(6, 8)
    with pytest.raises(InputError, match=r"same K, got \(4, 7\) and \(6, 8\)"):
        lg.linear_gelu(x[:, :7], weight)
    with pytest.raises(InputError, match=r"bias must be \[6\], got \(5,\)"):
        lg.linear_gelu(x, weight, torch.zeros(5))
    with pytest.raises(InputError, match="approximate must be one of"):
        lg.linear_gelu(x, weight, None, "sigmoid")


def test_the_op_counts_the_linears_flops() -> None:
    with FlopCounterMode(display=False) as counter:
        lg.fused_linear_gelu(torch.randn(7, 16), torch.randn(24, 16), torch.zeros(24), False)
    assert counter.get_total_flops() == 2 * 7 * 24 * 16


@pytest.mark.parametrize(
    ("rows", "n", "want"),
    [
        (33792, 2048, (128, 128, 128)),
        (65536, 3072, (128, 256, 64)),
        (72, 512, (64, 32, 64)),
        (5, 512, (64, 32, 64)),
    ],
)
def test_gemm_config_tiles(rows: int, n: int, want: tuple) -> None:
    config = lg.gemm_config(rows, n, 512)
    assert (config.block_m, config.block_n, config.block_k) == want and config.tma


@pytest.mark.gpu
def test_cublas_tanh_route_is_the_tanh_gelu() -> None:
    # torch's _addmm_activation(use_gelu=True) on CUDA: cuBLASLt's epilogue, the tanh approximation (float32,
    # no TF32: equal to F.gelu(..., "tanh") and measurably not the exact GELU)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(256, 32, generator=g, device="cuda")
    weight = 0.3 * torch.randn(48, 32, generator=g, device="cuda")  # outputs ~N(0, 1.7^2): the forms differ
    bias = torch.randn(48, generator=g, device="cuda")  # by up to ~5e-4, near |v| = 2
    got = lg.cublas_gelu_tanh(x, weight, bias)
    assert torch.allclose(got, lg.linear_gelu_reference(x, weight, bias, "tanh"), atol=2e-5)
    assert (got - lg.linear_gelu_reference(x, weight, bias, "none")).abs().max() > 2e-4
    no_bias = F.gelu(x @ weight.T, approximate="tanh")
    assert torch.allclose(lg.cublas_gelu_tanh(x, weight, None), no_bias, atol=2e-5)


def test_mlp_takes_the_tanh_form_for_exact_gelu_only_when_asked(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(lg, "kernel_serves", lambda x, w: True)
    monkeypatch.setattr(lg, "linear_gelu", lambda x, w, b, approximate: seen.append(approximate) or x @ w.T)
    mlp = MLP(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=8, mlp="gelu", mlp_bias=True)
    ).eval()
    with torch.no_grad():
        mlp(torch.randn(2, 3, 16))
        monkeypatch.setattr(MLP, "exact_gelu_as_tanh", True)
        mlp(torch.randn(2, 3, 16))
    assert seen == ["none", "tanh"]


def test_mlp_takes_the_fused_kernel_only_where_it_serves(monkeypatch, count_calls) -> None:
    calls = count_calls(lg, "linear_gelu")
    torch.manual_seed(0)
    mlp = MLP(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=8, mlp="gelu", mlp_bias=True)
    ).eval()
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        want = mlp(x)
        assert not calls  # the CPU: the Linear and the GELU
        monkeypatch.setattr(lg, "kernel_serves", lambda x, w: True)  # as on CUDA; falls back inside on CPU
        assert torch.equal(mlp(x), want) and len(calls) == 1
        monkeypatch.setattr(MLP, "fused_gelu_kernel", False)
        mlp(x)
    assert len(calls) == 1  # switched off


KERNEL_CHECK = """
import torch
from genloom.core.nn.linear_gelu import GemmConfig, linear_gelu_reference, linear_gelu_triton

for seed, (m, n, k, bias, tanh, config) in enumerate((
        (37, 50, 24, True, False, None), (130, 70, 96, False, True, GemmConfig(64, 32, 32, group_m=2, num_warps=4)),
        (5, 16, 8, True, True, None), (200, 33, 40, True, False, GemmConfig(32, 16, 16, group_m=3, num_warps=4)))):
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) / k ** 0.5
    b = torch.randn(n, generator=g) if bias else None
    got = linear_gelu_triton(x, w, b, tanh, config)
    want = linear_gelu_reference(x, w, b, "tanh" if tanh else "none")
    assert got.shape == want.shape and (got - want).abs().max() < 1e-5, (seed, (got - want).abs().max())
    for flatten, subtile in ((True, False), (False, True), (True, True)):
        # the persistent TMA form (4 programs here): loops flattened or not, two-half stores
        tma = GemmConfig(32, 16, 16, group_m=2, num_warps=4, tma=True, flatten=flatten, epilogue_subtile=subtile)
        got = linear_gelu_triton(x[:, :8 * (k // 8)], w[: 8 * (n // 8), : 8 * (k // 8)], None if b is None
                                 else b[: 8 * (n // 8)], tanh, tma)
        want = linear_gelu_reference(x[:, :8 * (k // 8)], w[: 8 * (n // 8), : 8 * (k // 8)], None if b is None
                                     else b[: 8 * (n // 8)], "tanh" if tanh else "none")
        assert (got - want).abs().max() < 1e-5, ("tma", seed, flatten, subtile, (got - want).abs().max())
    for tma in (False, True):  # the exact GELU by the erfc polynomial, both forms
        poly = GemmConfig(32, 16, 16, group_m=2, num_warps=4, tma=tma)
        xs, ws = x[:, :8 * (k // 8)], w[: 8 * (n // 8), : 8 * (k // 8)]
        bs = None if b is None else b[: 8 * (n // 8)]
        got = linear_gelu_triton(xs, ws, bs, False, poly)
        want = linear_gelu_reference(xs.double(), ws.double(), None if bs is None else bs.double())
        assert (got - want).abs().max() < 1e-5, ("poly", seed, tma, (got - want).abs().max())
offset = torch.randn(40 * 24 + 1)[1:].view(40, 24)  # rows not on 16 bytes: copied for TMA
w = torch.randn(16, 24)
assert (linear_gelu_triton(offset, w, None, False) - linear_gelu_reference(offset, w, None)).abs().max() < 1e-5
print("kernel equals the reference")
"""


TAIL_CHECK = """
import torch, triton, triton.language as tl
from genloom.core.nn.linear_gelu import _normal_tail_gelu

@triton.jit
def gelu_of(x, y, n: tl.constexpr):
    i = tl.arange(0, n)
    tl.store(y + i, _normal_tail_gelu(tl.load(x + i)))

v = torch.linspace(-12.0, 12.0, 4096)
got = torch.empty_like(v)
gelu_of[(1,)](v, got, 4096)
exact = v.double() * 0.5 * torch.erfc(-v.double() / 2**0.5)  # no cancellation: float64's own erf form has it
relative = ((got.double() - exact).abs() / exact.abs()).max().item()
assert relative < 1e-4, relative  # float32 0.5 v (1 + erf(v / sqrt 2)) is off by ~100% at v = -8
print("tail", relative)
"""


def test_polynomial_gelu_keeps_relative_accuracy_in_the_tail(run_triton_interpreted) -> None:
    assert "tail" in run_triton_interpreted(TAIL_CHECK)


def test_kernel_equals_the_reference_in_the_interpreter(run_triton_interpreted) -> None:
    # partial row, column and K blocks, grouped row order, with and without bias, exact and tanh GELU; float32
    assert "kernel equals the reference" in run_triton_interpreted(KERNEL_CHECK)


@pytest.mark.parametrize(("dtype", "tanh", "rows"), [("bf16", False, 33792), ("fp16", True, 72)])
def test_kernels_compile_for_hopper(compile_triton_for_hopper, dtype: str, tanh: bool, rows: int) -> None:
    config = lg.gemm_config(rows, 2048, 512)
    tile = {"BLOCK_M": config.block_m, "BLOCK_N": config.block_n, "BLOCK_K": config.block_k,
            "GROUP_M": config.group_m, "STAGES": config.num_stages}  # fmt: skip
    descriptors = {
        "x_desc": f"tensordesc<{dtype}[{config.block_m}, {config.block_k}]>",
        "w_desc": f"tensordesc<{dtype}[{config.block_n}, {config.block_k}]>",
        "y_desc": f"tensordesc<{dtype}[{config.block_m}, {config.block_n}]>",
    }
    persistent = compile_triton_for_hopper(
        lg._linear_gelu_tma_kernel,
        {**descriptors, "b": f"*{dtype}", **dict.fromkeys(["M", "N", "K"], "i32")},
        {"HAS_BIAS": True, "TANH": tanh, "IEEE": False, **tile, "PROGRAMS": 132, "FLATTEN": True,
         "SUBTILE": False},
    )  # fmt: skip
    pointers = compile_triton_for_hopper(
        lg._linear_gelu_kernel,
        {
            **dict.fromkeys(["x", "w", "b", "y"], f"*{dtype}"),
            **dict.fromkeys(["M", "N", "K"], "i32"),
            **dict.fromkeys(["stride_xm", "stride_wn", "stride_ym"], "i32"),
        },  # fmt: skip
        {"HAS_BIAS": True, "TANH": tanh, "IEEE": False, "EVEN_K": True, **tile},
    )
    assert len(persistent) > 1000 and len(pointers) > 1000


def test_wide_two_half_store_form_compiles_for_hopper(compile_triton_for_hopper) -> None:
    # gemm_config's launch for the widest outputs: 128 x 256 tiles stored as two halves
    config = lg.gemm_config(65536, 3072, 768)
    assert config.epilogue_subtile and config.block_n == 256
    tile = {"BLOCK_M": config.block_m, "BLOCK_N": config.block_n, "BLOCK_K": config.block_k,
            "GROUP_M": config.group_m, "STAGES": config.num_stages}  # fmt: skip
    cubin = compile_triton_for_hopper(
        lg._linear_gelu_tma_kernel,
        {
            "x_desc": "tensordesc<bf16[128, 64]>", "w_desc": "tensordesc<bf16[256, 64]>",
            "y_desc": "tensordesc<bf16[128, 128]>", "b": "*bf16", **dict.fromkeys(["M", "N", "K"], "i32"),
        },
        {"HAS_BIAS": True, "TANH": False, "IEEE": False, **tile, "PROGRAMS": 132, "FLATTEN": True,
         "SUBTILE": True},
        num_warps=config.num_warps,
    )  # fmt: skip
    assert len(cubin) > 1000


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("rows", "k", "n", "approximate", "by_cublas"),
    [(33800, 512, 2048, "none", False), (72, 128, 512, "tanh", True), (72, 128, 512, "tanh", False)],
)
def test_kernel_on_cuda_matches_the_modules_and_replays_in_a_graph(
    monkeypatch, count_calls, rows, k, n, approximate, by_cublas
) -> None:  # noqa: ANN001
    monkeypatch.setattr(lg, "TANH_BY_CUBLAS", by_cublas)  # the tanh form: cuBLASLt's epilogue or the kernel
    cublas_calls = count_calls(lg, "cublas_gelu_tanh")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, k, generator=g, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(n, k, generator=g, device="cuda", dtype=torch.bfloat16) / k**0.5
    bias = 0.1 * torch.randn(n, generator=g, device="cuda", dtype=torch.bfloat16)
    exact = F.gelu(x.double() @ weight.double().T + bias.double(), approximate=approximate)
    modules = lg.linear_gelu_reference(x, weight, bias, approximate)
    tanh = approximate == "tanh"
    with torch.no_grad():
        assert lg.kernel_serves(x, weight) == (rows >= lg.MIN_ROWS)
        got = lg.fused_linear_gelu(x, weight, bias, tanh)  # the kernel, whatever the rows
        # as close to the float64 layer as the modules' bf16 (rounded once instead of twice)
        assert (got.double() - exact).abs().max() <= (modules.double() - exact).abs().max() + 1e-3
        compiled = torch.compile(lambda: lg.linear_gelu(x, weight, bias, approximate), fullgraph=True)
        compiled()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = compiled()
        x.mul_(-1.0)  # the graph reads x from the device
        graph.replay()
        assert torch.equal(out, compiled())  # the same code outside the graph, on the new x
    assert bool(cublas_calls) == by_cublas
