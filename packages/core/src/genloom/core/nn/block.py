"""`Block`: one pre-norm transformer layer (self-attention, optional cross-attention, MLP) with optional
AdaLN / AdaLN-zero conditioning and stochastic depth; `FinalAdaLN`: an adaptive final norm.

Names: `attn_norm`, `attn`, `cross_norm`, `cross_attn`, `mlp_norm`, `mlp`; AdaLN modulation is
`adaln = Sequential(SiLU, Linear(cond_dim, 6 * dim))` (so `adaln.1.weight`, like DiT's `adaLN_modulation.1`
and VAR's `ada_lin.1`), chunked into six [dim] vectors in `config.adaln_chunks` order. With AdaLN the two
norms have no affine parameters and the branch is `x + gate * f(norm(x) * (1 + scale) + shift)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import decode_kernels, decode_layer
from .attention import Attention
from .config import TransformerConfig
from .mlp import MLP
from .norms import RMSNorm, make_norm
from .triton_launch import launches_cheaply

__all__ = ["Block", "DropPath", "FinalAdaLN"]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability `p` (scaled by 1/(1-p))."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _modulation(cond: Tensor, proj: nn.Module, n_chunks: int, dim: int) -> Tensor:
    """cond [B, C] or [B, L, C] -> [B, 1 or L, n_chunks, dim]."""
    if cond.dim() == 2:
        cond = cond[:, None, :]
    return proj(cond).unflatten(-1, (n_chunks, dim))


class Block(nn.Module):
    """Pre-norm transformer layer. `drop_path` is this layer's stochastic-depth rate.

    A decode call of at most `decode_kernels.NO_DOT_MAX_ROWS` rows on CUDA, in eval mode, on a layer with
    RMSNorms, the fused qkv projection and the fused SwiGLU gate (`Transformer.fuse_projections`, which the
    compiled decoder calls) runs its weight products as `decode_kernels`: the input norm inside the qkv
    product, the residual adds inside the output and down projections, the norm and SiLU-multiply inside the
    gate/up product: 4 kernels a layer (`fused_decode_kernels = False` keeps the modules); with a KV cache,
    the two residual products of few outputs split K over more programs, counting arrivals in the cache's
    `sync` counters (`split_k_products = False`: no split). On CUDA only
    where their launches are cheap (`triton_launch.launches_cheaply`: compiled code or a graph capture): an
    eager step keeps the modules, whose aten launches cost less host time.

    With `fused_decode_layer = True` (off by default), a call that is also a one-token step on the static
    KV cache under the causal mask (no biases, no qk-norm; RoPE rows of this position or none) with at most
    `decode_layer.MAX_ROWS` rows runs the whole layer as ONE persistent kernel with grid barriers
    (`decode_layer`) instead of the four kernels and `decode_attention`. On an H100 it is slower (LlamaGen-B
    layer 28.0 against 21.6 us, docs/benchmarks.md session 11), hence off."""

    fused_decode_kernels: bool = True
    fused_decode_layer: bool = False
    split_k_products: bool = True
    decode_kernel_devices: tuple[str, ...] = ("cuda",)  # (tests add "cpu": the kernels' torch references run)

    def __init__(self, config: TransformerConfig, *, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dim = config.dim
        self.use_adaln = config.adaln != "none"
        affine = config.norm_affine and not self.use_adaln
        self.attn_norm = make_norm(config.norm, config.dim, eps=config.norm_eps, affine=affine)
        self.attn = Attention(config)
        if config.cross_attn:
            self.cross_norm = make_norm(
                config.norm, config.dim, eps=config.norm_eps, affine=config.norm_affine
            )
            self.cross_attn = Attention(config, cross=True)
        self.mlp_norm = make_norm(config.norm, config.dim, eps=config.norm_eps, affine=affine)
        self.mlp = MLP(config)
        self.drop_path = DropPath(drop_path)
        if self.use_adaln:
            self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(config.cond_size, 6 * config.dim))
            self.chunk_index = {name: i for i, name in enumerate(config.adaln_chunks)}

    def forward(
        self,
        x: Tensor,
        *,
        rope: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        input_pos: Tensor | None = None,
        kv_len: int | None = None,
        block_mask: object | None = None,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        attn_kwargs = dict(
            rope=rope,
            mask=mask,
            is_causal=is_causal,
            input_pos=input_pos,
            kv_len=kv_len,
            block_mask=block_mask,
        )
        if self._takes_decode_kernels(x):
            if self._takes_decode_layer(x, attn_kwargs):
                return self._forward_decode_layer(x, attn_kwargs)
            return self._forward_decode_kernels(x, attn_kwargs)
        if not self.use_adaln:
            x = x + self.drop_path(self.attn(self.attn_norm(x), **attn_kwargs))
            x = self._cross(x, context, context_mask)
            return x + self.drop_path(self.mlp(self.mlp_norm(x)))
        mod = _modulation(cond, self.adaln, 6, self.dim).unbind(-2)
        shift, scale, gate = (mod[self.chunk_index[f"{k}_attn"]] for k in ("shift", "scale", "gate"))
        h = self.attn_norm(x) * (1 + scale) + shift
        x = x + self.drop_path(self.attn(h, **attn_kwargs) * gate)
        x = self._cross(x, context, context_mask)
        shift, scale, gate = (mod[self.chunk_index[f"{k}_mlp"]] for k in ("shift", "scale", "gate"))
        h = self.mlp_norm(x) * (1 + scale) + shift
        return x + self.drop_path(self.mlp(h) * gate)

    def _takes_decode_kernels(self, x: Tensor) -> bool:
        """Whether this call runs `_forward_decode_kernels` (see the class docstring)."""
        mlp = self.mlp
        return (
            self.fused_decode_kernels
            and not self.training
            and x.device.type in self.decode_kernel_devices
            and x.numel() // x.shape[-1] <= decode_kernels.NO_DOT_MAX_ROWS
            and launches_cheaply(x.device)
            and not self.use_adaln
            and not hasattr(self, "cross_attn")
            and isinstance(self.attn_norm, RMSNorm)
            and isinstance(self.mlp_norm, RMSNorm)
            and self.attn_norm.weight is not None
            and self.mlp_norm.weight is not None
            and hasattr(self.attn, "wqkv")
            and mlp.kind == "swiglu"
            and mlp.gate_fused
            and mlp.w13.bias is None
            and all(  # plain float linears of x's dtype (an int8 weight-only layer keeps its module)
                type(linear) is nn.Linear and linear.weight.dtype == x.dtype
                for linear in (self.attn.wqkv, self.attn.wo, mlp.w13, mlp.w2)
            )
        )

    def _takes_decode_layer(self, x: Tensor, attn_kwargs: dict) -> bool:
        """Whether a call that takes the decode kernels can run as one `decode_layer` launch: a one-token
        step on the static cache under the causal mask, with nothing the kernel does not do."""
        attn, rope = self.attn, attn_kwargs["rope"]
        return (
            self.fused_decode_layer
            and x.dim() == 3
            and x.shape[1] == 1
            and x.shape[0] <= decode_layer.MAX_ROWS
            and attn.kv_cache is not None
            and attn_kwargs["input_pos"] is not None
            and attn_kwargs["is_causal"]
            and attn_kwargs["mask"] is None
            and attn_kwargs["block_mask"] is None
            and (rope is None or rope[0].numel() == attn.head_dim // 2)
            and attn.wqkv.bias is None
            and attn.wo.bias is None
            and self.mlp.w2.bias is None
            and not attn.l2_qk
            and not hasattr(attn, "q_norm")
            and not hasattr(attn, "q_bias")
            and attn.kv_cache.k_cache.dtype == x.dtype
        )

    def _forward_decode_layer(self, x: Tensor, attn_kwargs: dict) -> Tensor:
        """`forward` of a decode step as one `decode_layer` launch (see the class docstring)."""
        attn, mlp, cache = self.attn, self.mlp, self.attn.kv_cache
        weights = (
            self.attn_norm.weight, attn.wqkv.weight, attn.wo.weight, self.mlp_norm.weight, mlp.w13.weight,
            mlp.w2.weight,
        )  # fmt: skip
        return decode_layer.decode_layer(
            x, weights, cache.k_cache, cache.v_cache, attn_kwargs["input_pos"], attn_kwargs["rope"], cache.sync,
            eps=(self.attn_norm.eps, self.mlp_norm.eps), scale=attn.scale, n_heads=attn.n_heads,
            rope_layout=attn.rope_layout,
        )  # fmt: skip

    def _forward_decode_kernels(self, x: Tensor, attn_kwargs: dict) -> Tensor:
        """`forward` (eval, no AdaLN, no cross-attention) with the weight products as 4 fused kernels."""
        attn, mlp, kernels = self.attn, self.mlp, decode_kernels
        norm = self.attn_norm
        qkv = kernels.rms_norm_linear(x, norm.weight, norm.eps, attn.wqkv.weight, attn.wqkv.bias)
        heads = attn.attend_projections(*attn.split_qkv(qkv), **attn_kwargs)
        counters = self._split_counters(x)
        x = kernels.linear_residual(heads, attn.wo.weight, x, attn.wo.bias, counters)
        norm = self.mlp_norm
        hidden = kernels.rms_norm_swiglu(x, norm.weight, norm.eps, mlp.w13.weight)
        return kernels.linear_residual(hidden, mlp.w2.weight, x, mlp.w2.bias, counters)

    def _split_counters(self, x: Tensor) -> Tensor | None:
        """The KV cache's arrival counters, which let the two residual products split K (`split_k_products`;
        none without a cache on x's device)."""
        cache = self.attn.kv_cache
        if not self.split_k_products or cache is None or cache.sync.device != x.device:
            return None
        return cache.sync

    def _cross(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        if not hasattr(self, "cross_attn"):
            return x
        return x + self.drop_path(
            self.cross_attn(self.cross_norm(x), context=context, context_mask=context_mask)
        )


class FinalAdaLN(nn.Module):
    """Adaptive final norm: `norm(x) * (1 + scale) + shift` with (shift, scale) from `adaln.1` in
    `config.final_adaln_chunks` order (DiT: shift, scale; VAR's `head_nm`: scale, shift)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.norm = make_norm(config.norm, config.dim, eps=config.norm_eps, affine=False)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(config.cond_size, 2 * config.dim))
        self.order = list(config.final_adaln_chunks)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        mod = _modulation(cond, self.adaln, 2, self.dim).unbind(-2)
        shift, scale = mod[self.order.index("shift")], mod[self.order.index("scale")]
        return self.norm(x) * (1 + scale) + shift


def init_adaln_zero(module: nn.Module) -> None:
    """Zero the modulation Linear of every Block / FinalAdaLN under `module` (AdaLN-zero: identity at init)."""
    for sub in module.modules():
        if isinstance(sub, Block | FinalAdaLN) and hasattr(sub, "adaln"):
            torch.nn.init.zeros_(sub.adaln[1].weight)
            torch.nn.init.zeros_(sub.adaln[1].bias)
