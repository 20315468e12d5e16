"""`GraphCache`: capture a function once per key as a CUDA graph and replay it, for fixed-shape passes.

torch.compile's "reduce-overhead" mode fuses and captures, but compiling a large model once per shape costs
tens of seconds per shape. Passes that run a handful of known shapes (VAR's ten scales, a bidirectional
sampler's fixed-size steps) need only the capture: the eager kernels replay with no launch overhead and no
Python in between. Capture takes milliseconds, so a new batch size costs nothing noticeable.

Contract: the function must have static shapes per key and no host synchronisation; it may read and write
module state (a KV cache) in place, as long as those buffers are not reallocated between capture and replay.
Give `watch=` the module whose weights (and KV cache, cross-attention context) the function reads, and call
`refresh()` once per generation: moving or casting the module, or reallocating its cache, replaces those
tensors, which `refresh` notices (`memory_fingerprint`) and answers by dropping the stale graphs.
Outputs are the graph's own memory and are overwritten by the next replay of the same key: use or clone them
first. Off CUDA the function is simply called. Given a CUDA `device`, inputs may also arrive as host tensors:
each is copied straight into the graph's input buffer (one host-to-device copy, no device-side copy after
it), what a batch-1 pass whose inputs a tokenizer just made on the CPU needs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor, nn

from .kv_cache import KVCache

__all__ = ["GraphCache", "memory_fingerprint"]


def memory_fingerprint(module: nn.Module | None, *, caches: bool = True) -> tuple:
    """Where the memory a captured pass reads lives: the weights (moved or cast together by `.to()` /
    `.half()`, so the first parameter stands for all), the KV cache and the cached cross-attention context
    (each reallocated for every layer at once, so the first one found stands for all). An in-place
    `load_state_dict` or cache reset keeps it: captured graphs then read the new values, as they should.
    It walks the module (80 us for a 6-layer translator on a slow CPU, a few hundred for a large model): check
    it once per generation. `caches=False` (a pass that never uses a KV cache or a cached context) looks at
    the weights only, without the walk: what a one-pass decoder replayed per sentence needs."""
    if module is None:
        return ()
    first = next(module.parameters(), None)
    weights = () if first is None else (first.data_ptr(), first.dtype, first.device)
    if not caches:
        return (weights,)
    cache = context = None
    for sub in module.modules():
        if cache is None and isinstance(sub, KVCache):
            cache = (sub.k_cache.data_ptr(), sub.v_cache.data_ptr())
        cached_context = sub.__dict__.get("_context_kv")  # plain attribute: no Module.__getattr__ miss
        if context is None and cached_context is not None:
            context = tuple(t.data_ptr() for t in cached_context if t is not None)
        if cache is not None and context is not None:
            break
    return (weights, cache, context)


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[Tensor], outputs: Any) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphCache:
    """Replays `fn(*tensors)` from CUDA graphs captured per `key` (one shared memory pool)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        warmup: int = 2,
        enabled: bool = True,
        watch: nn.Module | None = None,
        watch_caches: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.fn = fn
        # where host inputs go: a CUDA device replays host inputs from graphs there; None calls fn on them
        self.device = None if device is None else torch.device(device)
        self.warmup = warmup
        self.enabled = enabled
        self.watch = watch
        # False: fn never touches a KV cache or cached context, so a refresh looks at the weights only
        self.watch_caches = watch_caches
        self._fingerprint: tuple = ()
        self._graphs: dict[Hashable, _Captured] = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Forget every captured graph (call after the buffers the function touches are reallocated)."""
        self._graphs.clear()
        self._pool = None

    def refresh(self) -> None:
        """Drop every graph if the watched module's weights, cache or context were reallocated since the
        last refresh. Call it once per generation, before the replays (it walks the module: not per pass)."""
        fingerprint = memory_fingerprint(self.watch, caches=self.watch_caches)
        if fingerprint != self._fingerprint:
            self.clear()
            self._fingerprint = fingerprint

    def __call__(self, key: Hashable, *args: Tensor) -> Any:
        if not (self.enabled and args and all(isinstance(a, Tensor) for a in args)):
            return self.fn(*args)
        on_host = self.device is not None and self.device.type == "cuda" and not any(a.is_cuda for a in args)
        if not (on_host or all(a.is_cuda for a in args)):
            return self.fn(*args)
        signature = (key, *((tuple(a.shape), a.dtype) for a in args))
        captured = self._graphs.get(signature)
        if captured is None:
            captured = self._capture(args)
            self._graphs[signature] = captured
        for static, arg in zip(captured.inputs, args, strict=True):
            static.copy_(arg)  # a host tensor: the host-to-device copy itself
        captured.graph.replay()
        return captured.outputs

    def _capture(self, args: tuple[Tensor, ...]) -> _Captured:
        inputs = [a.clone() if a.is_cuda else a.to(self.device) for a in args]  # own buffers either way
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
