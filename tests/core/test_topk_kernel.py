"""`genloom.core.sampling.topk_kernel`: top-k sampling as one kernel that checks the vocabulary's winner."""

from __future__ import annotations

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.sampling import topk_kernel as tk
from genloom.core.sampling.logits import SamplingParams, draw_noise, sample_with_noise

KERNEL_CHECK = """
import torch
from genloom.core.sampling.topk_kernel import top_k_sample_reference, top_k_sample_triton

g = torch.Generator().manual_seed(0)
for rows, vocab, k, temperature in ((3, 5000, 7, 1.0), (2, 4096, 1, 0.7), (4, 300, 299, 1.3), (1, 2049, 2000, 1.0)):
    logits = 3 * torch.randn(rows, vocab, generator=g)
    noise = torch.empty(rows, vocab).exponential_(generator=g).log()
    got = top_k_sample_triton(logits, noise, k, temperature)
    assert torch.equal(got, top_k_sample_reference(logits, noise, k, temperature)), (rows, vocab, k)

# the vocabulary's winner outside the top k, three times over: a noise draw that lifts rank 100, then rank 50
logits = -torch.arange(3000, dtype=torch.float32)[None] / 100
noise = torch.zeros(1, 3000)
noise[0, 100], noise[0, 50] = -1e4, -5e3  # score = logit - log E: these two outscore every other token
got = top_k_sample_triton(logits, noise, 10, 1.0)
assert got.item() == 0 == top_k_sample_reference(logits, noise, 10, 1.0).item()
noise[0, 7] = -10.0  # inside the top 10: found on the third round
assert top_k_sample_triton(logits, noise, 10, 1.0).item() == 7

# ties: the first index of the maximum, as torch.argmax returns it (equal logits, no noise), ties at the k-th
# value kept (five tokens share it and k = 3)
tied = torch.tensor([[0.0, 2.0, 1.0, 2.0, 2.0, 2.0, 2.0, -1.0]])
assert top_k_sample_triton(tied, torch.zeros_like(tied), 3, 1.0).item() == 1
lifted = torch.zeros_like(tied)
lifted[0, 6] = -0.5  # the last of the tied five, kept by the filter
assert top_k_sample_triton(tied, lifted, 3, 1.0).item() == 6 == top_k_sample_reference(tied, lifted, 3, 1.0).item()
masked = torch.full((2, 100), float("-inf"))
masked[1, 40] = 0.0  # one finite logit; the first row has none
got = top_k_sample_triton(masked, torch.zeros(2, 100), 5, 1.0)
assert got.tolist() == [0, 40] == top_k_sample_reference(masked, torch.zeros(2, 100), 5, 1.0).tolist()
print("kernel equals the reference")
"""


def test_kernel_equals_the_filter_then_argmax_in_the_interpreter(run_triton_interpreted) -> None:
    assert "kernel equals the reference" in run_triton_interpreted(KERNEL_CHECK)


def test_cpu_takes_the_reference_and_equals_the_sampler() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 700, generator=g)
    params = SamplingParams(top_k=40, temperature=0.8)
    noise = draw_noise(tuple(logits.shape), params, g)
    assert not tk.kernel_serves(logits, 40)
    assert torch.equal(tk.top_k_sample(logits, noise, 40, 0.8), sample_with_noise(logits, params, noise))


def test_mismatched_noise_is_refused() -> None:
    with pytest.raises(InputError, match=r"logits \(2, 8\) and log_noise \(2, 7\) must match"):
        tk.top_k_sample(torch.zeros(2, 8), torch.zeros(2, 7), 3, 1.0)


@pytest.mark.parametrize("temperature", ["fp32", "fp64"])  # torch.compile's launcher may pass fp64
def test_kernel_compiles_for_hopper(compile_triton_for_hopper, temperature: str) -> None:
    cubin = compile_triton_for_hopper(
        tk._top_k_sample_kernel,
        {"logits": "*fp32", "noise": "*fp32", "out": "*i64", "V": "i32", "stride_l": "i32", "stride_n": "i32",
         "top_k": "i32", "temperature": temperature},
        {"BLOCK": tk.BLOCK},
        num_warps=tk.NUM_WARPS,
    )  # fmt: skip
    assert len(cubin) > 1000


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 8])
def test_compiled_sampler_takes_the_kernel_and_keeps_the_tokens(count_calls, rows: int) -> None:
    calls = count_calls(tk, "top_k_sample")
    g = torch.Generator(device="cuda").manual_seed(rows)
    params = SamplingParams(top_k=2000)
    compiled = torch.compile(sample_with_noise, fullgraph=True)
    for scale in (1.0, 4.0, 12.0):  # flat to sharp distributions
        logits = scale * torch.randn(rows, 16384, generator=g, device="cuda")
        noise = draw_noise(tuple(logits.shape), params, g, device="cuda")
        assert torch.equal(compiled(logits, params, noise), sample_with_noise(logits, params, noise))
    assert calls  # traced into the compiled sampler
