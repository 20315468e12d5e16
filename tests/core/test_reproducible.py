"""`use_reproducible_kernels`: the switches it sets, and (on a GPU) repeated masked attention that is
bit-identical with them on."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F

from genloom.core.reproducible import use_reproducible_kernels


@pytest.fixture
def restore_flags():
    cudnn, deterministic = torch.backends.cuda.cudnn_sdp_enabled(), inductor_config.deterministic
    yield
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    inductor_config.deterministic = deterministic


def test_switches_cudnn_attention_and_inductor_autotuning_off_and_back_on(restore_flags):
    use_reproducible_kernels()
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert inductor_config.deterministic
    use_reproducible_kernels(False)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert not inductor_config.deterministic


@pytest.mark.gpu
def test_masked_decode_attention_repeats_bit_for_bit(restore_flags):
    """The shape that varied on an H100 (LlamaGen-B decode, CFG batch 128, bf16, masked cache read)."""
    use_reproducible_kernels()
    g = torch.Generator("cuda").manual_seed(0)
    q = torch.randn(128, 12, 1, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(128, 12, 264, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    mask = torch.arange(264, device="cuda") < 140
    outs = [F.scaled_dot_product_attention(q, k, v, attn_mask=mask) for _ in range(5)]
    assert all(torch.equal(outs[0], out) for out in outs[1:])
