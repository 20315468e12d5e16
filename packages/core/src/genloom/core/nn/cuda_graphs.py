"""`GraphCache`: capture a function once per key as a CUDA graph and replay it, for fixed-shape passes.

torch.compile's "reduce-overhead" mode fuses and captures, but compiling a large model once per shape costs
tens of seconds per shape. Passes that run a handful of known shapes (VAR's ten scales, a bidirectional
sampler's fixed-size steps) need only the capture: the eager kernels replay with no launch overhead and no
Python in between. Capture takes milliseconds, so a new batch size costs nothing noticeable.

Contract: the function must have static shapes per key and no host synchronisation; it may read and write
module state (a KV cache) in place, as long as those buffers are not reallocated between capture and replay.
Give `watch=` the module whose weights the function reads: moving or casting it (`.to()`, `.half()`)
replaces its tensors, which the cache notices (`weights_fingerprint`) and answers by capturing again.
Outputs are the graph's own memory and are overwritten by the next replay of the same key: use or clone them
first. Off CUDA the function is simply called.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GraphCache", "weights_fingerprint"]


def weights_fingerprint(module: nn.Module | None) -> tuple:
    """Where a module's weights live: changes when `.to()` / `.half()` replace its tensors (an in-place
    `load_state_dict` keeps it, and captured graphs then read the new values, as they should)."""
    if module is None:
        return ()
    tensors = [t for t in module.parameters()] or [t for t in module.buffers()]
    if not tensors:
        return ()
    first, last = tensors[0], tensors[-1]
    return (len(tensors), first.data_ptr(), last.data_ptr(), first.dtype, first.device)


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[Tensor], outputs: Any) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphCache:
    """Replays `fn(*tensors)` from CUDA graphs captured per `key` (one shared memory pool)."""

    def __init__(
        self, fn: Callable[..., Any], *, warmup: int = 2, enabled: bool = True, watch: nn.Module | None = None
    ) -> None:
        self.fn = fn
        self.warmup = warmup
        self.enabled = enabled
        self.watch = watch
        self._fingerprint: tuple = ()
        self._graphs: dict[Hashable, _Captured] = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Forget every captured graph (call after the buffers the function touches are reallocated)."""
        self._graphs.clear()
        self._pool = None

    def __call__(self, key: Hashable, *args: Tensor) -> Any:
        if not (self.enabled and args and all(isinstance(a, Tensor) and a.is_cuda for a in args)):
            return self.fn(*args)
        fingerprint = weights_fingerprint(self.watch)
        if fingerprint != self._fingerprint:  # the weights moved: every graph reads stale memory
            self.clear()
            self._fingerprint = fingerprint
        signature = (key, *((tuple(a.shape), a.dtype) for a in args))
        captured = self._graphs.get(signature)
        if captured is None:
            captured = self._capture(args)
            self._graphs[signature] = captured
        for static, arg in zip(captured.inputs, args, strict=True):
            static.copy_(arg)
        captured.graph.replay()
        return captured.outputs

    def _capture(self, args: tuple[Tensor, ...]) -> _Captured:
        inputs = [a.clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture: lazy init, cuBLAS handles, autotuning
            for _ in range(self.warmup):
                self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = self.fn(*inputs)
        return _Captured(graph, inputs, outputs)
