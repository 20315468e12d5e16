"""Non-autoregressive translators on the shared encoder-decoder: vanilla NAT, CMLM, CTC-NAT and DA-Transformer.

- `VanillaNAT` (Gu et al. 2018): predict the target length, copy the source embeddings uniformly to it,
  emit every token in one pass.
- `CMLM` (Ghazvininejad et al. 2019): a conditional masked LM, decoded by Mask-Predict (length beam,
  re-masking the least confident tokens with a linearly decaying count).
- `CTCNAT` (Libovicky & Helcl 2018; Gu & Kong 2021): `upsample_ratio x source` decoder positions,
  CTC loss, glancing training through the best CTC alignment; greedy decoding with the core CTC collapse.
- `DATransformer` (Huang et al. 2022): a graph of `upsample_ratio x (source + 2)` vertices, DAG loss over
  all paths, glancing through the best path; greedy / lookahead / Viterbi decoding.

Every model exposes `loss(batch, glance_ratio=0.0) -> Tensor` and `translate(source, source_length, ...)
-> Translation` (ids without specials plus the number of decoder passes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.nn.cuda_graphs import GraphCache
from genloom.core.sampling.ctc import ctc_collapse
from genloom.core.sampling.ctc_kernels import ctc_beam_search
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.masked import MaskedSampler
from genloom.text.ctc_nat import (
    ctc_best_alignment,
    ctc_min_input_length,
    ctc_nat_loss,
    upsampled_length,
    upsampled_width,
)
from genloom.text.dag import (
    DagLinkHead,
    dag_best_alignment,
    dag_log_likelihood,
    dag_lookahead_decode,
    dag_match,
    dag_viterbi_decode,
)
from genloom.text.dag_beam import dag_beam_decode
from genloom.text.errors import TextInputError
from genloom.text.glat import aligned_glance_inputs, glancing_mask
from genloom.text.seq2seq import (
    LengthPredictor,
    Seq2SeqConfig,
    add_markers,
    build_encoder_decoder,
    check_source,
    encode_source,
    padding_mask,
    placed_source,
    strip_specials,
    uniform_copy_index,
)
from genloom.text.specials import BLANK_ID, BOS_ID, MASK_ID, PAD_ID
from genloom.text.tasks import Seq2SeqBatch

# CTC beam search: the likeliest symbols of each frame tried, plus blank. (7 gives the same BLEU on multi30k-ctc
# and fills the GPU kernel's candidate columns exactly, 8 instead of 16, but ran 2.7x slower on the H100)
CTC_BEAM_CANDIDATES = 8


@dataclass(frozen=True)
class Translation:
    """Decoded ids per row (no specials) and how many decoder forward passes produced them."""

    tokens: list[list[int]]
    decoder_passes: int


def drop_unfit_rows(batch: Seq2SeqBatch, fits: Tensor) -> Seq2SeqBatch:
    """Training on real data: keep the rows whose target fits the decoder (CTC frames / DAG vertices).

    Raises when no row fits, so a single bad pair still gets the clear error from the loss.
    """
    all_fit, any_fit = torch.stack([fits.all(), fits.any()]).tolist()  # one device read
    if all_fit or not any_fit:
        return batch
    keep = fits.nonzero().flatten()
    return Seq2SeqBatch(
        batch.source[keep], batch.source_length[keep], batch.target[keep], batch.target_length[keep]
    )


# graphed one-pass decoding pads sources to a multiple of this (fewer captured shapes)
GRAPH_SOURCE_BUCKET = 8


def _bucket(graphed: bool | str) -> int:
    """The width multiple a translator pads its source to on the host: the graphed passes' bucket, else 1."""
    return GRAPH_SOURCE_BUCKET if graphed else 1


def _compiled_per_width(fn: Callable, backend: str, max_width: int) -> Callable:
    """`fn` through torch.compile with the padded source width symbolic: one compile per batch size serves
    every width (a compile takes minutes at real sizes; the CUDA graphs are still captured per width). Where
    the pass specialises on the width anyway, it recompiles per width, within a raised recompile limit."""
    compiled = torch.compile(fn, backend=backend, dynamic=None)
    limit = max(64, 4 * (max_width // GRAPH_SOURCE_BUCKET + 1))

    def run(packed: Tensor) -> Any:
        torch._dynamo.maybe_mark_dynamic(packed, 1)
        with torch._dynamo.config.patch(recompile_limit=limit):
            return compiled(packed)

    return run


def _unpacking(fn: Callable[[Tensor, Tensor], Any]) -> Callable[[Tensor], Any]:
    """`fn(source, source_length)` as a function of one packed tensor [B, S + 1] (the lengths its last column):
    a graphed pass then takes its input in one host-to-device copy."""
    return lambda packed: fn(packed[:, :-1], packed[:, -1])


class NonAutoregressiveTranslator(nn.Module):
    """Shared parts: encoder-decoder with a bidirectional decoder, source copying, decoder features.

    Every family's `translate(..., graphed=...)`: False decodes eagerly; True replays the decoding from CUDA
    graphs (one per padded source width); a torch.compile backend name ("inductor") compiles it first, then
    captures it (fewer, fused kernels; a compile per padded width on first use)."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.model = build_encoder_decoder(config, causal=False)
        # the one-pass families' GPU fast path: the whole pass (and decoding where it reads nothing back from
        # the device) replayed from CUDA graphs, one GraphCache per function and options, a graph per shape
        self._graph_caches: dict[Hashable, GraphCache] = {}
        self._lm_tables: dict[int, tuple[Tensor, Tensor]] = {}  # id -> (the caller's table, its device copy)

    @property
    def decoder(self) -> nn.Module:
        return self.model.decoder

    def copied_source(
        self, source: Tensor, source_length: Tensor, decoder_length: Tensor, width: int | None = None
    ) -> Tensor:
        """Decoder inputs [B, L, D]: the source token embeddings copied uniformly to each decoder length.
        `width` (L) defaults to the longest decoder length, read from the device; pass it to avoid the read."""
        width = int(decoder_length.max()) if width is None else width
        index = uniform_copy_index(source_length, decoder_length, width)
        return self.decoder.embed(source.gather(1, index))

    def _graphable_pass(self, source: Tensor, source_length: Tensor) -> tuple[Tensor, ...]:
        """The family's whole network pass with shapes fixed by `source`'s shape (no host reads)."""
        raise NotImplementedError(f"{type(self).__name__} has no graphed pass")

    def _run_graphable(
        self,
        fn: Callable[[Tensor, Tensor], Any],
        key: Hashable,
        source: Tensor,
        source_length: Tensor,
        graphed: bool | str,
        device: torch.device | None = None,
    ) -> Any:
        """`fn(source, source_length)` (a function with no host reads) eagerly, or (graphed) replayed from a CUDA
        graph captured once per shape for `key` (on CUDA; plain calls elsewhere). Graphed callers place the
        source with `placed_source(..., pad_to=_bucket(graphed), to_device=False)`: padded on the host to a
        multiple of GRAPH_SOURCE_BUCKET, so a few widths share graphs (the padding is masked, the outputs are
        the unpadded call's), and left there: it goes into the graph's input packed with its lengths as a last
        column, in one host-to-device copy. `graphed` a string: `fn` goes through torch.compile with that backend ("inductor": fused
        kernels, one compile per padded width) before it is captured. `device`: the weights' device, when the
        caller has it already (finding it walks the module: ~5 us of a batch-1 call's host time)."""
        device = next(self.parameters()).device if device is None else device
        if not graphed:
            return fn(source.to(device), source_length.to(device))
        backend = graphed if isinstance(graphed, str) else None
        cache = self._graph_caches.get((key, backend))
        if cache is None:
            pass_fn = _unpacking(fn)
            if backend is not None:
                pass_fn = _compiled_per_width(pass_fn, backend, self.config.max_source_length)
            # the NAR passes use no KV cache or cached context: the per-call refresh checks the weights only;
            # a host batch goes into the graph's input in one copy
            cache = GraphCache(pass_fn, watch=self, watch_caches=False, device=device)
            self._graph_caches[(key, backend)] = cache
        cache.refresh()
        packed = torch.cat([source, source_length.to(source.device).unsqueeze(1)], 1)
        return cache(None, packed if device.type == "cuda" else packed.to(device))

    def _lm_options(
        self, device: torch.device, bigram: Tensor | None, lm_weight: float
    ) -> tuple[dict[str, Any], Hashable]:
        """({"bigram": the table on `device` or None, "lm_weight"}, its part of a graph key): no LM unless both
        are given. A graph reads the table it was captured with, so a new table (or weight) is a new graph."""
        if bigram is None or lm_weight == 0:
            return {"bigram": None, "lm_weight": 0.0}, None
        table = self._table_on(device, bigram)
        return {"bigram": table, "lm_weight": float(lm_weight)}, (id(table), float(lm_weight))

    def _table_on(self, device: torch.device, bigram: Tensor) -> Tensor:
        """A bigram table [V, V] as float32 on `device`, copied once per table: graphs captured with it keep
        reading that copy, and the next call with the same table finds the same graph."""
        vocab = self.config.vocab_size
        if tuple(bigram.shape) != (vocab, vocab):
            raise TextInputError(f"bigram table must be [{vocab}, {vocab}], got {tuple(bigram.shape)}")
        held = self._lm_tables.get(id(bigram))
        if held is None or held[0] is not bigram or held[1].device != device:
            held = self._lm_tables[id(bigram)] = (bigram, bigram.to(device, torch.float32))
        return held[1]

    def decode_logits(
        self,
        inputs: Tensor,
        decoder_length: Tensor,
        memory: Tensor,
        source_mask: Tensor,
        *,
        float32: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """-> (logits [B, L, V], float32 or with `float32=False` in the model's dtype (a compiled consumer then
        fuses the cast into its own first kernel instead of a separate pass over the logits), final hidden
        states [B, L, D])."""
        hidden = self.decoder.features(
            embeddings=inputs,
            key_padding_mask=padding_mask(decoder_length, inputs.shape[1]),
            context=memory,
            context_mask=source_mask,
        )
        logits = self.decoder.output(hidden)
        return logits.float() if float32 else logits, hidden

    def _check_target(self, batch: Seq2SeqBatch) -> None:
        check_source(batch.source, batch.source_length, self.config, target_length=batch.target_length)


class _LengthPredicting(NonAutoregressiveTranslator):
    """NAT / CMLM: a length classifier on the encoder picks the decoder length."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__(config)
        self.length_predictor = LengthPredictor(config)

    def length_loss(self, memory: Tensor, source_mask: Tensor, target_length: Tensor) -> Tensor:
        return F.cross_entropy(self.length_predictor(memory, source_mask), target_length)

    def top_lengths(self, memory: Tensor, source_mask: Tensor, beam: int) -> Tensor:
        """[B, beam] most likely target lengths."""
        return self.length_predictor(memory, source_mask).topk(beam, dim=-1).indices

    @property
    def fixed_width(self) -> int:
        """The graphed decoder width: the length classifier's largest class (`max_target_length`), which every
        predicted length fits in, known without reading the lengths back from the device."""
        return self.config.max_target_length


class VanillaNAT(_LengthPredicting):
    """One-pass NAT: length prediction + uniform copy of the source embeddings."""

    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        self._check_target(batch)
        memory, source_mask = encode_source(self.model, batch.source, batch.source_length)
        inputs = self.copied_source(batch.source, batch.source_length, batch.target_length)
        logits, _ = self.decode_logits(inputs, batch.target_length, memory, source_mask)
        valid = padding_mask(batch.target_length, batch.target.shape[1])
        token_loss = F.cross_entropy(logits[valid], batch.target[valid])
        length_loss = self.length_loss(memory, source_mask, batch.target_length)
        return token_loss + self.config.length_loss_weight * length_loss

    def _decode(self, source: Tensor, source_length: Tensor, width: int | None) -> Tensor:
        """-> tokens [B, W], PAD beyond each row's predicted length. W is `width`, or (None) the longest
        predicted length, read from the device. Positions past a row's length are padding keys of the decoder's
        self-attention (masked), so a wider W leaves the real positions' tokens as they are (only float summation
        orders change: the tests check the tokens equal)."""
        memory, source_mask = encode_source(self.model, source, source_length)
        length = self.top_lengths(memory, source_mask, 1)[:, 0]
        width = int(length.max()) if width is None else width
        logits, _ = self.decode_logits(
            self.copied_source(source, source_length, length, width), length, memory, source_mask
        )
        return logits.argmax(-1).masked_fill(~padding_mask(length, width), PAD_ID)

    def _graphable_pass(self, source: Tensor, source_length: Tensor) -> Tensor:
        """The whole pass (length prediction, decoder, argmax) at the fixed width `max_target_length`: shapes
        fixed by `source`'s shape alone, no host reads."""
        return self._decode(source, source_length, self.fixed_width)

    @torch.no_grad()
    def translate(self, source: Tensor, source_length: Tensor, *, graphed: bool | str = False) -> Translation:
        """Argmax of every position of the predicted length. `graphed` (the GPU fast path) runs the pass at the
        fixed width `max_target_length` (padding masked) and replays it from a CUDA graph per padded source
        width; the same tokens as the eager call."""
        source, source_length = placed_source(
            self, source, source_length, pad_to=_bucket(graphed), to_device=not graphed
        )
        if graphed:
            tokens = self._run_graphable(self._graphable_pass, "nat", source, source_length, graphed)
        else:
            tokens = self._decode(source, source_length, None)
        return Translation(strip_specials(tokens), decoder_passes=1)


class CMLM(_LengthPredicting):
    """Conditional masked LM over the target, decoded with Mask-Predict."""

    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        self._check_target(batch)
        memory, source_mask = encode_source(self.model, batch.source, batch.source_length)
        valid = padding_mask(batch.target_length, batch.target.shape[1])
        # mask a uniform number in [1, T] of each row's tokens (Ghazvininejad et al. 2019)
        num_masked = (
            torch.rand(batch.target_length.shape, device=valid.device) * batch.target_length
        ).long() + 1
        noise = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)
        rank = noise.argsort(1).argsort(1)
        masked = (rank < num_masked.unsqueeze(1)) & valid
        inputs = self.decoder.embed(batch.target.masked_fill(masked, MASK_ID))
        logits, _ = self.decode_logits(inputs, batch.target_length, memory, source_mask)
        token_loss = F.cross_entropy(logits[masked], batch.target[masked])
        length_loss = self.length_loss(memory, source_mask, batch.target_length)
        return token_loss + self.config.length_loss_weight * length_loss

    def _mask_predict(
        self, source: Tensor, source_length: Tensor, iterations: int, length_beam: int, width: int | None
    ) -> Tensor:
        """Mask-Predict -> the chosen candidate's tokens [B, W] (PAD beyond its length). W is `width`, or (None)
        the longest of the B x length_beam predicted lengths, read from the device; the decoder masks the
        padding keys, the sampler never predicts or re-masks padding and the candidate scores sum real
        positions only, so a wider W gives the same tokens (up to float summation order; tested). With `width`
        given nothing is read from the device: every iteration, the per-row re-masking counts and the
        candidate choice are tensor code."""
        batch = source.shape[0]
        memory, source_mask = encode_source(self.model, source, source_length)
        length_log_probs, lengths = (
            self.length_predictor(memory, source_mask).log_softmax(-1).topk(length_beam, -1)
        )
        lengths = lengths.reshape(-1)  # [B * beam]
        memory = memory.repeat_interleave(length_beam, 0)
        source_mask = source_mask.repeat_interleave(length_beam, 0)
        width = int(lengths.max()) if width is None else width
        valid = padding_mask(lengths, width)
        tokens = torch.full((lengths.shape[0], width), MASK_ID, device=source.device).masked_fill(
            ~valid, PAD_ID
        )
        sampler = MaskedSampler(mask_token_id=MASK_ID, schedule="linear", variant="mask_predict")
        sampler.set_steps(iterations)
        greedy, scores = SamplingParams(temperature=0.0), None
        for t in range(iterations):
            logits, _ = self.decode_logits(self.decoder.embed(tokens), lengths, memory, source_mask)
            step = sampler.step(logits, tokens, t, num_initial_masked=lengths, params=greedy, scores=scores)
            tokens, scores = step.tokens, step.scores
        scores = scores.masked_fill(~valid, 0.0)  # padding was never predicted (its score is +inf)
        mean_score = scores.sum(1) / lengths.float() + length_log_probs.reshape(-1)
        best = mean_score.view(batch, length_beam).argmax(1)
        # gather, not indexing with a host arange (a host-to-device copy)
        pick = best.view(batch, 1, 1).expand(batch, 1, width)
        return tokens.view(batch, length_beam, width).gather(1, pick).squeeze(1)

    def _graphable_mask_predict(
        self, source: Tensor, source_length: Tensor, *, iterations: int, length_beam: int
    ) -> Tensor:
        """All of Mask-Predict at the fixed width `max_target_length`: shapes fixed by `source`'s shape (and the
        options) alone, no host reads."""
        return self._mask_predict(source, source_length, iterations, length_beam, self.fixed_width)

    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        iterations: int = 4,
        length_beam: int = 3,
        graphed: bool | str = False,
    ) -> Translation:
        """Mask-Predict: for each of `length_beam` lengths, start fully masked; at iteration t re-mask the
        n = T (iterations - t) / iterations least confident tokens; keep the length whose mean token log-prob plus
        length log-prob is highest. `graphed` (the GPU fast path) runs all iterations and the choice of length
        at the fixed width `max_target_length` (padding masked) and replays them from one CUDA graph per padded
        source width and options; the same tokens as the eager call."""
        if iterations < 1 or length_beam < 1:
            raise TextInputError(f"iterations and length_beam must be >= 1, got {iterations}, {length_beam}")
        source, source_length = placed_source(
            self, source, source_length, pad_to=_bucket(graphed), to_device=not graphed
        )
        if graphed:
            decode = functools.partial(
                self._graphable_mask_predict, iterations=iterations, length_beam=length_beam
            )
            key = ("mask_predict", iterations, length_beam)
            chosen = self._run_graphable(decode, key, source, source_length, graphed)
        else:
            chosen = self._mask_predict(source, source_length, iterations, length_beam, None)
        return Translation(strip_specials(chosen), decoder_passes=iterations)


class CTCNAT(NonAutoregressiveTranslator):
    """CTC over `upsample_ratio x source length` decoder positions, with optional glancing."""

    def frame_length(self, source_length: Tensor) -> Tensor:
        return upsampled_length(
            source_length, self.config.upsample_ratio, max_length=self.config.max_decoder_length
        )

    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        self._check_target(batch)
        if self.training:  # pairs whose target needs more frames than the source gets are skipped
            needed = ctc_min_input_length(batch.target, batch.target_length)
            batch = drop_unfit_rows(batch, needed <= self.frame_length(batch.source_length))
        memory, source_mask = encode_source(self.model, batch.source, batch.source_length)
        frames = self.frame_length(batch.source_length)
        inputs = self.copied_source(batch.source, batch.source_length, frames)
        if glance_ratio > 0:
            inputs = self._glance(inputs, frames, memory, source_mask, batch, glance_ratio)
        logits, _ = self.decode_logits(inputs, frames, memory, source_mask)
        return ctc_nat_loss(logits, frames, batch.target, batch.target_length, blank=BLANK_ID)

    @torch.no_grad()
    def _glance(self, inputs, frames, memory, source_mask, batch: Seq2SeqBatch, ratio: float) -> Tensor:
        logits, _ = self.decode_logits(inputs, frames, memory, source_mask)
        alignment, _ = ctc_best_alignment(
            logits.log_softmax(-1), frames, batch.target, batch.target_length, blank=BLANK_ID
        )
        aligned = alignment >= 0
        wrong_frame = aligned & (logits.argmax(-1) != batch.target.gather(1, alignment.clamp(min=0)))
        wrong = torch.zeros(batch.target.shape, device=inputs.device).scatter_add_(
            1, alignment.clamp(min=0), wrong_frame.float()
        )
        valid = padding_mask(batch.target_length, batch.target.shape[1])
        reveal = glancing_mask(wrong == 0, valid, ratio)
        tokens, revealed = aligned_glance_inputs(
            torch.full_like(alignment, PAD_ID), alignment, batch.target, reveal
        )
        return torch.where(revealed.unsqueeze(-1), self.decoder.embed(tokens), inputs)

    def _graphable_pass(self, source: Tensor, source_length: Tensor) -> tuple[Tensor, ...]:
        """-> (collapsed labels [B, F] padded with PAD, label counts [B]): argmax per frame, then CTC collapse;
        F follows from source's width alone."""
        logits, frames = self._graphable_frames(source, source_length)
        return ctc_collapse(logits.argmax(-1), blank=BLANK_ID, lengths=frames, pad_value=PAD_ID)

    def _graphable_frames(self, source: Tensor, source_length: Tensor) -> tuple[Tensor, Tensor]:
        """-> (frame logits [B, F, V], frames per row [B]); F follows from source's width alone."""
        memory, source_mask = encode_source(self.model, source, source_length)
        frames = self.frame_length(source_length)
        width = upsampled_width(  # host arithmetic, no device read
            source.shape[1], self.config.upsample_ratio, max_length=self.config.max_decoder_length
        )
        logits, _ = self.decode_logits(
            self.copied_source(source, source_length, frames, width), frames, memory, source_mask
        )
        return logits, frames

    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        beam_size: int = 1,
        bigram: Tensor | None = None,
        lm_weight: float = 0.0,
        length_bonus: float = 0.0,
        graphed: bool | str = False,
    ) -> Translation:
        """Argmax per frame, then CTC collapse; or (`beam_size` > 1) CTC prefix beam search over the frames'
        log-probs on the model's device (8 candidates a frame), with shallow fusion of a `bigram` LM table
        [V, V] (`lm_weight`) and a `length_bonus` per label. `graphed` (the GPU fast path) replays the network
        pass and the collapse or the search from a CUDA graph per padded source width; the same labels as
        the eager call."""
        source, source_length = placed_source(
            self, source, source_length, pad_to=_bucket(graphed), to_device=not graphed
        )
        if beam_size < 1:
            raise TextInputError(f"beam_size must be >= 1, got {beam_size}")
        if beam_size == 1 and not lm_weight:
            labels, _ = self._run_graphable(self._graphable_pass, "ctc", source, source_length, graphed)
            return Translation(strip_specials(labels), decoder_passes=1)
        device = next(self.parameters()).device
        lm, lm_key = self._lm_options(device, bigram, lm_weight)
        search = functools.partial(
            self._graphable_beam, beam_size=beam_size, length_bonus=float(length_bonus), **lm
        )
        key = ("beam", beam_size, float(length_bonus), lm_key)
        labels = self._run_graphable(search, key, source, source_length, graphed, device)
        return Translation(strip_specials(labels), decoder_passes=1)

    def _graphable_beam(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        beam_size: int,
        bigram: Tensor | None,
        lm_weight: float,
        length_bonus: float,
    ) -> Tensor:
        """The network pass and CTC prefix beam search over its frames, PAD-padded labels [B, F]: no host read,
        so one graph replays both. On CUDA core's Triton kernel searches the float32 log-probs; elsewhere the
        batched tensor search runs in float64 (the host search's arithmetic: the same labels)."""
        logits, frames = self._graphable_frames(source, source_length)
        log_probs = logits.float().log_softmax(-1)
        labels, _, _ = ctc_beam_search(
            log_probs if log_probs.is_cuda else log_probs.double(), frames, bigram, beam_size, BLANK_ID,
            CTC_BEAM_CANDIDATES, BOS_ID, lm_weight, length_bonus, PAD_ID,
        )  # fmt: skip
        return labels


class DATransformer(NonAutoregressiveTranslator):
    """Directed Acyclic Transformer: a vertex per decoder position, transitions from `DagLinkHead`."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__(config)
        self.link_head = DagLinkHead(dim=config.dim, num_heads=config.dag_link_heads)

    def graph_size(self, source_length: Tensor) -> Tensor:
        """lambda x (source length + bos + eos) vertices."""
        return upsampled_length(
            source_length + 2, self.config.upsample_ratio, max_length=self.config.max_decoder_length
        )

    def vertex_inputs(
        self, source: Tensor, source_length: Tensor, graph: Tensor, width: int | None = None
    ) -> Tensor:
        """Decoder inputs of the graph's vertices (see `Seq2SeqConfig.dag_vertex_inputs`); `width` as in
        `copied_source`."""
        if self.config.dag_vertex_inputs == "copy":
            return self.copied_source(source, source_length, graph, width)
        width = int(graph.max()) if width is None else width
        tokens = torch.full((source.shape[0], width), MASK_ID, device=source.device)
        return self.decoder.embed(tokens)

    def _graphable_pass(self, source: Tensor, source_length: Tensor) -> tuple[Tensor, ...]:
        """-> (token log-probs [B, V, vocab] with PAD excluded, links [B, V, V], vertices per row [B]);
        the vertex count V follows from source's width alone."""
        memory, source_mask = encode_source(self.model, source, source_length)
        graph = self.graph_size(source_length)
        width = upsampled_width(  # host arithmetic, no device read
            source.shape[1] + 2, self.config.upsample_ratio, max_length=self.config.max_decoder_length
        )
        logits, links = self._forward_graph(
            self.vertex_inputs(source, source_length, graph, width), graph, memory, source_mask, float32=False
        )
        # the decoding runs in float32 (a bf16 model's head and link scores come out in bf16)
        logits = logits.float()
        logits[..., PAD_ID] = float("-inf")
        return logits.log_softmax(-1), links.float(), graph

    def _graphable_lookahead(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        beta: float | None,
        collapse_repeats: bool,
        max_vertices: int | None = None,
        bigram: Tensor | None = None,
        lm_weight: float = 0.0,
    ) -> Tensor:
        """The network pass and greedy (beta None) / lookahead decoding (optionally with a bigram LM): free of
        host reads. `max_vertices` as in `follow_jumps` (compiled passes: no specialisation on the graph
        size)."""
        log_probs, links, graph = self._graphable_pass(source, source_length)
        tokens, _ = dag_lookahead_decode(
            links,
            log_probs,
            graph,
            beta=beta,
            pad=PAD_ID,
            collapse_repeats=collapse_repeats,
            fixed_width=True,
            max_vertices=max_vertices,
            bigram=bigram,
            lm_weight=lm_weight,
        )
        return tokens

    def _graphable_viterbi(self, source: Tensor, source_length: Tensor, **options: Any) -> Tensor:
        """The network pass and (joint) Viterbi decoding over its graph, fixed output width: free of host
        reads, so `translate(strategy="viterbi" / "joint-viterbi", graphed=True)` is one replay."""
        log_probs, links, graph = self._graphable_pass(source, source_length)
        tokens, _ = dag_viterbi_decode(
            links, log_probs, graph, upsample_scale=self.config.upsample_ratio, pad=PAD_ID, fixed_width=True,
            graph_masked=True, **options,
        )  # fmt: skip
        return tokens

    def _graphable_beam(self, source: Tensor, source_length: Tensor, **options: Any) -> Tensor:
        """The network pass and beam search over its graph; with `fixed_width=True` (every step run, fixed
        output width) free of host reads, so `translate(strategy="beam", graphed=True)` replays both from one
        CUDA graph."""
        log_probs, links, graph = self._graphable_pass(source, source_length)
        tokens, _ = dag_beam_decode(links, log_probs, graph, pad=PAD_ID, **options)
        return tokens

    def _forward_graph(
        self, inputs, graph, memory, source_mask, *, float32: bool = True
    ) -> tuple[Tensor, Tensor]:
        logits, hidden = self.decode_logits(inputs, graph, memory, source_mask, float32=float32)
        return logits, self.link_head(hidden, graph)

    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        self._check_target(batch)
        if self.training:  # pairs with more target tokens than graph vertices are skipped
            fits = batch.target_length + 2 <= self.graph_size(batch.source_length)
            batch = drop_unfit_rows(batch, fits)
        memory, source_mask = encode_source(self.model, batch.source, batch.source_length)
        target, target_length = add_markers(batch.target, batch.target_length, bos=True, eos=True)
        graph = self.graph_size(batch.source_length)
        inputs = self.vertex_inputs(batch.source, batch.source_length, graph)
        if glance_ratio > 0:
            with torch.no_grad():
                logits, links = self._forward_graph(inputs, graph, memory, source_mask)
                path, _ = dag_best_alignment(dag_match(logits, target), links, graph, target_length)
                aligned = path >= 0
                hit = aligned & (logits.argmax(-1) == target.gather(1, path.clamp(min=0)))
                correct = (
                    torch.zeros(target.shape, device=inputs.device).scatter_add_(
                        1, path.clamp(min=0), hit.float()
                    )
                    > 0
                )
                reveal = glancing_mask(correct, padding_mask(target_length, target.shape[1]), glance_ratio)
                tokens, revealed = aligned_glance_inputs(torch.full_like(path, PAD_ID), path, target, reveal)
            inputs = torch.where(revealed.unsqueeze(-1), self.decoder.embed(tokens), inputs)
        logits, links = self._forward_graph(inputs, graph, memory, source_mask)
        logprob = dag_log_likelihood(dag_match(logits, target), links, graph, target_length)
        return -(logprob / target_length.float()).mean()

    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        strategy: str = "lookahead",
        beta: float = 1.0,
        collapse_repeats: bool = False,
        beam_size: int = 4,
        bigram: Tensor | None = None,
        lm_weight: float = 0.0,
        length_alpha: float = 0.0,
        merge_prefixes: bool = False,
        graphed: bool | str = False,
    ) -> Translation:
        """strategy: "greedy", "lookahead" (beta weighs the next vertex's token log-prob), "viterbi" /
        "joint-viterbi" (every vertex's token log-prob in the score, the official "jointviterbi"; beta is the
        length-normalisation exponent) or "beam" (`dag_beam.dag_beam_decode`: lookahead beam of
        `beam_size`, final scores divided by the path's vertex count to the power `length_alpha`;
        `merge_prefixes` sums the paths that emit the same tokens, as the official beam search does). A `bigram`
        LM table [V, V] (`dag_beam.bigram_log_probs`) scores every jump with `lm_weight`. `collapse_repeats`
        merges equal neighbours (the official default, which helps MT but breaks targets with legitimately
        repeated tokens). `graphed=True` (the GPU fast path) replays the network pass (encoder, vertex states,
        links) and the decoding, any strategy, from one CUDA graph per padded source width; a backend name
        ("inductor") compiles both first; the same tokens as the eager call."""
        source, source_length = placed_source(
            self, source, source_length, pad_to=_bucket(graphed), to_device=not graphed
        )
        if strategy not in ("greedy", "lookahead", "viterbi", "joint-viterbi", "beam"):
            raise TextInputError(
                f"unknown DAG decoding strategy {strategy!r}; use greedy, lookahead, viterbi, joint-viterbi "
                "or beam"
            )
        device = next(self.parameters()).device
        lm, lm_key = self._lm_options(device, bigram, lm_weight)
        if strategy in ("greedy", "lookahead"):
            step_beta = None if strategy == "greedy" else float(beta)
            decode = functools.partial(
                self._graphable_lookahead,
                beta=step_beta,
                collapse_repeats=collapse_repeats,
                max_vertices=self.config.max_decoder_length if isinstance(graphed, str) else None,
                **lm,
            )
            key = ("lookahead", step_beta, collapse_repeats, lm_key)
        elif strategy == "beam":
            # eager, it stops once every hypothesis ends; graphed, it runs every step and reads nothing back
            decode = functools.partial(
                self._graphable_beam,
                beam_size=beam_size,
                beta=float(beta),
                length_alpha=float(length_alpha),
                collapse_repeats=collapse_repeats,
                fixed_width=bool(graphed),
                merge_prefixes=merge_prefixes,
                **lm,
            )
            key = (
                "beam",
                beam_size,
                float(beta),
                float(length_alpha),
                collapse_repeats,
                merge_prefixes,
                lm_key,
            )
        else:  # viterbi / joint-viterbi
            decode = functools.partial(
                self._graphable_viterbi,
                length_beta=float(beta),
                joint=strategy == "joint-viterbi",
                collapse_repeats=collapse_repeats,
                **lm,
            )
            key = (strategy, float(beta), collapse_repeats, lm_key)
        tokens = self._run_graphable(decode, key, source, source_length, graphed, device)
        return Translation(strip_specials(tokens), decoder_passes=1)
