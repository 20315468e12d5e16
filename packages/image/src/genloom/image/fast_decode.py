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

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FastDecode", "pad_thin_convolutions"]

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
    ) -> None:
        self.decode = decode
        self.mode = mode  # torch.compile mode (None: inductor's default)
        self.prepare = prepare
        self.module = module
        self.dtype = dtype
        self._compiled: Callable | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer: nn.Module, *, mode: str | None = None) -> FastDecode:
        """VAR's multi-scale VQ: codes accumulated eagerly, `fhat_to_image` compiled; others: `decode`."""
        if hasattr(tokenizer, "fhat_to_image") and hasattr(tokenizer, "quantize"):
            return cls(
                tokenizer.fhat_to_image, tokenizer, prepare=tokenizer.quantize.indices_to_codes, mode=mode
            )
        return cls(tokenizer.decode, tokenizer, mode=mode)

    def _prepare_module(self) -> None:
        """Once, before compiling: channels-last weights, the decoder's thin convolutions padded."""
        self.module.to(memory_format=torch.channels_last)
        pad_thin_convolutions(getattr(self.module, "decoder", self.module))

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
