"""Top-k sampling as one Triton kernel that finds no k-th value unless it has to (CUDA, inside compiled code).

Top-k sampling with Gumbel noise picks argmax(logits - T log E) over the tokens whose logit is at least the
k-th largest (`logits.sample_with_noise`). The usual way finds that k-th value first: a sort, or on the
compiled path four radix-select passes over the vocabulary (~28 us of a ~345 us LlamaGen-B decode step on an
H100, docs/benchmarks.md). But the winner over the whole vocabulary, c = argmax(logits - T log E), is also
the winner over the top k whenever c itself is in the top k, i.e. when fewer than k logits exceed its own:
then no kept token scores higher (they are all in the vocabulary) and no earlier kept token ties it (argmax
returns the first index of the maximum). So one program per row makes two passes: the argmax of the noisy
scores, then the count of logits above the winner's. When the count is k or more, c and every token whose
logit is at most c's are outside the top k, so the program searches again among the logits above c's, and
repeats; each round removes at least c, and with sampling's sharp distributions the first round almost
always ends it. The result is the token the filter-then-argmax path samples from the same noise (the same
float32 scores), found with two reads of the row instead of four passes plus the mask and the argmax.
H100, LlamaGen-B, 256 tokens with CFG (docs/benchmarks.md, session 14): batch 1 85.8 ms against 91.5, batch 8
111.9 against 137.1 (its 8 guided rows had taken `torch.topk`'s sort).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op

from genloom.core.errors import InputError
from genloom.core.nn.triton_launch import launcher

try:  # Triton ships with CUDA builds of torch; without it the torch path samples
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

__all__ = ["kernel_serves", "top_k_sample", "top_k_sample_reference", "top_k_sample_triton"]

BLOCK = 2048  # vocabulary entries a program reads per step
NUM_WARPS = 8
MAX_ROWS = 64  # one program per row: beyond this many rows torch.topk's kernels spread better


def top_k_sample_reference(logits: Tensor, log_noise: Tensor, top_k: int, temperature: float) -> Tensor:
    """argmax(filtered logits - T log E), the logits below the k-th largest set to -inf: what
    `sample_with_noise` computes for top-k-only sampling."""
    from .logits import top_k_filter  # here: logits imports this module

    return torch.argmax(torch.sub(top_k_filter(logits, top_k), log_noise, alpha=temperature), dim=-1)


def kernel_serves(logits: Tensor, top_k: int) -> bool:
    """Whether `top_k_sample` launches the kernel: Triton, CUDA, float32 logits of at most MAX_ROWS rows and
    1 <= top_k < V (at k >= V nothing is filtered and the plain argmax is the sample)."""
    rows = logits.numel() // max(logits.shape[-1], 1)
    return (
        triton is not None
        and logits.is_cuda
        and logits.dtype == torch.float32
        and 0 < rows <= MAX_ROWS
        and 1 <= top_k < logits.shape[-1]
    )


if triton is not None:

    @triton.jit
    def _winner(logits, noise, V, above, temperature, BLOCK: tl.constexpr):
        """(index, logit) of the first maximum of logit - temperature * noise among the logits > `above`
        ((V, -inf) where there is none)."""
        best = float("-inf")
        best_index = V
        for start in range(0, V, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            inside = offsets < V
            logit = tl.load(logits + offsets, mask=inside, other=float("-inf"))
            draw = tl.load(noise + offsets, mask=inside, other=0.0)
            score = tl.where(inside & (logit > above), logit - temperature * draw, float("-inf"))
            chunk_best, at = tl.max(score, axis=0, return_indices=True, return_indices_tie_break_left=True)
            better = chunk_best > best  # strictly: an earlier chunk keeps its tie
            best_index = tl.where(better, start + at, best_index)
            best = tl.maximum(best, chunk_best)
        return best_index, tl.load(logits + best_index, mask=best_index < V, other=float("-inf"))

    @triton.jit
    def _count_above(logits, V, value, BLOCK: tl.constexpr):
        """How many logits exceed `value`."""
        count = 0
        for start in range(0, V, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            logit = tl.load(logits + offsets, mask=offsets < V, other=float("-inf"))
            count += tl.sum((logit > value).to(tl.int32), axis=0)
        return count

    @triton.jit
    def _top_k_sample_kernel(
        logits, noise, out, V, stride_l, stride_n, top_k, temperature, BLOCK: tl.constexpr
    ):
        """One row: the winner of the noisy scores among the logits above `above`, until fewer than top_k
        logits exceed the winner's (then it is in the top k, and so the top k's own winner)."""
        temperature = tl.cast(temperature, tl.float32)  # inductor's launcher may pass a float as fp64
        row = tl.program_id(0)
        logits += row * stride_l
        noise += row * stride_n
        above = float("-inf")
        index, logit = _winner(logits, noise, V, above, temperature, BLOCK)
        count = _count_above(logits, V, logit, BLOCK)
        while count >= top_k:
            above = logit  # the winner and everything at or below it are outside the top k
            index, logit = _winner(logits, noise, V, above, temperature, BLOCK)
            count = _count_above(logits, V, logit, BLOCK)
        # a row with no finite logit: torch.argmax's answer over equal -inf scores, the first index
        tl.store(out + row, tl.where(index == V, 0, index).to(tl.int64))


def top_k_sample_triton(logits: Tensor, log_noise: Tensor, top_k: int, temperature: float) -> Tensor:
    """The kernel's launch (CUDA, or CPU tensors under TRITON_INTERPRET=1): logits and log_noise [..., V]
    float32 -> token ids [...] int64."""
    if triton is None:
        raise InputError("top_k_sample_triton needs Triton")
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    draws = log_noise.reshape(-1, vocab)
    rows, draws = (t if t.stride(-1) == 1 else t.contiguous() for t in (rows, draws))
    out = torch.empty(rows.shape[0], dtype=torch.long, device=logits.device)
    if out.numel():
        launcher(_top_k_sample_kernel)[(rows.shape[0],)](
            rows, draws, out, vocab, rows.stride(0), draws.stride(0), int(top_k), float(temperature),
            BLOCK=BLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out.view(logits.shape[:-1])


@triton_op("genloom_core::top_k_sample", mutates_args=())
def _top_k_sample_op(logits: Tensor, log_noise: Tensor, top_k: int, temperature: float) -> Tensor:
    """logits, log_noise [R, V] float32 -> [R] int64 (traced by torch.compile into the kernel's launch)."""
    return top_k_sample_triton(logits, log_noise, top_k, temperature)


def top_k_sample(logits: Tensor, log_noise: Tensor, top_k: int, temperature: float) -> Tensor:
    """The token top-k sampling draws with this noise: argmax(logits - temperature * log_noise) over the
    logits at least the k-th largest. The kernel where `kernel_serves`, else `top_k_sample_reference`."""
    if logits.shape != log_noise.shape:
        raise InputError(
            f"top_k_sample: logits {tuple(logits.shape)} and log_noise {tuple(log_noise.shape)} must match"
        )
    if not kernel_serves(logits, top_k) or log_noise.dtype != torch.float32:
        return top_k_sample_reference(logits, log_noise, top_k, temperature)
    rows = logits.reshape(-1, logits.shape[-1])
    return _top_k_sample_op(rows, log_noise.reshape(rows.shape), int(top_k), float(temperature)).view(
        logits.shape[:-1]
    )
