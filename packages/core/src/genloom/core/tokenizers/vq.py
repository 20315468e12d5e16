"""Vector quantisation (VQ-VAE, van den Oord et al. 2017) with the training aids later work relies on.

`VectorQuantizer` maps every vector of a [B, C, H, W] or [B, T, D] tensor to its nearest codebook entry,
passes gradients straight through, and trains its codebook either by a codebook loss or by exponential
moving averages (EMA, with Laplace smoothing). Options: L2-normalised lookup (cosine distance, as in
LlamaGen's VQ-16 and ViT-VQGAN), a projection into a lower-dimensional codebook space, windowed usage
statistics and dead-code restart (codes unused for a while are re-seeded with recent encoder outputs).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.tokenizers.base import (
    Quantizer,
    QuantizerOutput,
    check_features,
    check_indices,
    codebook_projections,
    move_channels_back,
    move_channels_last,
    perplexity_from_counts,
)
from genloom.core.tokenizers.errors import TokenizerInputError

# Above this many distance entries the nearest-code search runs in chunks (bounded memory).
_MAX_DISTANCE_ENTRIES = 1 << 26


def squared_distances(z: Tensor, codebook: Tensor) -> Tensor:
    """||z_n - e_k||^2 for z [N, D] and codebook [K, D], as ||z||^2 + ||e||^2 - 2 z.e (VQ-VAE / VAR form)."""
    d = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(codebook.square(), dim=1)
    return d.addmm_(z, codebook.T, beta=1, alpha=-2)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def nearest_code(z: Tensor, codebook: Tensor, *, cosine: bool = False) -> Tensor:
    """Index of the nearest codebook row for every row of `z` (squared L2, or cosine when `cosine`).

    Runs in float32 whatever the input dtype (bf16 distances pick wrong codes), chunked for large inputs.
    """
    z = z.float()
    codebook = codebook.float()
    if cosine:
        z = F.normalize(z, dim=-1)
        codebook = F.normalize(codebook, dim=-1)
    chunk = max(1, _MAX_DISTANCE_ENTRIES // max(1, codebook.shape[0]))
    out = []
    for start in range(0, z.shape[0], chunk):
        part = z[start : start + chunk]
        if cosine:
            out.append(torch.argmax(part @ codebook.T, dim=1))
        else:
            out.append(torch.argmin(squared_distances(part, codebook), dim=1))
    return torch.cat(out) if out else z.new_zeros(0, dtype=torch.long)


# ----------------------------------------------------------------------------------------------------
# Dead-code restart, shared by VectorQuantizer and MultiScaleResidualVQ. Both run on the device with no
# host read (masks and torch.where instead of nonzero / boolean indexing), so they can run every step.


@torch.no_grad()
def mark_used_codes(train_steps: Tensor, last_used_step: Tensor, counts: Tensor) -> None:
    """Advance the step counter `train_steps` (0-d) and stamp every code with `counts` [K] > 0 with it."""
    train_steps += 1
    last_used_step.copy_(torch.where(counts > 0, train_steps, last_used_step))


@torch.no_grad()
def restart_idle_codes(
    weight: Tensor, train_steps: Tensor, last_used_step: Tensor, *, after: int, vectors: Tensor
) -> Tensor:
    """Re-seed codes idle for `after` steps with random rows of `vectors` [N, D] (recent encoder outputs).

    `weight` [K, D] and `last_used_step` [K] (-1: never used) change in place; restarted codes get a fresh
    grace period. Rows are drawn without replacement when N >= K. Under torch.distributed rank 0's draws
    are broadcast (the usage counts must already agree across ranks). Returns the restarted codes' mask [K].
    """
    dead = train_steps - last_used_step.clamp_min(0) >= after
    k, n = weight.shape[0], vectors.shape[0]
    if n == 0:
        fresh = weight.clone()
    elif n >= k:
        fresh = vectors[torch.randperm(n, device=vectors.device)[:k]].to(weight.dtype)
    else:
        fresh = vectors[torch.randint(n, (k,), device=vectors.device)].to(weight.dtype)
    if _distributed():
        dist.broadcast(fresh, src=0)
    weight.copy_(torch.where(dead.unsqueeze(1), fresh, weight))
    last_used_step.copy_(torch.where(dead, train_steps, last_used_step))
    return dead


class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer with straight-through gradients.

    Args:
        dim: channels of the input.
        codebook_size: number of codes K (the vocabulary size).
        codebook_dim: dimension of the codebook space; when it differs from `dim` the input is
            projected in (Linear dim->codebook_dim) and the codes projected out again.
        channel_dim: where the channels are: 1 for channel-first images [B, C, H, W], -1 for [B, T, D].
        beta: weight of the commitment loss ||z - sg(e)||^2 (0.25 in VQ-VAE).
        use_ema: train the codebook by EMA of assigned vectors instead of the codebook loss.
        ema_decay, ema_eps: EMA decay and Laplace-smoothing epsilon of the cluster sizes.
        l2_normalize: normalise inputs and codes before the lookup; codes are then unit vectors
            (LlamaGen VQ-16's `codebook_l2_norm`, ViT-VQGAN).
        usage_window: a code counts as "used" in the `codebook_usage` metric when it was picked in one of
            the last `usage_window` training steps.
        dead_code_after: when set, codes unused for this many training steps are replaced by random
            vectors of the current batch (after projection), which revives collapsed codebooks.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        channel_dim: int = -1,
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        l2_normalize: bool = False,
        usage_window: int = 100,
        dead_code_after: int | None = None,
    ) -> None:
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be positive, got dim={dim}, {codebook_size=}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        if dead_code_after is not None and dead_code_after < 1:
            raise ValueError(
                f"dead_code_after must be a positive number of steps or None, got {dead_code_after}"
            )
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim or dim
        self.channel_dim = channel_dim
        self.beta = beta
        self.use_ema = use_ema
        self.ema_decay = ema_decay
        self.ema_eps = ema_eps
        self.l2_normalize = l2_normalize
        self.usage_window = usage_window
        self.dead_code_after = dead_code_after

        self.project_in, self.project_out = codebook_projections(dim, self.codebook_dim)

        self.embedding = nn.Embedding(codebook_size, self.codebook_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if use_ema:
            self.embedding.weight.requires_grad_(False)
            # Start the running sums at "each code saw itself once", so unused codes keep their value.
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())
        # Training step counter and the step at which every code was last picked (-1: never).
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_used_step", torch.full((codebook_size,), -1, dtype=torch.long))
        # Codes restarted so far, read by training loops when they log (not saved: a run statistic).
        self.register_buffer("codes_restarted", torch.zeros((), dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ lookup

    @property
    def codebook(self) -> Tensor:
        """The codes as used by the lookup, [K, codebook_dim] (unit rows when `l2_normalize`)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    def forward(self, z: Tensor) -> QuantizerOutput:
        check_features(z, channels=self.dim, channel_dim=self.channel_dim, name=type(self).__name__)
        z_last = move_channels_last(z, self.channel_dim)
        z_e = self.project_in(z_last)
        if self.l2_normalize:
            z_e = F.normalize(z_e, dim=-1)
        flat = z_e.reshape(-1, self.codebook_dim)
        indices = nearest_code(flat, self.codebook)
        quantized = F.embedding(indices, self.codebook).view_as(z_e).to(z_e.dtype)

        commit_loss = F.mse_loss(z_e, quantized.detach())
        if self.use_ema:
            loss = self.beta * commit_loss
        else:
            loss = F.mse_loss(quantized, z_e.detach()) + self.beta * commit_loss

        counts = torch.bincount(indices, minlength=self.codebook_size)
        if self.training:
            self._update_state(flat.detach(), indices, counts)

        codes = z_e + (quantized - z_e).detach()  # straight-through estimator
        codes = move_channels_back(self.project_out(codes), self.channel_dim)
        metrics = {
            "perplexity": perplexity_from_counts(counts),
            "codebook_usage": self.codebook_usage(),
            "quantization_error": commit_loss.detach(),
        }
        return QuantizerOutput(codes, indices.view(z_e.shape[:-1]), loss, metrics)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        check_indices(indices, vocab_size=self.codebook_size, name=type(self).__name__)
        codes = self.project_out(F.embedding(indices.long(), self.codebook))
        return move_channels_back(codes, self.channel_dim)

    @torch.no_grad()
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Ids of vectors that lie on the decoded codebook (the exact inverse of `indices_to_codes`).

        Unlike `encode`, the lookup happens in the output space, so it also inverts the projection.
        """
        check_features(codes, channels=self.dim, channel_dim=self.channel_dim, name=type(self).__name__)
        codes_last = move_channels_last(codes, self.channel_dim)
        table = self.project_out(self.codebook)
        return nearest_code(codes_last.reshape(-1, self.dim), table).view(codes_last.shape[:-1])

    # ------------------------------------------------------------------ statistics and codebook upkeep

    def codebook_usage(self) -> Tensor:
        """Fraction of codes picked in the last `usage_window` training steps."""
        recent = (self.last_used_step >= 0) & (self.last_used_step > self.train_steps - self.usage_window)
        return recent.float().mean()

    @torch.no_grad()
    def _update_state(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        # Under torch.distributed every rank sees the global counts and sums, so codebooks, usage
        # statistics and restarts stay identical across ranks (DDP does not sync buffers or no-grad weights).
        if _distributed():
            counts = counts.clone()
            dist.all_reduce(counts)
        mark_used_codes(self.train_steps, self.last_used_step, counts)
        if self.use_ema:
            self._ema_update(flat.float(), indices, counts.float())
        if self.dead_code_after is not None:
            self._restart(flat)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        decay = self.ema_decay
        embed_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, flat)
        if _distributed():
            dist.all_reduce(embed_sum)
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_embed_sum.mul_(decay).add_(embed_sum, alpha=1 - decay)
        total = self.ema_cluster_size.sum()
        smoothed = (
            (self.ema_cluster_size + self.ema_eps) / (total + self.codebook_size * self.ema_eps) * total
        )
        self.embedding.weight.data.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_dead_codes(self, recent_vectors: Tensor) -> int:
        """Replace codes idle for `dead_code_after` steps by random rows of `recent_vectors` [N, codebook_dim].

        Returns the number of codes replaced (a host read; training steps call `_restart`, which has none).
        Under torch.distributed the replacements are rank 0's picks, broadcast to every rank.
        """
        if self.dead_code_after is None:
            raise TokenizerInputError("restart_dead_codes needs dead_code_after to be set")
        return int(self._restart(recent_vectors).sum())

    @torch.no_grad()
    def _restart(self, recent_vectors: Tensor) -> Tensor:
        weight = self.embedding.weight.data
        dead = restart_idle_codes(
            weight, self.train_steps, self.last_used_step, after=self.dead_code_after, vectors=recent_vectors
        )
        if self.use_ema:  # restarted codes start their running sums afresh ("saw itself once")
            self.ema_embed_sum.copy_(torch.where(dead.unsqueeze(1), weight.float(), self.ema_embed_sum))
            self.ema_cluster_size.masked_fill_(dead, 1.0)
        self.codes_restarted += dead.sum()
        return dead

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"channel_dim={self.channel_dim}, ema={self.use_ema}, l2_normalize={self.l2_normalize}"
        )
