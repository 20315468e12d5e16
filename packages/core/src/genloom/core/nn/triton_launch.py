"""How core's hand-written Triton kernels are launched, and when launching them pays.

A Triton kernel launched from Python (argument specialisation, the custom op's dispatch) costs ~100-200 us
of host time on an H100 machine against ~10 us for an aten kernel: LlamaGen-B's eager class-prompt pass took
23.6 ms with the decode kernels (12 layers of 4-5 such launches). From code that torch.compile generated,
or once during a CUDA-graph capture, the launch costs what any kernel's does. So the modules that can route
work to these kernels ask `launches_cheaply` first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

import torch
from torch.library import wrap_triton

__all__ = ["launcher", "launches_cheaply", "multiprocessors"]


def launcher(kernel: Callable) -> Callable:
    """`wrap_triton(kernel)` (so torch.compile traces the launch); the plain kernel under the interpreter,
    whose kernels are not JIT functions."""
    return kernel if os.environ.get("TRITON_INTERPRET") == "1" else wrap_triton(kernel)


def launches_cheaply(device: torch.device) -> bool:
    """Whether a hand-written kernel on `device` costs no more host time than the torch ops it replaces:
    off CUDA (the ops run their torch references), inside torch.compile, or while a CUDA graph is captured."""
    if device.type != "cuda" or torch.compiler.is_compiling():
        return True
    return torch.cuda.is_current_stream_capturing()


def multiprocessors(device: torch.device) -> int:
    """The streaming multiprocessors of a CUDA device (persistent kernels launch one program per SM or so)."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count
