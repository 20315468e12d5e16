"""The contracts every genloom tokenizer keeps, and the small helpers they share.

Quantizers (`Quantizer`) turn continuous vectors into discrete tokens with one verb set:
``forward(z) -> QuantizerOutput`` (training and inference), ``indices_to_codes(indices)`` (tokens back
to vectors), ``codebook_size`` (the vocabulary size), plus ``encode``/``decode``/``vocab_size`` aliases
that match the text tokenizers. Text tokenizers (`TextTokenizer`) turn strings into ids and back.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from genloom.core.tokenizers.errors import TokenIndexError, TokenizerInputError


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns.

    codes: the quantized tensor, same shape and layout as the input; in training it carries the
        straight-through gradient to the input.
    indices: int64 token ids; the input shape without its channel dim (residual quantizers add a
        trailing codebook dim, the multi-scale quantizer returns the scale-major sequence [B, L]).
    loss: scalar auxiliary loss to add to the reconstruction loss (0 when the quantizer has none).
    metrics: detached scalars for logging (perplexity, codebook usage, quantisation error, ...).
    """

    codes: Tensor
    indices: Tensor
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Quantizer(nn.Module, ABC):
    """Base class of the learned quantizers: one verb set for VQ, residual VQ, multi-scale VQ, FSQ, LFQ.

    Subclasses set `codebook_size` and implement `forward` and `indices_to_codes`. `encode` and
    `decode` are the side-effect-free inference verbs (no EMA update, no code restart, no dropout).
    """

    codebook_size: int

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize `z`; in training mode also update internal statistics (EMA, usage, restarts)."""

    @abstractmethod
    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Map token ids back to the quantized vectors `forward` would have produced for them."""

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens (the same as `codebook_size`)."""
        return self.codebook_size

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Token ids of `z`, computed in eval mode so that no statistic or codebook changes."""
        was_training = self.training
        self.eval()
        try:
            return self(z).indices
        finally:
            self.train(was_training)

    def decode(self, indices: Tensor) -> Tensor:
        """Alias of `indices_to_codes`, matching the text tokenizers' verb."""
        return self.indices_to_codes(indices)


# ----------------------------------------------------------------------------------------------------
# Layout and validation helpers shared by the quantizers.


def check_features(z: Tensor, *, channels: int, channel_dim: int, name: str, min_ndim: int = 2) -> None:
    """Raise `TokenizerInputError` unless `z` is a floating tensor with `channels` along `channel_dim`."""
    if not isinstance(z, Tensor):
        raise TokenizerInputError(f"{name} expects a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TokenizerInputError(f"{name} expects a floating-point tensor, got dtype {z.dtype}")
    if z.ndim < min_ndim:
        raise TokenizerInputError(
            f"{name} expects at least {min_ndim} dims (batch, ..., channels), got shape {tuple(z.shape)}"
        )
    if not -z.ndim <= channel_dim < z.ndim:
        raise TokenizerInputError(
            f"{name}: channel_dim={channel_dim} is out of range for an input of shape {tuple(z.shape)}"
        )
    if z.shape[channel_dim] != channels:
        raise TokenizerInputError(
            f"{name} expects {channels} channels along dim {channel_dim}, got shape {tuple(z.shape)} "
            f"({z.shape[channel_dim]} channels)"
        )


def move_channels_last(z: Tensor, channel_dim: int) -> Tensor:
    """[B, C, H, W] -> [B, H, W, C] when channel_dim is 1; a no-op when the channels already come last."""
    return z if channel_dim in (-1, z.ndim - 1) else z.movedim(channel_dim, -1)


def move_channels_back(z: Tensor, channel_dim: int) -> Tensor:
    """Inverse of `move_channels_last` (`z` has its channels last)."""
    return z if channel_dim in (-1, z.ndim - 1) else z.movedim(-1, channel_dim)


def codebook_projections(dim: int, codebook_dim: int) -> tuple[nn.Module, nn.Module]:
    """(project_in, project_out) between the input channels and the codebook space: Linear layers when
    the two widths differ, identities otherwise (created in that order, so the RNG stream is fixed)."""
    if dim == codebook_dim:
        return nn.Identity(), nn.Identity()
    return nn.Linear(dim, codebook_dim), nn.Linear(codebook_dim, dim)


def check_indices(indices: Tensor, *, vocab_size: int, name: str, allow_negative_one: bool = False) -> None:
    """Raise `TokenIndexError` unless `indices` is an integer tensor with values in [0, vocab_size)."""
    if not isinstance(indices, Tensor):
        raise TokenIndexError(f"{name} expects indices as a torch.Tensor, got {type(indices).__name__}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TokenIndexError(f"{name} expects integer indices, got dtype {indices.dtype}")
    if indices.numel() == 0:
        return
    low = -1 if allow_negative_one else 0
    lo, hi = int(indices.min()), int(indices.max())
    if lo < low or hi >= vocab_size:
        allowed = f"[{low}, {vocab_size})" + (" (-1 = dropped quantizer)" if allow_negative_one else "")
        raise TokenIndexError(f"{name}: indices must lie in {allowed}, got values in [{lo}, {hi}]")


def perplexity_from_counts(counts: Tensor) -> Tensor:
    """exp(entropy) of the empirical code distribution; equals the number of codes when usage is uniform."""
    probs = counts.float() / counts.sum().clamp_min(1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp()


def product(values: Sequence[int]) -> int:
    """Product of a sequence of ints (codebook size of a factorised codebook)."""
    return math.prod(int(v) for v in values)


# ----------------------------------------------------------------------------------------------------
# Text tokenizers.


class TextTokenizer(ABC):
    """Base class of the text tokenizers: `encode`/`decode`/`vocab_size` plus batch and padding helpers.

    Subclasses set `pad_id`, `bos_id`, `eos_id`, `mask_id` and implement `_encode`, `decode`,
    `vocab_size` and `special_ids`.
    """

    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included."""

    @property
    @abstractmethod
    def special_ids(self) -> frozenset[int]:
        """Ids of the special tokens (dropped by `decode(..., skip_special_tokens=True)`)."""

    @abstractmethod
    def _encode(self, text: str) -> list[int]:
        """Ids of `text` without bos/eos."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens are dropped unless `skip_special_tokens` is False."""

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of `text`, optionally framed by bos / eos."""
        if not isinstance(text, str):
            raise TokenizerInputError(
                f"{type(self).__name__}.encode expects a str, got {type(text).__name__}"
            )
        ids = self._encode(text)
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> list[list[int]]:
        """`encode` of every text."""
        if isinstance(texts, str):
            raise TokenizerInputError("encode_batch expects a sequence of str, got a single str")
        return [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]

    def decode_batch(
        self, batch: Sequence[Sequence[int]] | Tensor, *, skip_special_tokens: bool = True
    ) -> list[str]:
        """`decode` of every row (padding is dropped with the other specials)."""
        rows = batch.tolist() if isinstance(batch, Tensor) else batch
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    def pad(
        self,
        batch: Sequence[Sequence[int]],
        *,
        max_length: int | None = None,
        padding_side: str = "right",
    ) -> tuple[Tensor, Tensor]:
        """Stack id lists into (ids [B, T] int64 filled with `pad_id`, mask [B, T] bool, True on tokens).

        T is the longest row, or `max_length`; longer rows are then truncated (right padding keeps a
        row's start, left padding its end).
        """
        if padding_side not in ("left", "right"):
            raise TokenizerInputError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        rows = [list(row) for row in batch]
        length = max_length if max_length is not None else max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            row = row[:length] if padding_side == "right" else row[max(0, len(row) - length) :]
            if not row:
                continue
            if padding_side == "right":
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = True
            else:
                ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, length - len(row) :] = True
        return ids, mask

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """Ids as a list of ints, or `TokenIndexError` if one lies outside [0, vocab_size)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenIndexError(
                f"{type(self).__name__}: ids must lie in [0, {self.vocab_size}), got {bad[:5]}"
                + (" ..." if len(bad) > 5 else "")
            )
        return ids
