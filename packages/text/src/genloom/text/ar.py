"""The autoregressive baseline: an encoder-decoder translator with KV-cached greedy and beam search.

This is the model every NAR family is measured against, so its decoder is the fastest AR we can build:
the source is encoded once, every decoder layer caches its cross-attention keys / values
(`EncoderDecoder.start_decoding`) and its self-attention keys / values in the core pre-allocated cache,
and each step runs one token through the decoder. Greedy decoding is the core AR loop, beam search the
core `beam_search` (which gathers the caches of the surviving beams each step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genloom.core.nn.cuda_graphs import GraphCache
from genloom.core.sampling.autoregressive import DecodeStats, generate
from genloom.core.sampling.beam import beam_search
from genloom.core.sampling.compiled import CompiledDecoder
from genloom.core.sampling.logits import SamplingParams
from genloom.core.sampling.speculative import speculative_generate
from genloom.text.errors import TextInputError
from genloom.text.nat import Translation
from genloom.text.seq2seq import (
    Seq2SeqConfig,
    add_markers,
    build_encoder_decoder,
    check_source,
    padding_mask,
    placed_source,
    strip_specials,
)
from genloom.text.specials import BOS_ID, EOS_ID, MASK_ID, PAD_ID
from genloom.text.tasks import Seq2SeqBatch

COMPILED_EXIT_EVERY = 8  # compiled greedy decoding checks every this many steps whether all sentences ended


class ARTranslator(nn.Module):
    """Encoder-decoder transformer trained with teacher forcing (label-smoothed cross-entropy)."""

    def __init__(self, config: Seq2SeqConfig, *, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.config = config
        self.label_smoothing = label_smoothing
        self.model = build_encoder_decoder(config, causal=True)
        # greedy fast paths, per (torch.compile backend, exit_every)
        self._compiled: dict[tuple[str, int | None], CompiledDecoder] = {}
        # ... and their encoder + cross-attention context, replayed from a CUDA graph per batch bucket
        self._context_graphs: GraphCache | None = None

    def loss(self, batch: Seq2SeqBatch, *, glance_ratio: float = 0.0) -> Tensor:
        check_source(batch.source, batch.source_length, self.config, target_length=batch.target_length)
        inputs, input_length = add_markers(batch.target, batch.target_length, bos=True, eos=False)
        labels, _ = add_markers(batch.target, batch.target_length, bos=False, eos=True)
        source_mask = padding_mask(batch.source_length, batch.source.shape[1])
        logits = self.model(
            batch.source,
            inputs,
            src_padding_mask=source_mask,
            tgt_padding_mask=padding_mask(input_length, inputs.shape[1]),
        )
        valid = padding_mask(input_length, inputs.shape[1])
        return F.cross_entropy(logits[valid], labels[valid], label_smoothing=self.label_smoothing)

    @contextmanager
    def _decoding(self, source: Tensor, source_length: Tensor) -> Iterator[tuple[nn.Module, Tensor]]:
        """(decoder with the encoded source cached for cross-attention, BOS prompt [B, 1]); the decoder's
        caches and context are released on exit, also when decoding fails."""
        mask = padding_mask(source_length, source.shape[1])
        decoder = self.model.start_decoding(source, src_padding_mask=mask)
        try:
            yield decoder, torch.full((source.shape[0], 1), BOS_ID, device=source.device)
        finally:
            decoder.remove_cache()
            decoder.clear_context()

    def _max_length(self, source_length: Tensor, max_length: int | None) -> int:
        if max_length is None:
            max_length = min(int(source_length.max()) * 2 + 10, self.config.max_target_length + 1)
        return min(max_length, self.config.max_decoder_length - 1)

    @torch.no_grad()
    def translate(
        self,
        source: Tensor,
        source_length: Tensor,
        *,
        beam_size: int = 1,
        max_length: int | None = None,
        draft: ARTranslator | None = None,
        gamma: int = 4,
        compiled: bool | str = False,
        exit_every: int | None = COMPILED_EXIT_EVERY,
    ) -> Translation:
        """Greedy (beam_size=1), beam search, or greedy speculative decoding with a smaller `draft` translator
        (same vocabulary; output identical to greedy). `decoder_passes` counts this model's decoder passes.
        `compiled` (greedy only) runs core's `CompiledDecoder` on fixed shapes (source padded to the model's
        maximum, batch to a bucket, output length to a multiple of 16): the same translations; a string
        names the `torch.compile` backend ("eager": no code generation). It stops early: every `exit_every`
        steps (one host read) it checks whether every sentence has ended, so `decoder_passes` is the
        prefill plus the steps run, rounded up to whole chunks of `exit_every` (at most the padded length
        budget); `exit_every=None` runs the whole budget (on CUDA: one graph, no host read)."""
        if beam_size < 1:
            raise TextInputError(f"beam_size must be >= 1, got {beam_size}")
        # the compiled path encodes at the model's full source width: padded on the host, before the copy
        pad_to = self.config.max_source_length if compiled else 1
        placed, placed_length = placed_source(self, source, source_length, pad_to=pad_to)
        max_length = self._max_length(source_length, max_length)  # the lengths as given (CPU: no device read)
        source, source_length = placed, placed_length
        if draft is not None:
            if beam_size != 1 or draft.config.vocab_size != self.config.vocab_size:
                raise TextInputError(
                    "speculative decoding needs beam_size=1 and a draft with the same vocabulary"
                )
            return self._speculative(source, source_length, draft, gamma, max_length)
        if compiled and (beam_size != 1 or draft is not None):
            raise TextInputError("compiled decoding is greedy: beam_size=1 and no draft")
        if compiled:
            return self._compiled_greedy(source, source_length, max_length, compiled, exit_every)
        if beam_size == 1:
            return self._greedy(source, source_length, max_length)
        return self._beam(source, source_length, beam_size, max_length)

    def _speculative(
        self, source: Tensor, source_length: Tensor, draft: ARTranslator, gamma: int, max_length: int
    ) -> Translation:
        """The core speculative loop on both decoders, each with its own cached cross-attention."""
        stats = DecodeStats()
        with (
            self._decoding(source, source_length) as (target_decoder, prompt),
            draft._decoding(source, source_length) as (draft_decoder, _),
        ):
            tokens = speculative_generate(
                target_decoder,
                draft_decoder,
                prompt,
                max_length,
                gamma=gamma,
                params=SamplingParams(temperature=0.0),
                eos_id=EOS_ID,
                stats=stats,
            )
        return Translation(strip_specials(tokens), decoder_passes=stats.forward_passes)

    def _greedy(self, source: Tensor, source_length: Tensor, max_length: int) -> Translation:
        """The core AR loop (`genloom.core.sampling.generate`) on the decoder with cached cross-attention."""
        stats = DecodeStats()
        with self._decoding(source, source_length) as (decoder, prompt):
            tokens = generate(
                decoder,
                prompt,
                max_length,
                params=SamplingParams(temperature=0.0),
                eos_id=EOS_ID,
                stats=stats,
            )
        return Translation(strip_specials(tokens), decoder_passes=stats.forward_passes)

    def _compiled_greedy(
        self,
        source: Tensor,
        source_length: Tensor,
        max_length: int,
        compiled: bool | str,
        exit_every: int | None,
    ) -> Translation:
        """Greedy decoding through `CompiledDecoder`, with every shape fixed so its graphs are reused, stopping
        after the first chunk of `exit_every` steps at whose end every sentence has ended."""
        backend = "inductor" if compiled is True else str(compiled)
        key = (backend, exit_every)
        if key not in self._compiled:
            self._compiled[key] = CompiledDecoder(
                self.model.decoder,
                params=SamplingParams(temperature=0.0),
                eos_id=EOS_ID,
                backend=backend,
                exit_every=exit_every,
            )
        runner = self._compiled[key]
        batch = source.shape[0]
        rows = runner.bucket(batch)
        padded, lengths = source, source_length  # `translate` placed it at the full width (on the host)
        if rows > batch:  # padding rows repeat the first sentence (computed, then dropped)
            padded = torch.cat([padded, padded[:1].expand(rows - batch, -1)])
            lengths = torch.cat([lengths, lengths[:1].expand(rows - batch)])
        steps = min(-(-max_length // 16) * 16, self.config.max_decoder_length - 1)
        if self._context_graphs is None:
            self._context_graphs = GraphCache(self._cache_context, watch=self.model.decoder)
        self._context_graphs.refresh()  # drops the graphs if the decoder's context or cache was reallocated
        self._context_graphs(rows, padded, lengths)
        # the runner pads the BOS prompts back to `rows` (the context's batch) and waits only for the real rows
        prompt = torch.full((batch, 1), BOS_ID, device=source.device)
        stats = DecodeStats()
        tokens = runner.generate(prompt, steps, stats=stats)[:, :max_length]
        # the decoder's static cache and context stay allocated: captured graphs read them in place
        return Translation(strip_specials(tokens), decoder_passes=stats.forward_passes)

    def _cache_context(self, source: Tensor, source_length: Tensor) -> None:
        """Encode the padded source and write every decoder layer's cross-attention keys / values in place
        (`EncoderDecoder.start_decoding`): on CUDA captured once per batch bucket and replayed, so the
        encoder costs its kernels' time, not one Python launch per kernel."""
        self.model.start_decoding(source, src_padding_mask=padding_mask(source_length, source.shape[1]))

    def _beam(self, source: Tensor, source_length: Tensor, beam: int, max_length: int) -> Translation:
        """The core beam search (`genloom.core.sampling.beam_search`): final scores normalised by length,
        pad / bos / mask never generated; the decoder's caches and cross-attention are gathered per step."""
        stats = DecodeStats()
        with self._decoding(source, source_length) as (decoder, prompt):
            result = beam_search(
                decoder,
                prompt,
                max_length,
                beam_size=beam,
                length_penalty=1.0,
                eos_id=EOS_ID,
                suppress_ids=(PAD_ID, BOS_ID, MASK_ID),
                stats=stats,
            )
        return Translation(strip_specials(result.tokens), decoder_passes=stats.forward_passes)
