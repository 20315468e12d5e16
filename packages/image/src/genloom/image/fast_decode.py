"""Token ids -> images on the GPU fast path: the tokenizer's decode compiled, bf16 autocast, channels-last.

Eager float32 decoding is unfused and launch-bound: VAR-d16's VQVAE took 24 ms for one 256x256 image and
222-312 ms for 64 on an H100, as long as generating their tokens. Compiled, its GroupNorm / SiLU / residual
chains fuse into the convolutions' neighbours and the convolutions run on bf16 tensor cores in
channels-last layout. Off CUDA the plain decode runs (compiling for the CPU gains little and takes long).

`prepare` (ids -> decoder input) runs eagerly before the compiled part: VAR's per-scale code accumulation
calls its residual convs with a float per scale, which would recompile the graph once per scale.
`for_tokenizer` picks the split for genloom's tokenizers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FastDecode"]


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
    ) -> None:
        self.decode = decode
        self.prepare = prepare
        self.module = module
        self.dtype = dtype
        self._compiled: Callable | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer: nn.Module) -> FastDecode:
        """VAR's multi-scale VQ: codes accumulated eagerly, `fhat_to_image` compiled; others: `decode`."""
        if hasattr(tokenizer, "fhat_to_image") and hasattr(tokenizer, "quantize"):
            return cls(tokenizer.fhat_to_image, tokenizer, prepare=tokenizer.quantize.indices_to_codes)
        return cls(tokenizer.decode, tokenizer)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.device.type != "cuda":
            return self.decode(ids if self.prepare is None else self.prepare(ids))
        if self._compiled is None:
            self.module.to(memory_format=torch.channels_last)
            self._compiled = torch.compile(self.decode, dynamic=False)
        with torch.no_grad(), torch.autocast("cuda", dtype=self.dtype):
            inputs = ids if self.prepare is None else self.prepare(ids)
            return self._compiled(inputs).float()
