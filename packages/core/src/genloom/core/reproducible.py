"""Kernel choices that make GPU sampling repeat bit for bit from the same seed.

Measured on an H100 (torch 2.11, LlamaGen-B at batch 64, bf16): the cuDNN attention kernel that SDPA picks
for masked decode steps gives different logits from one call to the next, so a sampled token (and every
token after it) can change; the memory-efficient and math kernels repeat exactly. Inductor also times
alternative reduction configurations when it compiles, and two processes may pick different ones. Sharded
generation compares ranks' outputs with a one-GPU run, so it needs both choices fixed.
"""

from __future__ import annotations

import torch


def use_reproducible_kernels(enabled: bool = True) -> None:
    """Turn off SDPA's cuDNN backend and inductor's on-device autotuning (or turn both back on).

    Process-wide, like the torch flags it sets; costs some attention speed on GPUs where cuDNN is fastest.
    """
    torch.backends.cuda.enable_cudnn_sdp(not enabled)
    import torch._inductor.config as inductor_config

    inductor_config.deterministic = enabled


__all__ = ["use_reproducible_kernels"]
