"""Suite-wide fixtures: GPU tests skip without CUDA; `shared_dir` points at ../shared or skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("GENLOOM_SHARED_DIR", REPO_ROOT.parent / "shared"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _deterministic_seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the repository (parity fixtures, data); skip when absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is absent")
    return SHARED_DIR


@pytest.fixture
def parity_dir(shared_dir: Path):
    """Return a function giving ../shared/parity/<name>, skipping when that folder is absent."""

    def get(name: str) -> Path:
        path = shared_dir / "parity" / name
        if not path.is_dir():
            pytest.skip(f"../shared/parity/{name} is absent")
        return path

    return get


# Triton 3.6's interpreter turns scalar kernel arguments into 1-element arrays that numpy >= 2.4 no longer
# converts with int(): read the element instead (the interpreter only; compiled kernels are unaffected)
_INTERPRETER_SHIM = """
import triton.runtime.interpreter as _interpreter

_original_patch = getattr(_interpreter, "_patch_lang_tensor", None)


def _patched(tensor, scope):
    _original_patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


if _original_patch is not None:
    _interpreter._patch_lang_tensor = _patched
"""


@pytest.fixture
def run_triton_interpreted():
    """Return a function running Python `code` in a fresh process with TRITON_INTERPRET=1 (Triton kernels on
    CPU tensors, through numpy) and asserting it exits cleanly; skips without Triton."""
    pytest.importorskip("triton")
    import subprocess
    import sys

    def run(code: str, timeout: float = 300.0) -> str:
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        done = subprocess.run(
            [sys.executable, "-c", _INTERPRETER_SHIM + code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    return run


@pytest.fixture
def compile_triton_for_hopper():
    """Return a function compiling a Triton kernel to a cubin for sm_90 (the H100 / H200 the benchmarks run
    on) with no GPU present: a kernel that Triton or ptxas rejects fails here, on the CPU. Skips without
    Triton or its bundled CUDA toolchain."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def compile_kernel(
        fn, signature: dict[str, str], constexprs: dict[str, object], num_warps: int = 4
    ) -> bytes:
        source = ASTSource(
            fn=fn, signature={**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs=constexprs
        )
        try:
            compiled = triton.compile(
                source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}
            )
        except FileNotFoundError as missing:  # no ptxas in this Triton build
            pytest.skip(f"Triton's CUDA toolchain is absent: {missing}")
        return compiled.asm["cubin"]

    return compile_kernel


@pytest.fixture
def count_calls(monkeypatch: pytest.MonkeyPatch):
    """Return a function wrapping `owner.name` so that each call appends to a list it returns (the original
    still runs); undone after the test."""

    def wrap(owner: object, name: str) -> list[int]:
        calls: list[int] = []
        original = getattr(owner, name)

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
        return calls

    return wrap
