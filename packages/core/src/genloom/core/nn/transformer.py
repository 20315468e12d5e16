"""`Transformer`: the decoder-only / general stack (any mask kind, optional AdaLN and cross-attention),
with a static KV cache. `Encoder` and `EncoderDecoder` (seq2seq) live in `encoder_decoder.py`.

Weight names: `tok_embeddings`, `pos_embedding` [max_seq_len, dim] (learned positions), `layers.{i}.*`
(see `block.py` / `attention.py` / `mlp.py`), `norm` (or `norm.adaln.1.*` for an adaptive final norm),
`output` (vocab head). RoPE tables `rope_cos` / `rope_sin` [n_positions, head_dim/2] are non-persistent
float32 buffers indexed by position id (`set_rope_tables` installs any layout); KV caches are
non-persistent too, so `state_dict()` holds weights only.

Caching: `setup_cache(batch_size, max_seq_len)` allocates a `KVCache` per layer; every cached call gives
`input_pos` [L] (the slots its L tokens occupy: a 1-token step, a chunk, or a prompt prefill). By default
attention reads only the filled part of the cache, rounded up to 64 slots so that attention kernels see
few distinct shapes (one host sync per call to learn its length); with
`setup_cache(..., static=True)` it always reads the whole cache under a position mask, which has no
data-dependent Python branching (for torch.compile / CUDA graphs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.errors import ConfigError, InputError

from .attention import Attention
from .block import Block, FinalAdaLN, init_adaln_zero
from .config import TransformerConfig
from .kv_cache import KVCache
from .masks import block_ids_from_sizes, flex_mask_mod, structure_mask
from .norms import make_norm
from .padded_attention import KeyPadding, kernel_runs_on
from .rope import rope_tables_for
from .triton_launch import launches_cheaply

__all__ = ["Transformer"]

_KV_BUCKET = 64  # dynamic-mode attention reads ceil(filled / 64) * 64 cache slots
VOCAB_ALIGNMENT = 64  # `vocab_logits` pads a head of another size to a multiple of this ...
PADDED_HEAD_MIN_ROWS = 2048  # ... for a pass of at least this many rows (not a decode step)


class Transformer(nn.Module):
    """Token (or embedding) sequence -> logits (or hidden states with `features`)."""

    # a one-token step on the KV cache under the causal mask writes the cache and attends to slots 0..pos in
    # one kernel (`decode_attention`; on CUDA only in compiled code or a graph capture, where its launch is
    # cheap); False: the cache's index copies, then SDPA under a boolean mask
    one_query_kernel: bool = True
    # where `vocab_logits` pads an odd-sized head for a large pass (tests add "cpu")
    padded_head_devices: tuple[str, ...] = ("cuda",)

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise ConfigError(f"Transformer expects a TransformerConfig, got {type(config).__name__}")
        self.config = config
        has_embedding = config.vocab_size and config.embed_tokens
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim) if has_embedding else None
        if config.learned_pos:
            self.pos_embedding = nn.Parameter(torch.zeros(config.max_seq_len, config.dim))
        n = config.n_layers
        rates = [config.drop_path * i / (n - 1) if n > 1 else config.drop_path for i in range(n)]
        self.layers = nn.ModuleList(Block(config, drop_path=rate) for rate in rates)
        if config.use_final_adaln:
            self.norm = FinalAdaLN(config)
        else:
            self.norm = make_norm(config.norm, config.dim, eps=config.norm_eps, affine=config.norm_affine)
        self.output = None
        if config.vocab_size:
            self.output = nn.Linear(config.dim, config.vocab_size, bias=config.output_bias)
        tables = rope_tables_for(config)
        self.register_buffer("rope_cos", None if tables is None else tables[0], persistent=False)
        self.register_buffer("rope_sin", None if tables is None else tables[1], persistent=False)
        block_ids = block_ids_from_sizes(config.block_sizes, "cpu") if config.mask == "block_causal" else None
        self.register_buffer("block_ids", block_ids, persistent=False)
        self._cache_len = 0  # allocated cache length (0 = no cache)
        self._filled = 0  # highest written position + 1 (Python int; dynamic mode only)
        self._static = False
        self._compiled_decode = None
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self, std: float = 0.02) -> None:
        """N(0, std) for Linear / Embedding weights and learned positions, zero biases, AdaLN-zero zeros."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        if self.config.learned_pos:
            nn.init.normal_(self.pos_embedding, std=std)
        if self.config.tie_embeddings and self.output is not None:
            self.output.weight = self.tok_embeddings.weight
        if self.config.adaln == "adaln_zero":
            init_adaln_zero(self)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module hook
        """Keep the RoPE tables in float32 when the model is cast to bf16/fp16 (only their device follows)."""
        tables = (self.rope_cos, self.rope_sin)
        super()._apply(fn, recurse)
        if tables[0] is not None and self.rope_cos.dtype != torch.float32:
            self.rope_cos = tables[0].to(self.rope_cos.device)
            self.rope_sin = tables[1].to(self.rope_sin.device)
        return self

    def set_rope_tables(self, cos: Tensor, sin: Tensor) -> None:
        """Install custom RoPE tables [n_positions, head_dim/2] (row = position id), e.g. a grid with prefix
        tokens of zero or identity rotation (see `rope.py`)."""
        if self.config.rope == "none":
            raise ConfigError(
                "set_rope_tables needs a config with rope != 'none' (it selects where RoPE applies)"
            )
        half = self.config.head_size // 2
        if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[1] != half:
            raise InputError(
                f"RoPE tables must both be [n_positions, {half}], got {tuple(cos.shape)} and {tuple(sin.shape)}"
            )
        device = self.layers[0].attn.wo.weight.device
        self.rope_cos = cos.detach().float().to(device)
        self.rope_sin = sin.detach().float().to(device)

    def fuse_projections(self) -> None:
        """Fuse each layer's SwiGLU input projections into one GEMM (`MLP.fuse_gate`): fewer kernels per
        decode step. Outputs, parameter count and `state_dict` names stay the same."""
        for layer in self.layers:
            layer.mlp.fuse_gate()

    def _compute_weight(self) -> Tensor:
        """A floating-point weight: its dtype is the compute dtype (int8-quantised linears excluded)."""
        return next(p for p in self.parameters() if p.is_floating_point())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ cache
    def setup_cache(
        self,
        batch_size: int,
        max_seq_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        static: bool | None = None,
    ) -> None:
        """Allocate a zeroed KV cache of `max_seq_len` slots per layer. Called again with the same sizes it
        only zeroes the existing buffers (so compiled decode steps stay valid). `static` (default: False, or
        True after `compile_decode`) makes attention read the whole cache, with no host sync."""
        static = self._compiled_decode is not None if static is None else static
        if batch_size < 1 or max_seq_len < 1:
            raise InputError(
                f"setup_cache needs batch_size >= 1 and max_seq_len >= 1, got {batch_size}, {max_seq_len}"
            )
        limit = self._position_limit()
        if limit is not None and max_seq_len > limit:
            raise InputError(
                f"max_seq_len={max_seq_len} exceeds the {limit} positions this model has tables for"
            )
        if static and self.config.mask == "bidirectional":
            raise ConfigError("a static cache reads every slot; a bidirectional mask would see unfilled ones")
        weight = self._compute_weight()
        dtype = weight.dtype if dtype is None else dtype
        device = torch.device(weight.device if device is None else device)
        current = self.layers[0].attn.kv_cache
        if current is not None and tuple(current.k_cache.shape) == (
            batch_size, self.config.kv_heads, max_seq_len, self.config.head_size
        ) and current.k_cache.dtype == dtype and current.k_cache.device == device:  # fmt: skip
            for layer in self.layers:
                layer.attn.kv_cache.reset()
            self._cache_len, self._filled, self._static = max_seq_len, 0, static
            return
        for layer in self.layers:
            layer.attn.kv_cache = KVCache(
                batch_size=batch_size,
                n_kv_heads=self.config.kv_heads,
                max_seq_len=max_seq_len,
                head_dim=self.config.head_size,
                dtype=dtype,
                device=device,
            )
        self._cache_len, self._filled, self._static = max_seq_len, 0, static

    def compile_decode(self, *, mode: str = "reduce-overhead") -> None:
        """Route one-token cached steps (tokens [B, 1], optional cond) through `torch.compile` (CUDA graphs
        with the default mode), gpt-fast style; later caches are static. A step's logits are overwritten by
        the next step under CUDA graphs: clone them to keep them."""
        self._compiled_decode = torch.compile(self._decode_step, mode=mode, fullgraph=True, dynamic=False)
        if self._cache_len:
            self._static = True

    def _decode_step(self, tokens: Tensor, input_pos: Tensor, cond: Tensor | None) -> Tensor:
        return self.output(self.features(tokens, input_pos=input_pos, cond=cond)).float()

    def truncate_cache(self, length: int) -> None:
        """Forget every cached position >= `length` (speculative / Jacobi rollback)."""
        self._require_cache()
        if not 0 <= length <= self._cache_len:
            raise InputError(f"truncate_cache length must be in [0, {self._cache_len}], got {length}")
        for layer in self.layers:
            layer.attn.kv_cache.truncate(length)
        self._filled = min(self._filled, length)

    def reorder_cache(self, indices: Tensor) -> None:
        """Row i of every layer's cache becomes old row `indices[i]` [N] (beam search); N may differ from the
        cache batch (then the caches are re-allocated at batch N). A cross-attention context cached per row
        by `set_context` is gathered the same way (a batch-1 context is shared and left as is)."""
        self._require_cache()
        old_batch = self.layers[0].attn.kv_cache.batch_size
        for layer in self.layers:
            layer.attn.kv_cache.reorder(indices)
            cross = getattr(layer, "cross_attn", None)
            context_kv = None if cross is None else cross._context_kv
            if context_kv is not None and context_kv[0].shape[0] == old_batch and old_batch > 1:
                rows = indices.to(device=context_kv[0].device, dtype=torch.long)
                k, v, mask = context_kv
                mask = None if mask is None else mask.index_select(0, rows.to(mask.device))
                cross._context_kv = (k.index_select(0, rows), v.index_select(0, rows), mask)

    def reset_cache(self) -> None:
        """Empty the cache for a new batch (keeps the allocation)."""
        self._require_cache()
        for layer in self.layers:
            layer.attn.kv_cache.reset()
        self._filled = 0

    def remove_cache(self) -> None:
        """Free the caches and return to uncached (training / teacher-forcing) mode."""
        for layer in self.layers:
            layer.attn.kv_cache = None
        self._cache_len, self._filled = 0, 0

    @property
    def cache_length(self) -> int:
        """Allocated cache slots (0 without a cache)."""
        return self._cache_len

    def _require_cache(self) -> None:
        if not self._cache_len:
            raise InputError("no KV cache: call setup_cache(batch_size, max_seq_len) first")

    # ------------------------------------------------------------------ cross-attention context
    def set_context(self, context: Tensor, context_mask: Tensor | None = None) -> None:
        """Compute every layer's cross-attention keys/values of `context` [B, Lc, context_dim] once; later
        calls with `context=None` use them (the seq2seq decode path)."""
        if not self.config.cross_attn:
            raise ConfigError("set_context needs a config with cross_attn=True")
        self._check_context(context, context_mask)
        for layer in self.layers:
            layer.cross_attn.cache_context(context, context_mask)

    def clear_context(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "cross_attn"):
                layer.cross_attn.clear_context()

    def _check_context(self, context: Tensor, context_mask: Tensor | None) -> None:
        if context.dim() != 3 or context.shape[-1] != self.config.context_size:
            raise InputError(
                f"context must be [B, Lc, {self.config.context_size}], got {tuple(context.shape)}"
            )
        if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
            raise InputError(
                f"context_mask must be [B, Lc] = {tuple(context.shape[:2])}, got {tuple(context_mask.shape)}"
            )

    # ------------------------------------------------------------------ forward
    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids [B, L] -> embeddings [B, L, dim] (to combine with other inputs, e.g. a class prefix)."""
        if self.tok_embeddings is None:
            raise ConfigError(
                "this Transformer has no token embedding (vocab_size is None); pass embeddings="
            )
        if tokens.dtype not in (torch.int64, torch.int32) or tokens.dim() != 2:
            raise InputError(
                f"tokens must be an integer tensor [B, L], got {tokens.dtype} {tuple(tokens.shape)}"
            )
        return self.tok_embeddings(tokens)

    def forward(
        self,
        tokens: Tensor | None = None,
        *,
        embeddings: Tensor | None = None,
        input_pos: Tensor | None = None,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        rope_pos: Tensor | None = None,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        kv_len: int | None = None,
        attend_all_cached: bool = False,
    ) -> Tensor:
        """Logits [B, L, vocab] in float32. See `features` for the arguments."""
        if self.output is None:
            raise ConfigError("this Transformer has no output head (vocab_size is None); use features()")
        plain_step = (
            embeddings is None
            and mask is None
            and key_padding_mask is None
            and rope_pos is None
            and kv_len is None
            and not attend_all_cached
        )
        if self._compiled_decode is not None and self._static and plain_step and context is None:
            if tokens is not None and tokens.dim() == 2 and tokens.shape[1] == 1 and input_pos is not None:
                return self._compiled_decode(tokens, input_pos.to(tokens.device), cond)
        hidden = self.features(
            tokens,
            embeddings=embeddings,
            input_pos=input_pos,
            mask=mask,
            key_padding_mask=key_padding_mask,
            rope_pos=rope_pos,
            cond=cond,
            context=context,
            context_mask=context_mask,
            kv_len=kv_len,
            attend_all_cached=attend_all_cached,
        )
        return self.vocab_logits(hidden).float()

    def vocab_logits(self, hidden: Tensor) -> Tensor:
        """The output head on hidden states [..., dim] -> [..., vocab] in the weights' dtype. A large pass on
        CUDA whose vocabulary is not a multiple of 64 (MDLM's 50,258) runs the product on the weight padded
        to one (then slices): with rows of an odd number of bf16 elements cuBLAS falls back to a 2-element-
        aligned sm80 kernel (H100, MDLM OWT-small pass at batch 64: 21.3 ms for the head's 5 TFLOP); the
        padded copy costs one read of the weight."""
        output = self.output
        vocab = output.weight.shape[0]
        rows = hidden.numel() // hidden.shape[-1]
        padded = hidden.device.type in self.padded_head_devices and rows >= PADDED_HEAD_MIN_ROWS
        if not padded or vocab % VOCAB_ALIGNMENT == 0:
            return output(hidden)
        pad = -vocab % VOCAB_ALIGNMENT
        bias = None if output.bias is None else F.pad(output.bias, (0, pad))
        return F.linear(hidden, F.pad(output.weight, (0, 0, 0, pad)), bias)[..., :vocab]

    def features(
        self,
        tokens: Tensor | None = None,
        *,
        embeddings: Tensor | None = None,
        input_pos: Tensor | None = None,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        rope_pos: Tensor | None = None,
        cond: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        kv_len: int | None = None,
        attend_all_cached: bool = False,
    ) -> Tensor:
        """Final-norm hidden states [B, L, dim], for heads other than the vocab projection.

        tokens [B, L] ids, or embeddings [B, L, dim] (exactly one). input_pos [L]: position ids (default
        0..L-1; required with a cache: the slots written). mask: bool override of the structural mask,
        [.., L, Lk] with Lk = L uncached or the cache length cached (True = attend). key_padding_mask [B, Lk]
        (True = real key). rope_pos [L]: RoPE table rows if different from input_pos. cond [B, cond_dim] or
        [B, L, cond_dim] for AdaLN. context [B, Lc, context_dim] / context_mask [B, Lc] for cross-attention.
        kv_len (cached only): attend to the first kv_len cache slots, a length the caller knows without
        asking the device (no host sync, so the call can be captured in a CUDA graph); the structural mask
        still applies within them. attend_all_cached (with kv_len): the caller knows that every query sees
        every one of those slots (a whole block decoded at once, VAR's scales), so attention runs unmasked,
        on the flash kernels, as VAR's own cached inference does.
        """
        x = self._inputs(tokens, embeddings)
        batch, length, _ = x.shape
        # a static cache kept for captured decode graphs does not turn an input_pos-free call into a cached one
        cached = self._cache_len > 0 and not (input_pos is None and self._static)
        if input_pos is None:
            if cached:
                raise InputError("a cached forward needs input_pos (the cache slots of the given tokens)")
            input_pos = torch.arange(length, device=x.device)
            default_pos = True
        else:
            default_pos = False
            if input_pos.dim() != 1 or input_pos.shape[0] != length:
                raise InputError(
                    f"input_pos must be 1-D with {length} positions, got shape {tuple(input_pos.shape)}"
                )
            input_pos = input_pos.to(device=x.device, dtype=torch.long)
        if cached and batch != self.layers[0].attn.kv_cache.batch_size:
            raise InputError(
                f"batch {batch} differs from the cache batch {self.layers[0].attn.kv_cache.batch_size}"
            )
        self._check_conditioning(batch, cond, context, context_mask)
        filled = None
        if attend_all_cached and (kv_len is None or mask is not None or key_padding_mask is not None):
            raise InputError("attend_all_cached needs kv_len and no mask / key_padding_mask")
        if kv_len is not None:
            if not cached or isinstance(kv_len, bool) or not 0 < int(kv_len) <= self._cache_len:
                raise InputError(
                    f"kv_len needs a cache and must lie in [1, {self._cache_len}] (the cache length), got {kv_len!r}"
                )
            kv_len = int(kv_len)
        elif cached and not self._static:
            filled = self._track_filled(input_pos, length)
            # read the filled slots rounded up to a bucket: few distinct shapes (kernels plan per shape)
            kv_len = min(self._cache_len, -(-filled // _KV_BUCKET) * _KV_BUCKET)
        if not cached:
            limit = self._position_limit()
            if default_pos and limit is not None and length > limit:
                raise InputError(
                    f"sequence length {length} exceeds the {limit} positions this model has tables for"
                )
        if self.config.learned_pos:
            x = x + self.pos_embedding[input_pos].to(x.dtype)
        rope = None
        if self.rope_cos is not None:
            rows = input_pos if rope_pos is None else rope_pos.to(device=x.device, dtype=torch.long)
            rope = (self.rope_cos[rows], self.rope_sin[rows])
        if attend_all_cached:
            attn_mask, is_causal, block_mask = None, False, None
        else:
            # a key-padding mask stays one flag per key where the padded-attention kernel will take it; else
            # the dense mask is built here, once for every layer
            padded = (
                Attention.padded_kernel
                and kernel_runs_on(x)
                and not (self.training and torch.is_grad_enabled())
            )
            attn_mask, is_causal, block_mask = self._plan_attention(
                input_pos, default_pos, cached, kv_len, filled, mask, key_padding_mask, batch, padded=padded
            )
        for layer in self.layers:
            x = layer(
                x,
                rope=rope,
                mask=attn_mask,
                is_causal=is_causal,
                input_pos=input_pos if cached else None,
                kv_len=kv_len,
                block_mask=block_mask,
                cond=cond,
                context=context,
                context_mask=context_mask,
            )
        return self.norm(x, cond) if isinstance(self.norm, FinalAdaLN) else self.norm(x)

    # ------------------------------------------------------------------ helpers
    def _inputs(self, tokens: Tensor | None, embeddings: Tensor | None) -> Tensor:
        if (tokens is None) == (embeddings is None):
            raise InputError("pass exactly one of tokens [B, L] or embeddings [B, L, dim]")
        if tokens is not None:
            return self.embed(tokens)
        if (
            embeddings.dim() != 3
            or embeddings.shape[-1] != self.config.dim
            or not embeddings.is_floating_point()
        ):
            raise InputError(
                f"embeddings must be a float tensor [B, L, {self.config.dim}], got {tuple(embeddings.shape)}"
            )
        return embeddings

    def _position_limit(self) -> int | None:
        limits = []
        if self.rope_cos is not None:
            limits.append(self.rope_cos.shape[0])
        if self.config.learned_pos:
            limits.append(self.config.max_seq_len)
        if self.block_ids is not None:
            limits.append(self.block_ids.numel())
        return min(limits) if limits else None

    def _check_conditioning(
        self, batch: int, cond: Tensor | None, context: Tensor | None, mask: Tensor | None
    ) -> None:
        needs_cond = self.config.adaln != "none" or self.config.use_final_adaln
        if needs_cond:
            if cond is None:
                raise InputError(f"this model is AdaLN-conditioned: pass cond [B, {self.config.cond_size}]")
            if cond.dim() not in (2, 3) or cond.shape[0] != batch or cond.shape[-1] != self.config.cond_size:
                raise InputError(
                    f"cond must be [B={batch}, {self.config.cond_size}] (or [B, L, .]), got {tuple(cond.shape)}"
                )
        elif cond is not None:
            raise InputError("cond was given but the model has no AdaLN conditioning (adaln='none')")
        if context is not None:
            if not self.config.cross_attn:
                raise InputError("context was given but the model has no cross-attention (cross_attn=False)")
            self._check_context(context, mask)

    def _track_filled(self, input_pos: Tensor, length: int) -> int:
        """Dynamic mode: one host sync to learn how many cache slots are filled (attention reads only those)."""
        low, high = (int(v) for v in torch.stack([input_pos.min(), input_pos.max()]).tolist())
        if low < 0 or high >= self._cache_len:
            raise InputError(
                f"input_pos must lie in [0, {self._cache_len}) (the cache length), got [{low}, {high}]"
            )
        self._filled = max(self._filled, high + 1)
        return self._filled

    def _plan_attention(
        self,
        input_pos: Tensor,
        default_pos: bool,
        cached: bool,
        kv_len: int | None,
        filled: int | None,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
        batch: int,
        *,
        padded: bool = False,
    ) -> tuple[Tensor | KeyPadding | None, bool, object | None]:
        """(bool mask [B|1, 1, L, Lk], a `KeyPadding` (a bidirectional pass with a key-padding mask only, when
        `padded`: the padded-attention kernel will take it) or None, is_causal, FlexAttention block mask or None)."""
        cfg = self.config
        device = input_pos.device
        length = input_pos.shape[0]
        if cached and length == 1 and cfg.mask == "causal" and mask is None and key_padding_mask is None:
            if self.one_query_kernel and launches_cheaply(device):  # Attention runs `decode_attention`
                return None, True, None
        if cached:
            n_keys = self._cache_len if kv_len is None else kv_len
            key_pos = torch.arange(n_keys, device=device)
        else:
            n_keys, key_pos = length, input_pos
        full_keys = self._cache_len if cached else length
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (batch, full_keys):
            raise InputError(
                f"key_padding_mask must be [B, Lk] = ({batch}, {full_keys}), got {tuple(key_padding_mask.shape)}"
            )
        if mask is not None and (
            mask.dim() < 2 or mask.shape[-2:] != (length, full_keys) or mask.dtype != torch.bool
        ):
            raise InputError(
                f"mask must be a bool tensor [..., {length}, {full_keys}], got {mask.dtype} {tuple(mask.shape)}"
            )
        if (
            padded
            and key_padding_mask is not None
            and mask is None
            and not cached
            and default_pos
            and cfg.mask == "bidirectional"
            and cfg.attn_impl != "flex"
        ):  # the padding alone: a query sees the valid keys and itself (no empty rows), one flag per key
            return (
                KeyPadding(key_padding_mask.to(device=device, dtype=torch.bool), self_diagonal=True),
                False,
                None,
            )
        structured = cfg.mask != "bidirectional" or key_padding_mask is not None
        if cfg.attn_impl == "flex" and not cached and mask is None and default_pos and structured:
            return None, False, self._flex_block_mask(batch, length, key_padding_mask)
        if not cached and mask is None and key_padding_mask is None and default_pos:
            if cfg.mask == "causal":
                return None, True, None
            if cfg.mask == "bidirectional":
                return None, False, None
        if mask is not None:
            attn_mask = mask[..., :n_keys]
        else:
            attn_mask = structure_mask(
                cfg.mask, input_pos, key_pos, block_ids=self.block_ids, prefix_len=cfg.prefix_len
            )
        if filled is not None and filled < n_keys:  # bucket slots past the filled part are never attended
            attn_mask = attn_mask & (key_pos < filled)
        while attn_mask.dim() < 4:
            attn_mask = attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            padding = key_padding_mask[:, :n_keys].to(device=device, dtype=torch.bool)[:, None, None, :]
            diagonal = key_pos[None, :] == input_pos[:, None]  # a query always sees itself (no empty rows)
            attn_mask = (attn_mask & padding) | diagonal
        return attn_mask, False, None

    def _flex_block_mask(self, batch: int, length: int, key_padding_mask: Tensor | None) -> object:
        """FlexAttention block mask for an uncached forward at positions 0..L-1 (other cases use SDPA)."""
        from torch.nn.attention.flex_attention import create_block_mask

        padding = None if key_padding_mask is None else key_padding_mask.to(torch.bool)
        mask_mod = flex_mask_mod(
            self.config.mask, block_ids=self.block_ids, prefix_len=self.config.prefix_len, key_padding=padding
        )
        device = self.layers[0].attn.wo.weight.device
        return create_block_mask(
            mask_mod, batch if padding is not None else None, None, length, length, device=device
        )
