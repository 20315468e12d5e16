"""Decode kernels (norm + product, product + residual, norm + SwiGLU for <= 16 rows): the Triton kernels through
Triton's interpreter against the torch references, each launch config compiled for sm_90, input checks, the
ops' CPU path and traceability, and (GPU) bf16 results, torch.compile without graph breaks, CUDA graphs."""

from __future__ import annotations

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.nn import decode_kernels as dk
from genloom.core.nn.block import Block
from genloom.core.nn.config import TransformerConfig

# LlamaGen-B's products (dim 768, SwiGLU hidden 2048, vocab 16,384): (kernel, N or H, K)
LLAMAGEN_B_PRODUCTS = [
    ("rms_norm_linear", 2304, 768),  # attention qkv with its input norm
    ("rms_norm_linear", 16384, 768),  # final norm + vocab head
    ("linear_residual", 768, 768),  # attention output projection + residual
    ("linear_residual", 768, 2048),  # MLP down projection + residual
    ("rms_norm_swiglu", 2048, 768),  # MLP norm + gate/up + SiLU-multiply
]

# The interpreted checks: every row count the kernels take, K and N off the block sizes (K=96 / N=200),
# LlamaGen-B at a quarter width (dim 192, hidden 512), forced configs with masked K steps and partial
# blocks, leading dims, a strided x, biases; float32 to 1e-4 and float16 to its rounding.
INTERPRETER_CHECK = """
import torch

from genloom.core.nn import decode_kernels as dk

KERNEL = {kernel!r}
g = torch.Generator().manual_seed(0)


def rel_err(out, ref):
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def case(rows, n, k, dtype=torch.float32, config=None, bias=False, lead=None, strided=False, scale=1.0):
    x = torch.randn(rows + 3 if strided else rows, k + 5 if strided else k, generator=g) * scale
    x = x[:rows, 2 : k + 2] if strided else x
    if lead is not None:
        x = x.reshape(*lead, k)
    norm_weight = torch.rand(k, generator=g) + 0.5
    out_rows = 2 * n if KERNEL == "rms_norm_swiglu" else n
    weight = torch.randn(out_rows, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if bias else None
    residual = torch.randn(*x.shape[:-1], n, generator=g)
    x, norm_weight, weight, residual = (t.to(dtype) for t in (x, norm_weight, weight, residual))
    b = None if b is None else b.to(dtype)
    if KERNEL == "rms_norm_linear":
        ref = dk.rms_norm_linear_reference(x, norm_weight, 1e-5, weight, b)
        out = dk.rms_norm_linear_triton(x, norm_weight, 1e-5, weight, b, config=config)
    elif KERNEL == "linear_residual":
        ref = dk.linear_residual_reference(x, weight, residual, b)
        out = dk.linear_residual_triton(x, weight, residual, b, config=config)
    else:
        ref = dk.rms_norm_swiglu_reference(x, norm_weight, 1e-5, weight)
        out = dk.rms_norm_swiglu_triton(x, norm_weight, 1e-5, weight, config=config)
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, ref.shape, out.dtype)
    return rel_err(out, ref)


worst = 0.0
has_bias = KERNEL != "rms_norm_swiglu"
for rows in (1, 2, 5, 16):
    for n, k in ((200, 96), (576, 192), (192, 192), (192, 512), (512, 192)):
        worst = max(worst, case(rows, n, k, bias=has_bias and rows == 2))
    worst = max(worst, case(rows, 200, 96, config=dk.KernelConfig(32, 64)))  # 2 K steps, the 2nd masked
    worst = max(worst, case(rows, 200, 96, config=dk.KernelConfig(64, 128)))  # K in one masked step
    worst = max(worst, case(rows, 20, 40))  # K below one block of 16: masked on both axes
assert worst < 1e-4, worst
worst = max(case(2, 200, 96, lead=(2, 1)), case(5, 200, 96, strided=True), case(1, 1, 16))
worst = max(worst, case(2, 200, 96, scale=3e-3))  # mean(x^2) ~ eps: where eps goes shows
assert worst < 1e-4, worst
# float16 (the interpreter's dots cannot take bfloat16): the rounding of each eager op's output
half = max(case(rows, 200, 96, dtype=torch.float16) for rows in (1, 2, 16))
assert half < (1e-3 if KERNEL == "linear_residual" else 5e-3), half
print("interpreted kernel equals the reference", worst, half)
"""


@pytest.mark.parametrize("kernel", ["rms_norm_linear", "linear_residual", "rms_norm_swiglu"])
def test_kernel_equals_the_reference_in_the_interpreter(run_triton_interpreted, kernel: str) -> None:
    assert "equals the reference" in run_triton_interpreted(INTERPRETER_CHECK.format(kernel=kernel))


# The other kernel forms through the interpreter, with the helpers above: the no-dot GEMV for 1-4 rows (M_PAD
# 1 / 2 / 4, a padding row at 3), masked K steps and blocks of fewer than 16 outputs; deterministic split-K
# (dot and no-dot) where K is not a multiple of SPLIT_K x BLOCK_K (the last splits get a masked step, or
# none); called twice (the arrival counters must be left at zero), float16 to its rounding.
FORMS_CHECK = (
    INTERPRETER_CHECK[: INTERPRETER_CHECK.index("worst = 0.0")]
    + """
C = dk.KernelConfig
worst = 0.0
for rows in (1, 2, 3, 4):
    worst = max(worst, case(rows, 40, 64, config=C(8, 32, dot=False)))  # two full K steps
worst = max(worst, case(2, 40, 96, config=C(16, 64, num_warps=2, dot=False), bias=KERNEL != "rms_norm_swiglu"))
worst = max(worst, case(1, 20, 40, config=C(4, 16, dot=False)))  # K = 40: 3 steps, the last masked
splits = [
    (2, 40, 96, C(16, 16, split_k=4)),  # 6 steps -> 2 per split; split 3 has none
    (3, 40, 96, C(32, 64, split_k=2)),  # split 1: one masked step of 32 columns
    (2, 24, 200, C(8, 16, split_k=8, dot=False)),  # 13 steps -> 2 per split: 192..199 masked, split 7 none
    (4, 24, 100, C(8, 32, split_k=2, num_warps=8, dot=False)),
]
for rows, n, k, config in splits:  # each twice on the same inputs: a counter not reset would show
    g.manual_seed(rows)
    first = case(rows, n, k, config=config)
    g.manual_seed(rows)
    assert case(rows, n, k, config=config) == first, config
    worst = max(worst, first)
counters = dk._COUNTERS[torch.device("cpu")]
assert int(counters.abs().sum()) == 0  # every split-K launch left its counters at zero
assert worst < 1e-4, worst
half = max(case(2, 40, 96, dtype=torch.float16, config=c) for c in (C(16, 32, dot=False), C(16, 32, split_k=2)))
assert half < (1e-3 if KERNEL == "linear_residual" else 5e-3), half
try:
    case(5, 40, 64, config=C(16, 32, dot=False))
except Exception as error:  # noqa: BLE001
    assert "at most 4 rows" in str(error), error
else:
    raise AssertionError("the no-dot form took 5 rows")
print("kernel forms equal the reference", worst, half)
"""
)


@pytest.mark.parametrize("kernel", ["rms_norm_linear", "linear_residual", "rms_norm_swiglu"])
def test_kernel_forms_equal_the_reference_in_the_interpreter(run_triton_interpreted, kernel: str) -> None:
    assert "kernel forms equal the reference" in run_triton_interpreted(FORMS_CHECK.format(kernel=kernel))


# ---------------------------------------------------------------------------------------------- sm_90
def _signature(kernel: str, dtype: str) -> tuple[dict[str, str], list[str]]:
    """The kernel's argument types and which arguments a launch sees 16-divisible / 16-aligned (what Triton
    specialises on: every pointer from torch, K and the strides for these shapes)."""
    pointers = {
        "rms_norm_linear": ["x", "norm_weight", "w", "bias", "y"],
        "linear_residual": ["x", "w", "bias", "residual", "y"],
        "rms_norm_swiglu": ["x", "norm_weight", "w", "y"],
    }[kernel]
    ints = {
        "rms_norm_linear": ["M", "N", "K", "stride_xm", "stride_wn"],
        "linear_residual": ["M", "N", "K", "stride_xm", "stride_wn", "stride_rm"],
        "rms_norm_swiglu": ["M", "H", "K", "stride_xm", "stride_wn"],
    }[kernel]
    signature = {**dict.fromkeys(pointers, f"*{dtype}"), **dict.fromkeys(ints, "i32")}
    if kernel != "linear_residual":
        signature["eps"] = "fp32"
    signature.update(workspace="*fp32", counters="*i32")
    return signature, [name for name in signature if name != "M" and name != "eps"]


def _compile_for_hopper(
    kernel: str, n: int, k: int, dtype: torch.dtype, config: dk.KernelConfig | None = None, rows: int = 2
) -> tuple[object, dk.KernelConfig]:
    """Compile `kernel` for `rows` rows with `config` (by default the one `kernel_config` gives (n, k)) to an
    sm_90 cubin, as a launch would."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    type_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    blocks = 2 if kernel == "rms_norm_swiglu" else 1
    config = config or dk.kernel_config(n, k, dtype.itemsize, weight_blocks=blocks)
    signature, aligned = _signature(kernel, type_name)
    constexprs = dict(
        BLOCK_M=dk._block_m(config, kernel, rows),
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        EVEN_K=k % config.block_k == 0,
        IEEE=dtype == torch.float32,
        DOT=config.dot,
        SPLIT_K=config.split_k,
    )
    if kernel != "rms_norm_swiglu":
        constexprs = {"HAS_BIAS": False, **constexprs}
    names = list(signature)
    source = ASTSource(
        fn=getattr(dk, f"_{kernel}_kernel"),
        signature={**signature, **dict.fromkeys(constexprs, "constexpr")},
        constexprs=constexprs,
        attrs={(names.index(name),): [["tt.divisibility", 16]] for name in aligned},
    )
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    try:
        return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options), config
    except FileNotFoundError as missing:  # no ptxas in this Triton build
        pytest.skip(f"Triton's CUDA toolchain is absent: {missing}")


@pytest.mark.parametrize(
    ("kernel", "n", "k", "dtype"),
    [(*product, dtype) for product in LLAMAGEN_B_PRODUCTS for dtype in (torch.bfloat16, torch.float32)]
    + [("linear_residual", 200, 96, torch.float32)],
)
def test_kernel_configs_compile_for_hopper(kernel: str, n: int, k: int, dtype: torch.dtype) -> None:
    compiled, config = _compile_for_hopper(kernel, n, k, dtype)
    assert len(compiled.asm["cubin"]) > 1000
    assert compiled.metadata.shared <= 227 * 1024, compiled.metadata.shared  # an H100 SM's shared memory
    ptx = compiled.asm["ptx"]
    if dtype == torch.bfloat16:
        assert "mma.sync" in ptx or "wgmma" in ptx  # tensor cores (float32 "ieee" dots run on FMAs)
    # weight tiles streamed by 16-byte asynchronous copies, pipelined over the K loop
    assert "cp.async.cg.shared.global" in ptx and ", 0x10," in ptx
    assert config.block_n >= 16 and config.block_k >= 16


# Representative configs of the forms benchmarks/decode_kernel_sweep.py times: no-dot for 1 / 2 / 4 rows
# (8 / 2 warps, blocks of 8 outputs, a masked K), split-K of both forms, 8 warps, 5 stages
KERNEL_FORMS = [
    ("rms_norm_linear", 2304, 768, dk.KernelConfig(16, 256, 4, 3, dot=False), 2),
    ("rms_norm_linear", 16384, 768, dk.KernelConfig(64, 128, 8, 5), 2),
    ("rms_norm_linear", 2304, 768, dk.KernelConfig(8, 512, 2, 3, split_k=2, dot=False), 1),
    ("linear_residual", 768, 2048, dk.KernelConfig(16, 256, 4, 4, split_k=4), 16),
    ("linear_residual", 768, 2048, dk.KernelConfig(8, 256, 8, 2, split_k=8, dot=False), 4),
    ("linear_residual", 768, 768, dk.KernelConfig(32, 512, 4, 3, dot=False), 2),  # 768 = 1.5 steps
    ("rms_norm_swiglu", 2048, 768, dk.KernelConfig(8, 256, 2, 3, dot=False), 2),
    ("rms_norm_swiglu", 2048, 768, dk.KernelConfig(16, 128, 8, 4, split_k=2), 2),
]


@pytest.mark.parametrize(("kernel", "n", "k", "config", "rows"), KERNEL_FORMS)
def test_kernel_forms_compile_for_hopper(
    kernel: str, n: int, k: int, config: dk.KernelConfig, rows: int
) -> None:
    compiled, _ = _compile_for_hopper(kernel, n, k, torch.bfloat16, config, rows)
    assert len(compiled.asm["cubin"]) > 1000
    assert compiled.metadata.shared <= 227 * 1024, compiled.metadata.shared
    assert compiled.metadata.num_warps == config.num_warps
    ptx = compiled.asm["ptx"]
    assert ("mma.sync" in ptx or "wgmma" in ptx) == config.dot  # the no-dot form runs on FMAs
    if config.dot:  # 16-byte weight loads: asynchronous copies to shared memory, or straight to registers
        assert "cp.async.cg.shared.global" in ptx and ", 0x10," in ptx
    else:
        assert "ld.global.L1::evict_first.L2::cache_hint.v4.b32" in ptx
    if config.split_k > 1:  # one acq_rel arrival at GPU scope after a barrier; partials read from L2
        assert "atom.global.gpu.acq_rel.add" in ptx and "bar.sync" in ptx
        assert "ld.global.cg" in ptx
    else:
        assert "atom." not in ptx


@pytest.mark.parametrize("kernel", ["rms_norm_linear", "linear_residual", "rms_norm_swiglu"])
def test_torch_compile_sees_only_the_output_written(monkeypatch, kernel: str) -> None:
    # inductor reads which arguments a user kernel stores to from its TTIR; when that fails it assumes every
    # input is written and would copy the weights on each call. TTIR needs a target only: a stub sm_90 driver.
    triton = pytest.importorskip("triton")
    from torch._higher_order_ops.triton_kernel_wrap import identify_mutated_tensors
    from triton.backends.compiler import GPUTarget

    class Hopper:
        def get_current_target(self) -> GPUTarget:
            return GPUTarget("cuda", 90, 32)

    monkeypatch.setattr(triton.runtime.driver, "_active", Hopper())
    signature, _ = _signature(kernel, "bf16")
    kwargs = {
        name: torch.empty(64, dtype=torch.bfloat16)
        if kind.startswith("*")
        else (1e-5 if kind == "fp32" else 64)
        for name, kind in signature.items()
    }
    constexprs = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=64, EVEN_K=True, IEEE=False, DOT=True, SPLIT_K=1)
    if kernel != "rms_norm_swiglu":
        constexprs["HAS_BIAS"] = True
    kernel_fn = getattr(dk, f"_{kernel}_kernel")
    assert identify_mutated_tensors(kernel_fn, {**kwargs, **constexprs}, {}) == ["y"]
    split = {**constexprs, "DOT": False, "BLOCK_M": 2, "SPLIT_K": 4}  # the workspace and counters written too
    assert sorted(identify_mutated_tensors(kernel_fn, {**kwargs, **split}, {})) == [
        "counters",
        "workspace",
        "y",
    ]


def test_kernel_config_rule_for_llamagen_b() -> None:
    configs = {
        (kernel, n, k): dk.kernel_config(n, k, 2, weight_blocks=2 if kernel == "rms_norm_swiglu" else 1)
        for kernel, n, k in LLAMAGEN_B_PRODUCTS
    }
    assert configs[("rms_norm_linear", 2304, 768)] == dk.KernelConfig(16, 256, 4, 3)  # 144 programs
    assert configs[("rms_norm_linear", 16384, 768)] == dk.KernelConfig(64, 256, 4, 3)  # 256 programs
    assert configs[("linear_residual", 768, 768)] == dk.KernelConfig(16, 256, 4, 4)  # 48 programs
    assert configs[("linear_residual", 768, 2048)] == dk.KernelConfig(16, 512, 4, 4)
    assert configs[("rms_norm_swiglu", 2048, 768)] == dk.KernelConfig(16, 256, 4, 3)  # 128 programs
    assert dk.kernel_config(200, 96, 4) == dk.KernelConfig(16, 32, 4, 4)  # 96 = 3 x 32: no K mask
    assert dk.kernel_config(10, 7, 4).block_k == 16  # below one block: masked
    # two rows (batch 1 with CFG): the H100 sweep's winners (no split-K: compiled ops cannot take it), no-dot
    # blocks of 8 outputs where there are enough of them; the dot form for 768 outputs and the vocabulary head
    two = {
        (kernel, n, k): dk.kernel_config(
            n, k, 2, weight_blocks=2 if kernel == "rms_norm_swiglu" else 1, rows=2
        )
        for kernel, n, k in LLAMAGEN_B_PRODUCTS
    }
    nodot = dict(block_n=8, block_k=256, num_warps=8, num_stages=1, dot=False)
    assert two[("rms_norm_linear", 2304, 768)] == dk.KernelConfig(**nodot)  # 288 programs
    assert two[("rms_norm_swiglu", 2048, 768)] == dk.KernelConfig(**nodot)  # 256 programs
    assert two[("linear_residual", 768, 768)] == dk.KernelConfig(16, 256, 4, 4)  # 96 blocks of 8: dot
    assert two[("linear_residual", 768, 2048)] == dk.KernelConfig(16, 512, 4, 4)
    assert two[("rms_norm_linear", 16384, 768)] == dk.KernelConfig(64, 256, 4, 2)  # 2,048 blocks of 8: dot
    assert all(config.split_k == 1 for config in two.values())
    assert dk.kernel_config(768, 768, 2, rows=5) == dk.kernel_config(768, 768, 2)  # > 4 rows: the dot rule
    assert dk.kernel_config(1024, 40, 4, rows=1) == dk.KernelConfig(
        8, 64, 8, 1, dot=False
    )  # small K: one step


def test_kernel_config_splits_k_only_where_the_caller_holds_counters() -> None:
    """`split=True` (counters given): few outputs over >= 2 K steps take the no-dot split-K form, the
    sweep's winners for LlamaGen-B's two residual products; nothing else changes."""
    split = dict(block_n=8, block_k=256, num_warps=8, num_stages=1, dot=False)
    assert dk.kernel_config(768, 768, 2, rows=2, split=True) == dk.KernelConfig(**split, split_k=2)  # 3 steps
    assert dk.kernel_config(768, 2048, 2, rows=2, split=True) == dk.KernelConfig(**split, split_k=8)
    # LlamaGen-XL's 1,280 outputs (160 blocks of 8): split too, 4 over 5 steps of 256, 8 over 14
    assert dk.kernel_config(1280, 1280, 2, rows=2, split=True) == dk.KernelConfig(**split, split_k=4)
    assert dk.kernel_config(1280, 3584, 2, rows=2, split=True) == dk.KernelConfig(**split, split_k=8)
    # many outputs (4,096 and more: 512 blocks of 8), many rows, one K step: unchanged
    for n, k, rows in ((4096, 768, 2), (768, 768, 16), (768, 200, 2)):
        assert dk.kernel_config(n, k, 2, rows=rows, split=True) == dk.kernel_config(n, k, 2, rows=rows)


SPLIT_COUNTERS_CHECK = """
import torch
from genloom.core.nn import decode_kernels as dk

for rows, n, k in ((2, 24, 600), (1, 40, 2048), (4, 8, 520)):
    g = torch.Generator().manual_seed(n)
    x, w, r = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(rows, n, generator=g)
    counters = torch.zeros(16, dtype=torch.int32)
    config = dk.kernel_config(n, k, 4, rows=rows, split=True)
    assert config.split_k > 1 and not config.dot, config
    got = dk._linear_residual_launch(x, w, r, None, None, counters)
    want = dk.linear_residual_reference(x, w, r)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4), (rows, n, k, (got - want).abs().max())
    assert int(counters.abs().sum()) == 0  # every n-block's last program set its counter back
print("split-K with the caller's counters equals the reference")
"""


def test_split_k_with_the_callers_counters_in_the_interpreter(run_triton_interpreted) -> None:
    out = run_triton_interpreted(SPLIT_COUNTERS_CHECK)
    assert "split-K with the caller's counters equals the reference" in out


def test_split_counters_are_checked_and_the_cpu_op_ignores_them() -> None:
    x, _, weight, residual = _operands()
    counters = torch.zeros(4, dtype=torch.int32)
    assert torch.equal(dk.linear_residual(x, weight, residual, counters=counters), residual + x @ weight.T)
    config = dk.KernelConfig(8, 16, split_k=2, dot=False)
    with pytest.raises(InputError, match="int32 counters for 3 blocks"):
        dk._split_k_buffers(config, x, 3, 2, 1, torch.zeros(2, dtype=torch.int32))


# ---------------------------------------------------------------------------------------------- checks
def _operands(rows: int = 2, n: int = 24, k: int = 32, dtype: torch.dtype = torch.float32):
    x = torch.randn(rows, k, dtype=dtype)
    return (
        x,
        torch.rand(k, dtype=dtype) + 0.5,
        torch.randn(n, k, dtype=dtype),
        torch.randn(rows, n, dtype=dtype),
    )


def test_bad_inputs_raise_clear_errors() -> None:
    x, norm_weight, weight, residual = _operands()
    with pytest.raises(InputError, match="expects K = 32"):
        dk.rms_norm_linear(x[:, :31], norm_weight, 1e-5, weight)
    with pytest.raises(InputError, match="norm_weight must be \\[32\\]"):
        dk.rms_norm_linear(x, norm_weight[:16], 1e-5, weight)
    with pytest.raises(InputError, match="bias must be \\[24\\]"):
        dk.linear_residual(x, weight, residual, torch.zeros(23))
    with pytest.raises(InputError, match="residual must be \\(2, 24\\)"):
        dk.linear_residual(x, weight, residual[:, :20])
    with pytest.raises(InputError, match="weight is torch.bfloat16 but x is torch.float32"):
        dk.linear_residual(x, weight.bfloat16(), residual)
    with pytest.raises(InputError, match="bfloat16, float16 or float32, got torch.float64"):
        dk.rms_norm_linear(x.double(), norm_weight.double(), 1e-5, weight.double())
    with pytest.raises(InputError, match="even row count"):
        dk.rms_norm_swiglu(x, norm_weight, 1e-5, weight[:23])
    with pytest.raises(InputError, match="nn.Linear layout"):
        dk.rms_norm_linear(x, norm_weight, 1e-5, weight[0])


def test_triton_path_refuses_more_than_16_rows() -> None:
    pytest.importorskip("triton")
    x, norm_weight, weight, residual = _operands(rows=17)
    with pytest.raises(InputError, match="at most 16 rows, got 17"):
        dk.rms_norm_linear_triton(x, norm_weight, 1e-5, weight)
    with pytest.raises(InputError, match="at most 16 rows, got 17"):
        dk.linear_residual_triton(x, weight, residual)
    with pytest.raises(InputError, match="at most 16 rows, got 34"):
        dk.rms_norm_swiglu_triton(x.expand(2, 17, 32), norm_weight, 1e-5, weight)
    with pytest.raises(InputError, match="expects K = 32"):
        dk.linear_residual_triton(x[:4, :8], weight, residual[:4])
    no_dot = dk.KernelConfig(16, 32, dot=False)
    with pytest.raises(InputError, match="no-dot form .* at most 4 rows, got 5"):
        dk.linear_residual_triton(x[:5], weight, residual[:5], config=no_dot)


def test_kernel_config_checks_its_values() -> None:
    assert dk.KernelConfig(16, 256) == dk.KernelConfig(16, 256, 4, 3, 1, True)  # defaults: dot, no split
    assert dk.KernelConfig(1, 16, dot=False).block_n == 1  # the no-dot form takes blocks under 16
    with pytest.raises(InputError, match="block_k must be a power of two, got 96"):
        dk.KernelConfig(16, 96)
    with pytest.raises(InputError, match="dot form needs block_n >= 16"):
        dk.KernelConfig(8, 64)
    with pytest.raises(InputError, match="num_warps must be a power of two"):
        dk.KernelConfig(16, 64, num_warps=3)
    with pytest.raises(InputError, match="split_k must be >= 1"):
        dk.KernelConfig(16, 64, split_k=0)


# ---------------------------------------------------------------------------------------------- CPU ops
def _block(dim: int = 64) -> Block:
    config = TransformerConfig(
        dim=dim, n_layers=1, n_heads=4, vocab_size=None, max_seq_len=16, mlp="swiglu", norm="rmsnorm",
        fused_qkv=True, rope="none",
    )  # fmt: skip
    block = Block(config).eval()
    for norm in (block.attn_norm, block.mlp_norm):
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    block.mlp.fuse_gate()
    return block


def test_references_are_the_modules_products() -> None:
    block = _block()
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        qkv = block.attn.wqkv(block.attn_norm(x))
        mlp = x + block.mlp(block.mlp_norm(x))
        out = dk.rms_norm_linear(x, block.attn_norm.weight, block.attn_norm.eps, block.attn.wqkv.weight)
        hidden = dk.rms_norm_swiglu(x, block.mlp_norm.weight, block.mlp_norm.eps, block.mlp.w13.weight)
        fused_mlp = dk.linear_residual(hidden, block.mlp.w2.weight, x)
    assert torch.equal(out, qkv)
    assert torch.equal(fused_mlp, mlp)  # the [W1; W3] layout of MLP.fuse_gate, silu on the first half


def test_ops_run_the_reference_off_cuda_and_for_many_rows() -> None:
    for rows in (3, 40):  # 40 rows: over the kernels' limit, the op still answers
        x, norm_weight, weight, residual = _operands(rows=rows)
        bias = torch.randn(24)
        assert torch.equal(
            dk.rms_norm_linear(x, norm_weight, 1e-5, weight, bias),
            dk.rms_norm_linear_reference(x, norm_weight, 1e-5, weight, bias),
        )
        assert torch.equal(
            dk.linear_residual(x, weight, residual), dk.linear_residual_reference(x, weight, residual)
        )
        assert torch.equal(
            dk.rms_norm_swiglu(x, norm_weight, 1e-5, weight),
            dk.rms_norm_swiglu_reference(x, norm_weight, 1e-5, weight),
        )


def _fused_block_mlp(block: Block):  # noqa: ANN202
    """A pre-norm layer's products through the ops (attention replaced by its projections, for tracing)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        qkv = dk.rms_norm_linear(x, block.attn_norm.weight, block.attn_norm.eps, block.attn.wqkv.weight)
        x = dk.linear_residual(qkv[..., : x.shape[-1]], block.attn.wo.weight, x)
        hidden = dk.rms_norm_swiglu(x, block.mlp_norm.weight, block.mlp_norm.eps, block.mlp.w13.weight)
        return dk.linear_residual(hidden, block.mlp.w2.weight, x)

    return run


def test_ops_trace_without_graph_breaks() -> None:
    run = _fused_block_mlp(_block())
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        explained = torch._dynamo.explain(run)(x)
        assert explained.graph_break_count == 0 and explained.graph_count == 1
        ops = [node.target for graph in explained.graphs for node in graph.graph.nodes]
        assert sum("genloom_core" in str(target) for target in ops) == 4, ops
        torch._dynamo.reset()
        compiled = torch.compile(run, fullgraph=True, backend="aot_eager")  # traced into by AOT autograd
        torch.testing.assert_close(compiled(x), run(x))


# ---------------------------------------------------------------------------------------------- GPU
def _gpu_case(kernel: str, rows: int, n: int, k: int, dtype: torch.dtype):  # noqa: ANN202
    g = torch.Generator(device="cuda").manual_seed(rows)
    x = torch.randn(rows, k, device="cuda", generator=g).to(dtype)
    norm_weight = (torch.rand(k, device="cuda", generator=g) + 0.5).to(dtype)
    weight = (
        torch.randn((2 if kernel == "rms_norm_swiglu" else 1) * n, k, device="cuda", generator=g) * k**-0.5
    )
    residual = torch.randn(rows, n, device="cuda", generator=g).to(dtype)
    weight = weight.to(dtype)
    if kernel == "rms_norm_linear":
        args = (x, norm_weight, 1e-5, weight)
    elif kernel == "linear_residual":
        args = (x, weight, residual)
    else:
        args = (x, norm_weight, 1e-5, weight)
    return getattr(dk, kernel), getattr(dk, f"{kernel}_reference"), args


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@pytest.mark.gpu
@pytest.mark.parametrize(("kernel", "n", "k"), LLAMAGEN_B_PRODUCTS)
def test_kernels_on_cuda_match_the_reference(kernel: str, n: int, k: int) -> None:
    for dtype, tolerance in ((torch.bfloat16, 2e-2), (torch.float32, 1e-4)):
        for rows in (1, 2, 5, 16):
            op, reference, args = _gpu_case(kernel, rows, n, k, dtype)
            out = getattr(dk, f"{kernel}_triton")(*args)
            assert out.dtype == dtype
            assert _rel_err(out, reference(*args)) < tolerance, (dtype, rows)
            assert torch.equal(op(*args), out)  # the op takes the Triton path


@pytest.mark.gpu
@pytest.mark.parametrize(("kernel", "n", "k", "config", "rows"), KERNEL_FORMS)
def test_kernel_forms_on_cuda_match_the_reference(
    kernel: str, n: int, k: int, config: dk.KernelConfig, rows: int
) -> None:
    launch = getattr(dk, f"{kernel}_triton")
    _, reference, args = _gpu_case(kernel, rows, n, k, torch.bfloat16)  # float32: in the interpreter
    out = launch(*args, config=config)
    assert _rel_err(out, reference(*args)) < 2e-2
    for _ in range(5):  # split-K: the same bits whichever program arrives last
        assert torch.equal(launch(*args, config=config), out)
    if config.split_k > 1:
        assert int(dk._COUNTERS[torch.device("cuda", torch.cuda.current_device())].abs().sum()) == 0


@pytest.mark.gpu
def test_compiled_ops_have_no_graph_breaks_and_replay_in_a_cuda_graph() -> None:
    from torch._inductor.utils import run_and_get_code

    block = _block(768).cuda().to(torch.bfloat16)
    run = _fused_block_mlp(block)
    x = torch.randn(2, 1, 768, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        explained = torch._dynamo.explain(run)(x)
        assert explained.graph_break_count == 0
        torch._dynamo.reset()
        compiled = torch.compile(run, fullgraph=True)
        out, code = run_and_get_code(compiled, x)
        assert "_rms_norm_swiglu_kernel" in "\n".join(code)  # inductor launches the Triton kernel itself
        assert _rel_err(out, run(x)) < 1e-3  # the same kernels (bitwise equal unless inductor re-lays x)
        static_x = x.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = compiled(static_x)
        static_x.copy_(torch.randn_like(x))
        graph.replay()
        assert _rel_err(static_out, run(static_x)) < 1e-3


@pytest.mark.gpu
def test_compiled_split_k_product_with_counters_replays_in_a_cuda_graph() -> None:
    """The output projection with the caller's counters (split K) compiled and captured: the reference, the
    counters zero after every replay."""
    x = torch.randn(2, 1, 768, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(768, 2048, device="cuda", dtype=torch.bfloat16) / 45
    hidden = torch.randn(2, 1, 2048, device="cuda", dtype=torch.bfloat16)
    counters = torch.zeros(1024, dtype=torch.int32, device="cuda")
    compiled = torch.compile(lambda h, r: dk.linear_residual(h, weight, r, None, counters), fullgraph=True)
    want = dk.linear_residual_reference(hidden, weight, x)
    assert _rel_err(compiled(hidden, x), want) < 2e-2
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compiled(hidden, x)
    for _ in range(3):
        graph.replay()
        assert _rel_err(out, want) < 2e-2 and int(counters.abs().sum()) == 0


# ---------------------------------------------------------------------------------------------- in a Block
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_block_decode_path_gives_the_modules_outputs(monkeypatch, count_calls, rows: int) -> None:
    """`Block` decode calls of <= 4 rows through the decode kernels (forced on the CPU, where the ops run their
    torch references): the modules' logits at every step, the prompt and 5-row calls through the modules."""
    from genloom.core.nn.block import Block
    from genloom.core.nn.config import TransformerConfig
    from genloom.core.nn.transformer import Transformer

    torch.manual_seed(0)
    config = TransformerConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, rope="1d", max_seq_len=32
    )
    model = Transformer(config).eval()
    model.fuse_projections()
    calls = count_calls(dk, "rms_norm_swiglu")

    monkeypatch.setattr(Block, "fused_decode_layer", False)  # the four kernels (test_decode_layer: the one)

    def run(devices: tuple[str, ...], batch: int) -> list[torch.Tensor]:
        monkeypatch.setattr(Block, "decode_kernel_devices", devices)
        model.setup_cache(batch, 16, static=True)
        prompt = torch.arange(3 * batch).reshape(batch, 3) % 50
        outs = [model(prompt, input_pos=torch.arange(3))[:, -1]]
        for pos in range(3, 9):
            token = outs[-1].argmax(-1, keepdim=True)
            outs.append(model(token, input_pos=torch.tensor([pos]))[:, -1])
        return outs

    with torch.no_grad():
        for batch in (rows, 5):
            kernels, modules = run(("cpu",), batch), run(("cuda",), batch)
            # 2 layers x 6 one-token steps, plus the prompt's call where its 3 x batch rows are <= 4
            assert len(calls) == (0 if batch > 4 else 12 + (2 if 3 * batch <= 4 else 0))
            calls.clear()
            for a, b in zip(kernels, modules, strict=True):
                assert torch.allclose(a, b, atol=1e-5)


def test_kernels_launch_only_where_launching_is_cheap(monkeypatch) -> None:
    """An eager CUDA call keeps the modules (a Triton launch from Python costs more host time than theirs);
    compiled code, a graph capture and the CPU (torch references) take the kernels."""
    from genloom.core.nn.triton_launch import launches_cheaply

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert launches_cheaply(torch.device("cpu")) and not launches_cheaply(cuda)
    traced = torch.compile(lambda x: x + launches_cheaply(cuda), backend="eager", fullgraph=True)
    assert traced(torch.zeros(())).item() == 1
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert launches_cheaply(cuda)


def test_int8_or_other_dtype_linears_keep_the_modules(monkeypatch) -> None:
    """The kernels take float weights of x's dtype: a block with int8 weight-only linears (or weights of
    another dtype) keeps its modules instead of failing inside the kernels' input checks."""
    from genloom.core.nn.quantize import quantize_int8_weight_only

    monkeypatch.setattr(Block, "decode_kernel_devices", ("cpu",))
    block, x = _block(), torch.randn(2, 1, 64)
    assert block._takes_decode_kernels(x)
    assert not block._takes_decode_kernels(x.double())  # float32 weights, float64 x
    quantize_int8_weight_only(block)
    assert not block._takes_decode_kernels(x)
    with torch.no_grad():
        assert block(x).shape == (2, 1, 64)
