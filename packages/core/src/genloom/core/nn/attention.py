"""Multi-head / grouped-query self- and cross-attention through `scaled_dot_product_attention`.

Parameter names (what a renaming converter targets):
- fused projections: `wqkv` ([q; k; v] output rows, heads contiguous inside each), or `wq`, `wk`, `wv`;
  cross-attention: `wq` plus `wkv` (fused) or `wk`, `wv`; output projection `wo`.
- `qkv_bias="qv"`: parameters `q_bias`, `v_bias` (the key bias is fixed at zero, as in VAR / BEiT).
- `qk_norm`: `q_norm`, `k_norm` (per-head RMSNorm or LayerNorm over head_dim), or, for "l2" (cosine
  attention, VAR `attn_l2_norm`), `scale_mul` [1, H, 1, 1]: q and k are L2-normalised and q is multiplied
  by `exp(min(scale_mul, log 100))`, with softmax scale 1.
Order inside: project -> qk-norm -> RoPE -> KV cache -> attention; cached keys are stored post-norm and
post-rotation. Cross-attention keys/values can be computed once per source (`cache_context`).

`single_query_attention` writes one-query attention (a decode step) as three reductions (scores over
head_dim, softmax over keys, weighted sum over keys) that inductor fuses into small kernels. Measured on an
H100 (LlamaGen-B, 257 cached keys) it cost 10.6 us per layer against 8.7 us for cuDNN's SDPA kernel with its
mask preparation (benchmarks/decode_step_profile.py times both). A decode step on a KV cache under the causal
mask (`is_causal` with one query and a cache, as `Transformer` plans it) runs `decode_attention` instead: the
cache write and the attention over the filled slots as one Triton kernel (the LlamaGen-B step 451 -> 396 us).
A key-padding mask (`KeyPadding`: a translator's source, padded sequences of a bidirectional model) runs
`padded_attention`: on CUDA in bf16 / fp16 without autograd one Triton kernel that reads one flag per key
instead of SDPA's dense [B, 1, Lq, Lk] mask; elsewhere SDPA with that dense mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.errors import InputError

from .config import TransformerConfig
from .decode_attention import decode_attention
from .kv_cache import KVCache
from .norms import make_norm
from .padded_attention import KeyPadding, padded_attention
from .rope import apply_rope

__all__ = ["Attention", "flex_attention_fn", "single_query_attention"]

_MAX_LOG_SCALE = math.log(100.0)
_compiled_flex = None


def flex_attention_fn(device: torch.device):
    """FlexAttention: compiled on CUDA (its fast path), eager elsewhere (a slow but exact reference)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def single_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Attention of one query per head, in float32: q [B, H, 1, D], k / v [B, H_kv, Lk, D] (H a multiple of
    H_kv), mask bool broadcastable to [B, H, 1, Lk] (True = attend) -> [B, H, 1, D] in q's dtype."""
    batch, heads, _, dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    group = heads // kv_heads
    q = q.reshape(batch, kv_heads, group, 1, dim).float()
    scores = (q * k.unsqueeze(2).float()).sum(-1) * scale  # [B, H_kv, G, Lk]
    if mask is not None:
        keep = mask.expand(batch, heads, 1, n_keys).reshape(batch, kv_heads, group, n_keys)
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = (weights.unsqueeze(-1) * v.unsqueeze(2).float()).sum(-2)  # [B, H_kv, G, D]
    return out.reshape(batch, heads, 1, dim).to(v.dtype)


class Attention(nn.Module):
    """Self-attention (`cross=False`) or cross-attention over a context of width `config.context_size`."""

    # a `KeyPadding` mask runs `padded_attention` (one Triton kernel on CUDA in bf16 / fp16 without
    # autograd); False: SDPA with the dense mask everywhere (benchmarks compare the two)
    padded_kernel: bool = True

    def __init__(self, config: TransformerConfig, *, cross: bool = False) -> None:
        super().__init__()
        self.cross = cross
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_dim = config.head_size
        self.rope_layout = config.rope_layout
        self.attn_dropout = config.attn_dropout
        self.l2_qk = config.qk_norm == "l2"
        q_size = self.n_heads * self.head_dim
        kv_size = self.n_kv_heads * self.head_dim
        kv_in = config.context_size if cross else config.dim
        bias = config.qkv_bias == "qkv"
        if config.fused_qkv and not cross:
            self.wqkv = nn.Linear(config.dim, q_size + 2 * kv_size, bias=bias)
        elif config.fused_qkv:
            self.wq = nn.Linear(config.dim, q_size, bias=bias)
            self.wkv = nn.Linear(kv_in, 2 * kv_size, bias=bias)
        else:
            self.wq = nn.Linear(config.dim, q_size, bias=bias)
            self.wk = nn.Linear(kv_in, kv_size, bias=bias)
            self.wv = nn.Linear(kv_in, kv_size, bias=bias)
        if config.qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(q_size))
            self.v_bias = nn.Parameter(torch.zeros(kv_size))
        self.wo = nn.Linear(q_size, config.dim, bias=config.attn_out_bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.qk_norm in ("rmsnorm", "layernorm"):
            self.q_norm = make_norm(config.qk_norm, self.head_dim, eps=config.norm_eps)
            self.k_norm = make_norm(config.qk_norm, self.head_dim, eps=config.norm_eps)
        if self.l2_qk:
            self.scale_mul = nn.Parameter(torch.full((1, self.n_heads, 1, 1), math.log(4.0)))
        if config.attn_scale is not None:
            self.scale = float(config.attn_scale)
        else:
            self.scale = 1.0 if self.l2_qk else 1.0 / math.sqrt(self.head_dim)
        self.kv_cache: KVCache | None = None
        self._context_kv: tuple[Tensor, Tensor, Tensor | None] | None = None

    # ------------------------------------------------------------------ projections
    def _qv_bias(self, q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if hasattr(self, "q_bias"):
            return q + self.q_bias, v + self.v_bias
        return q, v

    def _project_self(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if hasattr(self, "wqkv"):
            return self.split_qkv(self.wqkv(x))
        q, v = self._qv_bias(self.wq(x), self.wv(x))
        return q, self.wk(x), v

    def _project_context(self, context: Tensor) -> tuple[Tensor, Tensor]:
        kv_size = self.n_kv_heads * self.head_dim
        if hasattr(self, "wkv"):
            k, v = self.wkv(context).split([kv_size, kv_size], dim=-1)
        else:
            k, v = self.wk(context), self.wv(context)
        if hasattr(self, "v_bias"):
            v = v + self.v_bias
        return self._heads(self._norm_k(k, self.n_kv_heads), self.n_kv_heads), self._heads(v, self.n_kv_heads)

    def _norm_q(self, q: Tensor) -> Tensor:
        q = q.unflatten(-1, (self.n_heads, self.head_dim))
        if hasattr(self, "q_norm"):
            q = self.q_norm(q)
        return q

    def _norm_k(self, k: Tensor, heads: int) -> Tensor:
        k = k.unflatten(-1, (heads, self.head_dim))
        if hasattr(self, "k_norm"):
            k = self.k_norm(k)
        return k

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        """[B, L, H, D] (or [B, L, H*D]) -> [B, H, L, D]."""
        if x.dim() == 3:
            x = x.unflatten(-1, (heads, self.head_dim))
        return x.transpose(1, 2)

    def _l2(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.scale_mul.clamp_max(_MAX_LOG_SCALE).exp()
        return F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1)

    # ------------------------------------------------------------------ cross-attention context cache
    def cache_context(self, context: Tensor, context_mask: Tensor | None = None) -> None:
        """Project the cross-attention keys/values of `context` [B, Lc, C] once for all decode steps."""
        k, v = self._project_context(context)
        if self.l2_qk:
            k = F.normalize(k, dim=-1)
        new = (k, v, context_mask)
        old = self._context_kv
        if old is not None and all(
            (a is None and b is None)
            or (
                a is not None
                and b is not None
                and a.shape == b.shape
                and a.dtype == b.dtype
                and a.device == b.device
            )
            for a, b in zip(old, new, strict=True)
        ):  # same shapes: write in place, so captured decode graphs keep reading the right memory
            for a, b in zip(old, new, strict=True):
                if a is not None:
                    a.copy_(b)
        else:
            self._context_kv = new

    def clear_context(self) -> None:
        self._context_kv = None

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        *,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | KeyPadding | None = None,
        is_causal: bool = False,
        input_pos: Tensor | None = None,
        kv_len: int | None = None,
        block_mask: object | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """x [B, L, dim] -> [B, L, dim]. Self-attention: `rope` (cos, sin) [L, D/2], `mask` bool broadcast to
        [B, H, L, Lk] or a `KeyPadding` over the L keys, `input_pos` [L] writes the KV cache (then attends to its first `kv_len` slots); with
        the cache, one token and `is_causal` (a decode step: the query sees cache slots 0..input_pos), the
        cache write and the attention run as `decode_attention` (one Triton kernel on CUDA).
        Cross-attention: `context` [B, Lc, C] with `context_mask` [B, Lc] (True = real token), or the
        context cached by `cache_context`."""
        if self.cross:
            return self._cross(x, context, context_mask)
        heads = self.attend_projections(
            *self._project_self(x),
            rope=rope, mask=mask, is_causal=is_causal, input_pos=input_pos, kv_len=kv_len, block_mask=block_mask,
        )  # fmt: skip
        return self.resid_dropout(self.wo(heads))

    def split_qkv(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v [B, L, H * D] (biases added) from the fused projection's output [B, L, q + 2 kv]."""
        kv_size = self.n_kv_heads * self.head_dim
        q, k, v = qkv.split([self.n_heads * self.head_dim, kv_size, kv_size], dim=-1)
        q, v = self._qv_bias(q, v)
        return q, k, v

    def attend_projections(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        input_pos: Tensor | None = None,
        kv_len: int | None = None,
        block_mask: object | None = None,
    ) -> Tensor:
        """Self-attention from the projections q, k, v [B, L, * x D] up to the output projection, excluded:
        [B, L, H * D] (qk-norm, RoPE, the KV cache and the attention, as `forward` runs them)."""
        batch, length, _ = q.shape
        q = self._heads(self._norm_q(q), self.n_heads)
        k = self._heads(self._norm_k(k, self.n_kv_heads), self.n_kv_heads)
        v = self._heads(v, self.n_kv_heads)
        if self.l2_qk:
            q, k = self._l2(q, k)
        cache = self.kv_cache
        if cache is not None and input_pos is not None and is_causal and length == 1 and block_mask is None:
            # a decode step: the rotation (this position's angles), the cache write and the attention as one
            # kernel on CUDA
            if rope is not None and rope[0].numel() != self.head_dim // 2:  # per-row angles: rotate here
                q, k = apply_rope(q, *rope, self.rope_layout), apply_rope(k, *rope, self.rope_layout)
                rope = None
            out = decode_attention(
                q, k, v, cache.k_cache, cache.v_cache, input_pos, self.scale, rope, self.rope_layout
            )
            return out.transpose(1, 2).reshape(batch, length, -1)
        if rope is not None:
            cos, sin = rope
            q = apply_rope(q, cos, sin, self.rope_layout)
            k = apply_rope(k, cos, sin, self.rope_layout)
        if cache is not None and input_pos is not None:
            k, v = cache.update(input_pos, k, v)
            if kv_len is not None:
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        out = self._attend(q, k, v, mask=mask, is_causal=is_causal, block_mask=block_mask)
        return out.transpose(1, 2).reshape(batch, length, -1)

    def _cross(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        batch, length, _ = x.shape
        if context is not None:
            k, v = self._project_context(context)
            if self.l2_qk:
                k = F.normalize(k, dim=-1)
        elif self._context_kv is not None:
            k, v, context_mask = self._context_kv
        else:
            raise InputError("cross-attention needs `context` (or a context cached with set_context)")
        if k.shape[0] != batch:
            if k.shape[0] != 1:
                raise InputError(
                    f"cross-attention context has batch {k.shape[0]} but the queries have {batch}"
                )
            k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
            if context_mask is not None:
                context_mask = context_mask.expand(batch, -1)
        q = self._heads(
            self._norm_q(self.wq(x) + (self.q_bias if hasattr(self, "q_bias") else 0)), self.n_heads
        )
        if self.l2_qk:
            q = F.normalize(q, dim=-1) * self.scale_mul.clamp_max(_MAX_LOG_SCALE).exp()
        mask = None if context_mask is None else KeyPadding(context_mask.to(torch.bool))
        out = self._attend(q, k, v, mask=mask, is_causal=False, block_mask=None)
        return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(batch, length, -1)))

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: Tensor | KeyPadding | None,
        is_causal: bool,
        block_mask,
    ) -> Tensor:
        gqa = self.n_heads != self.n_kv_heads
        if block_mask is not None:
            flex = flex_attention_fn(q.device)
            return flex(q, k, v, block_mask=block_mask, scale=self.scale, enable_gqa=gqa)
        dropout = self.attn_dropout if self.training else 0.0
        if isinstance(mask, KeyPadding):
            if self.padded_kernel and dropout == 0.0 and not is_causal:
                return padded_attention(q, k, v, mask, self.scale)
            mask = mask.dense(q.shape[2])
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, scale=self.scale, enable_gqa=gqa
        )
