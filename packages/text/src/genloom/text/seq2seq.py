"""What every genloom-text translation model shares: its JSON config, special ids, batching, source encoding.

All families (AR, vanilla NAT, CMLM, CTC, DA-Transformer) use one joint source/target vocabulary whose
first ids are the specials `<pad> <bos> <eos> <mask> <blank>` (0..4), an encoder built on
`genloom.core.nn.Encoder` and a decoder built on `genloom.core.nn.Transformer` with cross-attention.
Sequences are passed as right-padded id tensors holding content only (no bos / eos): each model adds
the markers it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from genloom.core.errors import check_field_names
from genloom.core.nn import EncoderDecoder, TransformerConfig
from genloom.text.backbone import text_transformer_config
from genloom.text.errors import TextInputError
from genloom.text.specials import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS

FAMILIES = ("ar", "nat", "cmlm", "ctc", "dat")


@dataclass
class Seq2SeqConfig:
    """Architecture of a translation model of any family (JSON round-trip with to_dict / from_dict)."""

    family: str = "ar"
    vocab_size: int = 1000
    dim: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_source_length: int = 64
    max_target_length: int = 64
    upsample_ratio: float = 4.0  # CTC / DA-Transformer: decoder length = ratio x source length
    dag_link_heads: int = 4  # DA-Transformer: transition heads
    # DA-Transformer vertex inputs: "copy" (uniform copy of the source embeddings) or "mask" (the official
    # choice: one shared token, so vertices tell apart only by position and specialise freely)
    dag_vertex_inputs: str = "copy"
    length_loss_weight: float = 0.1  # NAT / CMLM: weight of the target-length classifier
    tie_embeddings: bool = True  # decoder input embedding = output projection
    # fairseq's --share-all-embeddings (joint vocabulary): the encoder's token embedding is the decoder's too,
    # so one [vocab, dim] matrix serves encoder input, decoder input and (with tie_embeddings) the output.
    # Off by default: configs written before this field existed load untied, as they were trained.
    share_all_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise TextInputError(f"unknown family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise TextInputError(
                f"vocab_size must exceed the {len(SPECIAL_TOKENS)} specials, got {self.vocab_size}"
            )
        if self.dag_vertex_inputs not in ("copy", "mask"):
            raise TextInputError(
                f"dag_vertex_inputs must be 'copy' or 'mask', got {self.dag_vertex_inputs!r}"
            )
        if self.share_all_embeddings and not self.tie_embeddings:
            raise TextInputError(
                "share_all_embeddings=True needs tie_embeddings=True (one matrix for all three)"
            )
        if self.upsample_ratio < 1.0:
            raise TextInputError(f"upsample_ratio must be >= 1, got {self.upsample_ratio}")

    @property
    def max_decoder_length(self) -> int:
        """Longest decoder input: target + bos/eos for AR, the upsampled graph for CTC / DAT."""
        if self.family in ("ctc", "dat"):
            return int(self.upsample_ratio * (self.max_source_length + 2)) + 1
        return self.max_target_length + 2

    def encoder_config(self) -> TransformerConfig:
        return text_transformer_config(
            dim=self.dim,
            n_layers=self.encoder_layers,
            n_heads=self.n_heads,
            vocab_size=self.vocab_size,
            max_seq_len=self.max_source_length,
            mlp_ratio=self.mlp_ratio,
            mask="bidirectional",
            dropout=self.dropout,
        )

    def decoder_config(self, *, causal: bool) -> TransformerConfig:
        return text_transformer_config(
            dim=self.dim,
            n_layers=self.decoder_layers,
            n_heads=self.n_heads,
            vocab_size=self.vocab_size,
            max_seq_len=self.max_decoder_length,
            mlp_ratio=self.mlp_ratio,
            mask="causal" if causal else "bidirectional",
            cross_attn=True,
            dropout=self.dropout,
            tie_embeddings=self.tie_embeddings,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Seq2SeqConfig:
        check_field_names(cls, data, error=TextInputError)
        return cls(**data)


def padding_mask(lengths: Tensor, width: int) -> Tensor:
    """[B] lengths -> [B, width] bool, True on real positions."""
    return torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def add_markers(tokens: Tensor, lengths: Tensor, *, bos: bool, eos: bool) -> tuple[Tensor, Tensor]:
    """Prepend bos and / or append eos to right-padded rows: returns (new tokens, new lengths)."""
    batch = tokens.shape[0]
    out = tokens
    if bos:
        out = torch.cat([torch.full((batch, 1), BOS_ID, dtype=out.dtype, device=out.device), out], dim=1)
        lengths = lengths + 1
    if eos:
        out = torch.cat([out, torch.full((batch, 1), PAD_ID, dtype=out.dtype, device=out.device)], dim=1)
        out = out.scatter(1, lengths.unsqueeze(1), EOS_ID)
        lengths = lengths + 1
    return out, lengths


def strip_specials(tokens: Tensor) -> list[list[int]]:
    """Id rows -> lists without specials, cut at the first eos (what a user sees)."""
    rows = []
    for row in tokens.tolist():
        out = []
        for token in row:
            if token == EOS_ID:
                break
            if token >= len(SPECIAL_TOKENS):
                out.append(token)
        rows.append(out)
    return rows


HOST_CHECK_MAX = 4096  # host batches of up to this many ids are checked in Python


def check_source(
    source: Tensor, source_length: Tensor, config: Seq2SeqConfig, *, target_length: Tensor | None = None
) -> None:
    """Clear errors for empty, too long or out-of-vocabulary source rows (and, given `target_length`, too
    long targets). The bounds are read from the device in one transfer: a training step checks its batch
    without stalling the GPU several times."""
    if source.dim() != 2 or source_length.dim() != 1 or source.shape[0] != source_length.shape[0]:
        raise TextInputError(
            f"source must be [B, S] with lengths [B], got {tuple(source.shape)} and {tuple(source_length.shape)}"
        )
    if source.shape[0] == 0:
        raise TextInputError("empty batch: no source sentence to translate")
    if source.device.type == "cpu" and target_length is None and source.numel() <= HOST_CHECK_MAX:
        # a small host batch (a translation request): the bounds in Python, ~10x cheaper than tensor ops
        lengths, ids = source_length.tolist(), source.flatten().tolist()
        values = [min(lengths), max(lengths)] + ([min(ids), max(ids)] if ids else [])
    else:
        bounds = [source_length.min(), source_length.max()]
        if source.numel():
            bounds += [source.min(), source.max()]
        if target_length is not None:
            bounds.append(target_length.max())
        values = torch.stack([b.to(torch.long) for b in bounds]).tolist()
    if values[0] < 1:
        raise TextInputError(
            f"empty source sentence in rows {(source_length < 1).nonzero().flatten().tolist()}"
        )
    if values[1] > config.max_source_length:
        raise TextInputError(
            f"source of {values[1]} tokens exceeds the model's maximum of {config.max_source_length}"
        )
    if source.numel() and (values[2] < 0 or values[3] >= config.vocab_size):
        raise TextInputError(f"source ids must lie in [0, {config.vocab_size}), got {values[2]}..{values[3]}")
    if target_length is not None and values[-1] > config.max_target_length:
        raise TextInputError(
            f"target of {values[-1]} tokens exceeds max_target_length={config.max_target_length}"
        )


def placed_source(
    module: nn.Module, source: Tensor, source_length: Tensor, *, pad_to: int = 1, to_device: bool = True
) -> tuple[Tensor, Tensor]:
    """`check_source`, then the source on `module`'s device. Translators take the batch on any device: given
    on the CPU (as a tokenizer makes it), the check reads no GPU value (no device sync before decoding) and
    the copy to the GPU is issued without waiting. `pad_to` pads the width to a multiple of it with PAD
    (within the model's maximum) before the copy: the graphed passes' width buckets, padded on the host.
    `to_device=False` leaves the batch where it is (a graphed pass copies a host batch into its graph)."""
    check_source(source, source_length, module.config)
    pad = -source.shape[1] % pad_to
    if pad and source.shape[1] + pad <= module.config.max_source_length:
        source = F.pad(source, (0, pad), value=PAD_ID)
    if not to_device:
        return source, source_length
    device = next(module.parameters()).device
    if source.device != device or source_length.device != device:
        source = source.to(device, non_blocking=True)
        source_length = source_length.to(device, non_blocking=True)
    return source, source_length


class LengthPredictor(nn.Module):
    """Target-length classifier over the mean-pooled encoder states (NAT / CMLM, Gu et al. 2018)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(config.dim, config.max_target_length + 1)

    def forward(self, memory: Tensor, mask: Tensor) -> Tensor:
        """[B, max_target_length + 1] logits over the target length (length 0 is excluded)."""
        pooled = (memory * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        logits = self.proj(pooled.to(self.proj.weight.dtype)).float()
        # class 0 masked by comparison with an on-device arange: no host-to-device copy (CUDA-graph capturable)
        length_zero = torch.arange(logits.shape[1], device=logits.device) == 0
        return logits.masked_fill(length_zero, float("-inf"))


def build_encoder_decoder(config: Seq2SeqConfig, *, causal: bool) -> EncoderDecoder:
    """The shared transformer stack: core `EncoderDecoder` over a joint vocabulary; with
    `config.share_all_embeddings` the encoder reads the decoder's token embedding (one parameter, saved once:
    the core zoo drops tied duplicates and re-ties them on load by building the same module)."""
    model = EncoderDecoder(config.encoder_config(), config.decoder_config(causal=causal))
    if config.share_all_embeddings:
        model.encoder.tok_embeddings = model.decoder.tok_embeddings
    return model


def encode_source(model: EncoderDecoder, source: Tensor, source_length: Tensor) -> tuple[Tensor, Tensor]:
    """-> (memory [B, S, D], source padding mask [B, S], True on real tokens)."""
    mask = padding_mask(source_length, source.shape[1])
    return model.encode(source, src_padding_mask=mask), mask


def uniform_copy_index(source_length: Tensor, target_length: Tensor, width: int) -> Tensor:
    """For each decoder position j < target_length, the source position round(j * S / T) (Gu et al. 2018)."""
    positions = torch.arange(width, device=source_length.device).unsqueeze(0).float()
    scale = source_length.float().unsqueeze(1) / target_length.float().clamp(min=1).unsqueeze(1)
    index = torch.floor(positions * scale).long()
    return torch.minimum(index, (source_length - 1).clamp(min=0).unsqueeze(1))
