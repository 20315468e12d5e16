"""Modality-agnostic samplers: logit processors, classifier-free guidance, iterative unmasking, discrete
and continuous diffusion, flow matching, CTC decoding, and the cache-based autoregressive loops.

Samplers get tensors (logits, predictions, token ids), never a modality type. Stateful schedules follow
diffusers: `set_steps(n)` once, then `step(output, step_index, sample)` with sampling parameters per call.
"""

from .autoregressive import generate
from .beam import BeamLM, BeamSearchOutput, beam_search
from .compiled import DEFAULT_BATCH_BUCKETS, CompiledDecoder
from .ctc import ctc_collapse, ctc_greedy_decode, ctc_prefix_beam_search
from .diffusion import (
    DDIMSampler,
    DDPMSampler,
    DiffusionStepOutput,
    GaussianDiffusion,
    beta_schedule,
    space_timesteps,
)
from .discrete_diffusion import (
    LogLinearNoise,
    MaskedDiffusionOutput,
    MaskedDiffusionSampler,
    block_decode,
    forward_mask,
    masked_diffusion_loss,
    sample_times,
)
from .errors import SamplingError
from .flow import FlowMatchSampler, flow_interpolate, flow_velocity_target
from .guidance import GuidanceSchedule, apply_guidance, double_batch, guide_batched, split_batch
from .jacobi import jacobi_generate, speculative_jacobi_generate
from .logits import (
    SamplingParams,
    apply_temperature,
    draw_noise,
    min_p_filter,
    noise_shape,
    process_logits,
    sample_from_logits,
    sample_from_probs,
    sample_with_noise,
    top_k_filter,
    top_p_filter,
    typical_filter,
)
from .masked import MASK_SCHEDULES, MaskedSampler, MaskedStepOutput, mask_ratio
from .speculative import speculative_generate

__all__ = [
    "SamplingError",
    # logits
    "SamplingParams",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "min_p_filter",
    "typical_filter",
    "process_logits",
    "sample_from_logits",
    "sample_from_probs",
    "noise_shape",
    "draw_noise",
    "log_noise",
    "sample_with_noise",
    # guidance
    "GuidanceSchedule",
    "apply_guidance",
    "double_batch",
    "split_batch",
    "guide_batched",
    # masked (MaskGIT / MAGNeT)
    "MASK_SCHEDULES",
    "mask_ratio",
    "MaskedSampler",
    "MaskedStepOutput",
    # discrete diffusion (MDLM / LLaDA)
    "LogLinearNoise",
    "sample_times",
    "forward_mask",
    "masked_diffusion_loss",
    "MaskedDiffusionSampler",
    "MaskedDiffusionOutput",
    "block_decode",
    # continuous diffusion and flow matching
    "beta_schedule",
    "space_timesteps",
    "GaussianDiffusion",
    "DDPMSampler",
    "DDIMSampler",
    "DiffusionStepOutput",
    "FlowMatchSampler",
    "flow_interpolate",
    "flow_velocity_target",
    # CTC
    "ctc_collapse",
    "ctc_greedy_decode",
    "ctc_prefix_beam_search",
    # cache-based autoregressive loops (autoregressive.py, speculative.py, jacobi.py)
    "generate",
    "speculative_generate",
    "jacobi_generate",
    "speculative_jacobi_generate",
    # the compiled fast path (compiled.py)
    "CompiledDecoder",
    "DEFAULT_BATCH_BUCKETS",
    # beam search on a reorderable cache (beam.py)
    "BeamLM",
    "BeamSearchOutput",
    "beam_search",
]
