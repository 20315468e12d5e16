"""Next-scale prediction (VAR, Tian et al. 2024): predict every token map of a scale at once, coarse to fine.

The transformer is core's `Transformer` configured as VAR's blocks: AdaLN (VAR's chunk order) conditioned on
the class embedding, cosine attention with a learned per-head scale, q/v-only qkv bias, tanh-GELU MLP, an
adaptive final norm (scale, shift) before the head, and a block-causal mask over scales. The inputs are the
tokenizer's accumulated feature maps, area-downsampled to each next scale (`idxBl_to_var_input`), so the
model needs the tokenizer's `MultiScaleResidualVQ` (passed to each call, as VAR's quantizer proxy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.nn import VAR_ADALN_CHUNKS, Transformer, TransformerConfig
from genloom.core.nn.cuda_graphs import GraphCache
from genloom.core.sampling.guidance import apply_guidance
from genloom.core.sampling.logits import SamplingParams, sample_from_logits
from genloom.core.tokenizers.multiscale_vq import DEFAULT_PATCH_NUMS, MultiScaleResidualVQ
from genloom.image.errors import ImageInputError
from genloom.image.io import ZooComponent, register_image_family
from genloom.image.models.class_embedding import ClassEmbedding

NEXT_SCALE_FAMILY = "image.var"


def var_transformer_config(
    *, dim: int, depth: int, n_heads: int, vocab_size: int, patch_nums: Sequence[int], **overrides: Any
) -> TransformerConfig:
    """core TransformerConfig of VAR's blocks (`models/basic_var.py`, attn_l2_norm=True, shared_aln=False)."""
    settings: dict[str, Any] = dict(
        dim=dim,
        n_layers=depth,
        n_heads=n_heads,
        vocab_size=vocab_size,
        embed_tokens=False,
        output_bias=True,
        max_seq_len=sum(p * p for p in patch_nums),
        mlp="gelu_tanh",
        mlp_ratio=4.0,
        mlp_bias=True,
        norm="layernorm",
        norm_eps=1e-6,
        norm_affine=False,
        fused_qkv=True,
        qkv_bias="qv",
        attn_out_bias=True,
        qk_norm="l2",
        mask="block_causal",
        block_sizes=[p * p for p in patch_nums],
        adaln="adaln",
        adaln_chunks=list(VAR_ADALN_CHUNKS),
        final_adaln=True,
        final_adaln_chunks=["scale", "shift"],
    )
    settings.update(overrides)
    return TransformerConfig(**settings)


@dataclass
class NextScaleConfig:
    transformer: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    patch_nums: Sequence[int] = DEFAULT_PATCH_NUMS
    codebook_dim: int = 32  # VAR's Cvae: width of the tokenizer features fed back as inputs
    class_dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {
            "transformer": dict(self.transformer),
            "num_classes": self.num_classes,
            "patch_nums": list(self.patch_nums),
            "codebook_dim": self.codebook_dim,
            "class_dropout": self.class_dropout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NextScaleConfig:
        return cls(**{k: v for k, v in data.items() if k != "family"})


class NextScaleAR(ZooComponent, nn.Module):
    """VAR: class -> token maps of `patch_nums` scales, each predicted in one forward from the coarser ones."""

    family = NEXT_SCALE_FAMILY
    config_class = NextScaleConfig

    def __init__(self, config: NextScaleConfig) -> None:
        super().__init__()
        self.config = config
        tcfg = TransformerConfig.from_dict(dict(config.transformer))
        self.transformer = Transformer(tcfg)
        dim = tcfg.dim
        sizes = [p * p for p in config.patch_nums]
        self.first_l = sizes[0]
        self.num_tokens = sum(sizes)
        self.class_emb = ClassEmbedding(config.num_classes, dim, dropout=config.class_dropout)
        self.word_embed = nn.Linear(config.codebook_dim, dim)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, dim).normal_(std=0.02))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.num_tokens, dim).normal_(std=0.02))  # noqa: N815 - VAR's name
        self.lvl_embed = nn.Embedding(len(sizes), dim)
        nn.init.normal_(self.lvl_embed.weight, std=0.02)
        levels = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
        self.register_buffer("scale_index", levels, persistent=False)
        self.scale_bounds = [(sum(sizes[:i]), sum(sizes[: i + 1])) for i in range(len(sizes))]
        self._bounds_by_length = {end - start: (start, end) for start, end in self.scale_bounds}
        self._scale_graphs = GraphCache(
            self._scale_forward, watch=self
        )  # the fast path: one CUDA graph per scale
        self._compiled: dict[str, Callable] = {}  # torch.compile'd `_scale_forward` per backend
        self._compiled_graphs: dict[str, GraphCache] = {}  # their CUDA graphs, per backend

    @property
    def vocab_size(self) -> int:
        return self.transformer.config.vocab_size

    def _check_quantizer(self, quantizer: MultiScaleResidualVQ) -> None:
        if (
            list(quantizer.patch_nums) != list(self.config.patch_nums)
            or quantizer.dim != self.config.codebook_dim
        ):
            raise ImageInputError(
                f"tokenizer quantizer has patch_nums {quantizer.patch_nums} and dim {quantizer.dim}; this model "
                f"expects {list(self.config.patch_nums)} and {self.config.codebook_dim}"
            )

    def _positions(self, start: int, end: int) -> torch.Tensor:
        return self.lvl_embed(self.scale_index[start:end]).unsqueeze(0) + self.pos_1LC[:, start:end]

    def forward(self, labels: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:  # noqa: N803
        """Teacher forcing: logits (B, L, V) from the class and the next-scale inputs (B, L - first_l, Cvae)."""
        cond = self.class_emb(labels)
        batch = cond.shape[0]
        sos = cond.unsqueeze(1).expand(batch, self.first_l, -1) + self.pos_start.expand(batch, -1, -1)
        x = torch.cat([sos, self.word_embed(x_BLCv_wo_first_l.float())], dim=1)
        x = x + self._positions(0, x.shape[1])
        return self.transformer(embeddings=x, cond=cond)

    def loss(
        self, labels: torch.Tensor, indices: torch.Tensor, quantizer: MultiScaleResidualVQ
    ) -> torch.Tensor:
        """Cross-entropy over all scales' tokens (B, L) given the class (VAR's training objective)."""
        self._check_quantizer(quantizer)
        with torch.no_grad():
            x = quantizer.idxBl_to_var_input(indices)
        logits = self(labels, x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), indices.reshape(-1))

    # ------------------------------------------------------------------ cached scale-by-scale decoding

    def _cfg_labels(self, labels: torch.Tensor) -> torch.Tensor:
        labels = self.class_emb.check(labels)
        return torch.cat([labels, torch.full_like(labels, self.class_emb.null_class)])

    def _compiled_scale_forward(self, backend: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`_scale_forward` through `torch.compile` with `backend` (one graph per scale length, fused
        elementwise work: AdaLN modulation, cosine-attention norms, residual gates). Eager, the scale loop at
        batch 64 spent more GPU time in those unfused kernels than in its matrix products."""
        if backend not in self._compiled:
            self._compiled[backend] = torch.compile(self._scale_forward, backend=backend, dynamic=False)
        compiled = self._compiled[backend]
        limit = max(64, 2 * len(self.config.patch_nums))

        def forward(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            # one compiled graph per scale: more than dynamo's default recompile limit for VAR's 10 scales
            with torch._dynamo.config.patch(recompile_limit=limit):
                return compiled(x, cond)

        return forward

    def _scale_forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One scale's cached forward: inputs (2B, pn*pn, D) -> logits; the scale is known from the length,
        and the cache slots read are exactly those filled (no host sync: capturable as a CUDA graph)."""
        start, end = self._bounds_by_length[x.shape[1]]
        positions = torch.arange(start, end, device=x.device)
        return self.transformer(
            embeddings=x, cond=cond, input_pos=positions, kv_len=end, attend_all_cached=True
        )

    def _run_scales(self, labels, quantizer, choose, cfg_scale, graphed=False, compiled=False):  # noqa: ANN001, ANN202
        """The VAR inference loop; `choose(si, guided_logits, raw_logits)` returns that scale's ids (B, pn*pn).
        `graphed` replays each scale's transformer pass from a CUDA graph on a cache kept between calls;
        `compiled` (a torch.compile backend name, or True for inductor) compiles each pass first."""
        self._check_quantizer(quantizer)
        batch = labels.shape[0]
        batch_labels = self._cfg_labels(labels)
        cond = self.class_emb(batch_labels)
        n_scales = len(self.config.patch_nums)
        side = self.config.patch_nums[-1]
        f_hat = cond.new_zeros(batch, self.config.codebook_dim, side, side)
        x = (
            cond.unsqueeze(1).expand(2 * batch, self.first_l, -1)
            + self.pos_start
            + self._positions(0, self.first_l)
        )
        self.transformer.setup_cache(2 * batch, self.num_tokens, static=bool(graphed or compiled) or None)
        forward, passes = self._scale_forward, self._scale_graphs
        if compiled:
            backend = "inductor" if compiled is True else str(compiled)
            forward = self._compiled_scale_forward(backend)
            if backend not in self._compiled_graphs:
                self._compiled_graphs[backend] = GraphCache(forward, watch=self)
            passes = self._compiled_graphs[backend]
        if graphed:
            passes.refresh()  # a reallocated cache or moved weights: capture again
        chosen = []
        try:
            for si, pn in enumerate(self.config.patch_nums):
                raw = passes(None, x, cond) if graphed else forward(x, cond)
                t = cfg_scale * si / max(1, n_scales - 1)  # VAR's ramp: no guidance at the first scale
                cond_logits, uncond_logits = raw.chunk(2)
                guided = apply_guidance(cond_logits, uncond_logits, 1.0 + t)
                idx = choose(si, guided, raw)
                chosen.append(idx)
                h = quantizer.embedding(idx).transpose(1, 2).reshape(batch, self.config.codebook_dim, pn, pn)
                f_hat, next_map = quantizer.get_next_autoregressive_input(si, n_scales, f_hat, h)
                if si != n_scales - 1:
                    nstart, nend = self.scale_bounds[si + 1]
                    tokens = next_map.flatten(2).transpose(1, 2)
                    x = (self.word_embed(tokens) + self._positions(nstart, nend)).repeat(2, 1, 1)
        finally:
            if not graphed:
                self.transformer.remove_cache()
        return chosen, f_hat

    @torch.no_grad()
    def decode_logits(
        self,
        labels: torch.Tensor,
        indices: Sequence[torch.Tensor],
        quantizer: MultiScaleResidualVQ,
        *,
        cfg_scale: float,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Cached decoding fed the given per-scale ids: (raw (2B, pn^2, V) logits, guided (B, pn^2, V) logits) per scale."""
        raws, guideds = [], []

        def feed(si, guided, raw):  # noqa: ANN001, ANN202
            raws.append(raw)
            guideds.append(guided)
            return indices[si].long()

        self._run_scales(self.class_emb.check(labels), quantizer, feed, cfg_scale)
        return raws, guideds

    @torch.no_grad()
    def generate(
        self,
        labels: torch.Tensor,
        quantizer: MultiScaleResidualVQ,
        *,
        cfg_scale: float = 1.5,
        sampling: SamplingParams | None = None,
        generator: torch.Generator | None = None,
        graphed: bool = False,
        compiled: bool | str = False,
        return_fhat: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Sample the scale-major ids (B, L) of each requested class; CFG ramps from 1 to 1 + cfg_scale.

        `graphed=True` (the GPU fast path) runs each scale's transformer pass as a CUDA graph captured on
        first use per batch size, on a KV cache sized for all scales and kept between calls; the sampling
        between scales stays eager. Same tokens as the eager loop for the same seed. `compiled=True` also
        compiles each scale's pass with torch.compile (inductor; a string names another backend) before it is
        captured: fused kernels, the same tokens up to bf16 rounding; the first call compiles 10 graphs.
        `return_fhat` also returns the summed code map f_hat (B, Cvae, h, w) the loop built, the decoder's input
        (as VAR's sampler decodes it), so decoding need not accumulate the codes again."""
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
        sampling = sampling or SamplingParams()
        chosen, f_hat = self._run_scales(
            self.class_emb.check(labels),
            quantizer,
            lambda si, guided, raw: sample_from_logits(guided, sampling, generator),
            cfg_scale,
            graphed=graphed,
            compiled=compiled,
        )
        ids = torch.cat(chosen, dim=1)
        return (ids, f_hat) if return_fhat else ids

    # ------------------------------------------------------------------ files


register_image_family(NextScaleAR)
