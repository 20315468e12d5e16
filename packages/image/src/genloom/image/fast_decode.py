"""Token ids -> images on the GPU fast path: the tokenizer's decode compiled, bf16 autocast, channels-last.

Eager float32 decoding is unfused and launch-bound: VAR-d16's VQVAE took 24 ms for one 256x256 image and
222-312 ms for 64 on an H100, as long as generating their tokens. Compiled, its GroupNorm / SiLU / residual
chains fuse into the convolutions' neighbours and the convolutions run on bf16 tensor cores in
channels-last layout. Off CUDA the plain decode runs (compiling for the CPU gains little and takes long).

`prepare` (ids -> decoder input) runs eagerly before the compiled part: VAR's per-scale code accumulation
calls its residual convs with a float per scale, which would recompile the graph once per scale.
`for_tokenizer` picks the split for genloom's tokenizers.

The decoder's plain convolutions with fewer than 32 output channels (its final conv to RGB) run padded
with zero filters to 32 (only inside `module.decoder`, and never a Conv2d subclass with its own forward such
as VAR's Phi, so encoding and the quantizer are untouched):
for VAR's 160 -> 3 conv at 256x256 on 64 images (bf16, channels-last, H100) cuDNN picks a direct
convolution for 3, 8 or 16 filters (24.4-24.8 ms, 24 of the 138 ms of the whole decode) and its
implicit-GEMM tensor-core kernel from 32 filters on (2.2 ms for 32, 2.3 ms for 64).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["FastDecode", "group_norm_by_channel_sums", "pad_thin_convolutions", "sum_group_norms"]

TENSOR_CORE_CHANNELS = 32


def pad_thin_convolutions(module: nn.Module, multiple: int = TENSOR_CORE_CHANNELS) -> int:
    """Give every plain `nn.Conv2d` in `module` (exactly that type: a subclass may compute more than the
    convolution in its forward) with fewer than `multiple` output channels a forward that convolves with its
    filters zero-padded to `multiple` and drops the extra channels: the same outputs (up to the kernels'
    rounding), weights and state_dict unchanged. Returns how many convolutions were changed."""
    changed = 0
    for conv in module.modules():
        if type(conv) is nn.Conv2d and conv.out_channels < multiple and "forward" not in vars(conv):
            conv.forward = _padded_forward(conv, multiple)
            changed += 1
    return changed


def _padded_forward(conv: nn.Conv2d, multiple: int) -> Callable[[torch.Tensor], torch.Tensor]:
    extra = multiple - conv.out_channels

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([conv.weight, conv.weight.new_zeros(extra, *conv.weight.shape[1:])])
        bias = None if conv.bias is None else torch.cat([conv.bias, conv.bias.new_zeros(extra)])
        return conv._conv_forward(x, weight, bias)[:, : conv.out_channels]

    return forward


def group_norm_by_channel_sums(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """`norm(x)` from per-channel sums over the pixels. In channels-last memory a group's channels are not
    contiguous (5 of every 160 values at VAR's widest level), and inductor's fused group-norm reductions ran
    far below the bandwidth there (one 64 x 160 x 256 x 256 norm: 6.3 ms on an H100 for 1.3 GB, about 0.5 ms
    of bytes). Sums over H, W per channel read the tensor row by row; the groups then combine C numbers per
    image. Statistics in float32 (E[x^2] - E[x]^2, clamped at 0), output in x's dtype."""
    batch, channels = x.shape[:2]
    groups = norm.num_groups
    per_group = channels // groups
    count = x[0, 0].numel() * per_group
    xf = x.float()
    sums = torch.stack([xf.sum(dim=(2, 3)), (xf * xf).sum(dim=(2, 3))])  # [2, B, C]
    mean, square = (sums.view(2, batch, groups, per_group).sum(-1) / count).unbind(0)  # [B, G] each
    rstd = torch.rsqrt((square - mean * mean).clamp(min=0) + norm.eps)
    scale = rstd.repeat_interleave(per_group, dim=1)  # [B, C]
    shift = -mean.repeat_interleave(per_group, dim=1) * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    return (xf * scale[:, :, None, None] + shift[:, :, None, None]).to(x.dtype)


def sum_group_norms(module: nn.Module) -> int:
    """Give every plain `nn.GroupNorm` in `module` the channel-sums forward (`group_norm_by_channel_sums`):
    the same outputs to float32 rounding, weights and state_dict unchanged. Returns how many were changed."""
    changed = 0
    for norm in module.modules():
        if type(norm) is nn.GroupNorm and "forward" not in vars(norm):
            norm.forward = functools.partial(group_norm_by_channel_sums, norm=norm)
            changed += 1
    return changed


class FastDecode:
    """`decode(prepare(ids)) -> images` of `module` (the tokenizer), compiled per input shape on CUDA.

    Puts `module`'s weights in channels-last layout (outputs are unchanged; eager calls keep working).
    Images come back in float32; they differ from the float32 eager decode by bf16 rounding only.
    """

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor],
        module: nn.Module,
        *,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        dtype: torch.dtype = torch.bfloat16,
        mode: str | None = None,
        channels_last: bool = True,
        channel_sum_norms: bool = True,
    ) -> None:
        self.decode = decode
        self.mode = mode  # torch.compile mode (None: inductor's default)
        self.channels_last = channels_last
        # the decoder's GroupNorms from per-channel sums: decode 81 ms instead of 102 at batch 64 (one H100)
        self.channel_sum_norms = channel_sum_norms
        self.prepare = prepare
        self.module = module
        self.dtype = dtype
        self._compiled: Callable | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer: nn.Module, **options: Any) -> FastDecode:
        """VAR's multi-scale VQ: codes accumulated eagerly, `fhat_to_image` compiled; others: `decode`.
        `options`: `mode`, `channels_last`, `channel_sum_norms` (benchmarks/var_profile.py compares them)."""
        if hasattr(tokenizer, "fhat_to_image") and hasattr(tokenizer, "quantize"):
            return cls(
                tokenizer.fhat_to_image, tokenizer, prepare=tokenizer.quantize.indices_to_codes, **options
            )
        return cls(tokenizer.decode, tokenizer, **options)

    def _prepare_module(self) -> None:
        """Once, before compiling: channels-last weights, the decoder's thin convolutions padded (and, if asked,
        its group norms by channel sums)."""
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        decoder = getattr(self.module, "decoder", self.module)
        pad_thin_convolutions(decoder)
        if self.channel_sum_norms:
            sum_group_norms(decoder)

    def __call__(self, ids: torch.Tensor, *, prepared: bool = False) -> torch.Tensor:
        """Images from token ids, or (`prepared=True`) from the decoder input `prepare` would make of them
        (VAR's f_hat, which its sampling loop has already built: `NextScaleAR.generate(return_fhat=True)`)."""
        skip = prepared or self.prepare is None
        if ids.device.type != "cuda":
            return self.decode(ids if skip else self.prepare(ids))
        if self._compiled is None:
            self._prepare_module()
            self._compiled = torch.compile(self.decode, dynamic=False, mode=self.mode)
        with torch.no_grad(), torch.autocast("cuda", dtype=self.dtype):
            inputs = ids if skip else self.prepare(ids)
            return self._compiled(inputs).float()
