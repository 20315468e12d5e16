"""The fast autoregressive path: the whole decode step compiled, the decode loop one CUDA graph (or a few).

`generate` (autoregressive.py) is the reference loop: eager, any model, early exit on EOS. `CompiledDecoder`
runs the same algorithm on a static KV cache with one `torch.compile`d function per step that does the
embedding, every block, the head, classifier-free guidance (one doubled batch), the logit processors and the
sampling. Nothing in a step synchronises with the host: positions live in a device tensor and the
finished-rows mask stays on the device. By default the loop runs all `max_new_tokens` steps (rows that
emitted EOS keep emitting it); with `exit_every=K` it reads one flag (have all rows finished?) back every K
steps and stops there, so a batch that ends early costs whole chunks of K steps, not the whole budget.

The prompt goes through the model eagerly (a prefill), except a one-token prompt with no guidance on a model
that is its own step module: that prefill is just the first step, so it runs compiled, inside the graphs.

How the steps are launched (`graph`): "loop" (default) captures every compiled step as ONE CUDA graph per
(batch bucket, lengths, guidance plan) on the second call with those shapes (the first runs step by step
and compiles the kernels), so a replay has no host work between steps at all (with `exit_every=K`:
one graph per chunk of K steps, replayed one after the other with one host read of the finished flag after
each, through pinned memory); "step" uses `torch.compile(mode="reduce-overhead")`, one CUDA graph per step,
launched from Python each step; "none" launches the compiled kernels directly.

Randomness: the steps consume Exp(1) noise drawn from the caller's generator before the step (or, for the
loop graph, for all steps of a graph before its replay, one draw per step), with the same shape and order as
`sample_from_logits` draws it, so a seeded compiled run samples the tokens the eager `generate` samples
wherever the two compute the same logits (in float32; bf16 kernels fused differently can flip near-ties).
An early exit only skips the draws of the steps it does not run.

Batch sizes are padded up to a bucket (1, 2, 4, 8, ...) and cache lengths rounded up to `cache_step` slots,
so that a new batch size or length within a bucket reuses the compiled step; padded rows are computed and
dropped. Attention reads the whole static cache with the unfilled slots masked out, or, with `kv_bucket`,
only the filled slots rounded up to a multiple of it (one compiled variant per bucket: worth it for long
contexts). Calling `generate` again with the same bucket and lengths compiles nothing
(`tests/core/test_sampling_compiled.py` counts compiles).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..nn.cuda_graphs import memory_fingerprint
from ..nn.kv_cache import KVCache
from .autoregressive import CachedLM, DecodeStats, check_guided_steps, check_prompt, finish_rows, guides
from .errors import SamplingError
from .logits import SamplingParams, log_noise, noise_shape, sample_with_noise

__all__ = ["CompiledDecoder", "DEFAULT_BATCH_BUCKETS"]

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# dynamo's recompile limit while a decoder steps (its variants: buckets x guidance x cache reads x first step)
COMPILE_VARIANTS = 256


class CompiledDecoder:
    """Compiled cached decoding of a `CachedLM` whose steps run on a static cache.

    model: anything `generate` accepts whose `setup_cache` takes `static=True` (core's `Transformer`, image's
    `ClassPrefixLM`, ...). If it has a `decode_module`, one-token steps call that module directly (e.g. the
    transformer inside an adapter whose prompt handling is not traceable). A one-token prompt runs as the
    first compiled step: as a token (no guidance, the model is its own step module), or as embeddings [N, 1,
    dim] looked up eagerly (`model.prompt_embeddings`, or the step module's `embed`) and fed to the step module
    (`embeddings=`: the guided prompt's conditional and unconditional rows differ, an adapter's class ids are
    not tokens). A longer prompt, or one without such embeddings, goes through the model itself, eagerly. A step module with `fuse_projections` (core's `Transformer`) has it called once:
    SwiGLU's two input GEMMs become one (same outputs and state_dict names, one kernel fewer per layer). `backend`/`mode` go to `torch.compile` (tests use a counting backend on CPU).

    exit_every: None (default) runs every step of the budget. K >= 1 (needs `eos_id`) splits the compiled
    steps into chunks of K and stops after the first chunk at whose end every real row (padding
    rows do not count) has emitted `eos_id`: one device-to-host read per chunk, the same tokens (the
    remaining ones are `eos_id`, as after a row's EOS anyway) and, seeded, the same noise per step. On CUDA
    with `graph="loop"` each chunk is its own captured graph; elsewhere the step loop checks the flag every K
    steps, so the steps run (`DecodeStats.forward_passes`: the prefill plus whole chunks) are the same.
    """

    def __init__(
        self,
        model: CachedLM,
        *,
        params: SamplingParams | None = None,
        cfg_scale: float | None = None,
        eos_id: int | None = None,
        backend: str | Callable[..., Any] = "inductor",
        mode: str | None = None,
        graph: str = "loop",
        batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
        cache_step: int = 256,
        kv_bucket: int | None = None,
        exit_every: int | None = None,
    ) -> None:
        self.model = model
        self.params = SamplingParams() if params is None else params
        if not isinstance(self.params, SamplingParams):
            raise SamplingError(f"params must be a SamplingParams, got {type(self.params).__name__}")
        self.cfg_scale = None if cfg_scale is None else float(cfg_scale)
        self.eos_id = eos_id
        self.batch_buckets = tuple(sorted(int(b) for b in batch_buckets))
        if not self.batch_buckets or self.batch_buckets[0] < 1:
            raise SamplingError(f"batch_buckets must be positive sizes, got {tuple(batch_buckets)}")
        if cache_step < 1:
            raise SamplingError(f"cache_step must be >= 1, got {cache_step}")
        self.cache_step = int(cache_step)
        if kv_bucket is not None and kv_bucket < 1:
            raise SamplingError(
                f"kv_bucket must be >= 1 (or None: attend over the whole cache), got {kv_bucket}"
            )
        self.kv_bucket = kv_bucket
        if graph not in ("loop", "step", "none"):
            raise SamplingError(f"graph must be 'loop', 'step' or 'none', got {graph!r}")
        self.graph = graph
        if exit_every is not None:
            if isinstance(exit_every, bool) or not isinstance(exit_every, int) or exit_every < 1:
                raise SamplingError(
                    f"exit_every must be an int >= 1 (or None: no early exit), got {exit_every!r}"
                )
            if eos_id is None:
                raise SamplingError("exit_every needs an eos_id (without one no row ever finishes)")
        self.exit_every = exit_every
        self._step_module = getattr(model, "decode_module", model)
        if callable(getattr(self._step_module, "fuse_projections", None)):
            self._step_module.fuse_projections()
        options: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
        if backend == "inductor":
            mode = mode or ("reduce-overhead" if graph == "step" else None)
            if mode is not None:
                options["mode"] = mode
        self._step = torch.compile(self._step_impl, **options)
        self._noise: Tensor | None = None
        self._loops: dict[tuple, _LoopGraph] = {}  # loop CUDA graphs, by (bucket, lengths, guidance)
        self._seen: set[tuple] = set()  # loop keys run once step by step (their kernels are compiled)

    # ------------------------------------------------------------------ the compiled step
    def _step_impl(
        self,
        token: Tensor,
        input_pos: Tensor,
        raw_noise: Tensor | None,
        finished: Tensor,
        guide: bool,
        kv_len: int | None,
        embeddings: Tensor | None = None,
    ):
        """token [N] (N = bucket), input_pos [1], raw Exp(1) noise -> (next ids [N], finished [N]).
        `embeddings` [rows, 1, dim] (the first step of an embedded prompt) replace the token feed."""
        extra = {} if kv_len is None else {"kv_len": kv_len}
        if embeddings is not None:
            logits = self._step_module(embeddings=embeddings, input_pos=input_pos, **extra)[:, -1].float()
        else:
            token = token[:, None]
            feed = torch.cat([token, token]) if self.cfg_scale is not None else token
            logits = self._step_module(feed, input_pos=input_pos, **extra)[:, -1].float()
        logits = self._guide(logits, guide)
        noise = None if raw_noise is None else log_noise(raw_noise)  # as `draw_noise` does: bit-identical
        next_token = sample_with_noise(logits, self.params, noise)
        tokens, finished = finish_rows(next_token[:, None], finished, self.eos_id)
        return tokens[:, 0], finished

    # ------------------------------------------------------------------ public API
    def bucket(self, batch: int) -> int:
        """The padded batch size a batch of `batch` rows runs at."""
        for size in self.batch_buckets:
            if size >= batch:
                return size
        raise SamplingError(f"batch {batch} exceeds the largest bucket {self.batch_buckets[-1]}")

    def cache_length(self, needed: int) -> int:
        """Cache slots allocated for `needed` positions: rounded up to `cache_step` (capped at the model's
        `max_seq_len`), so that other prompt / output lengths reuse the compiled step."""
        rounded = -(-needed // self.cache_step) * self.cache_step
        limit = getattr(getattr(self.model, "config", None), "max_seq_len", None)
        return max(needed, min(rounded, limit)) if limit else rounded

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        *,
        uncond_prompt: Tensor | None = None,
        generator: torch.Generator | None = None,
        guided_steps: int | None = None,
        stats: DecodeStats | None = None,
    ) -> Tensor:
        """New tokens [B, max_new_tokens] after `prompt` [B, T], as `generate` returns them (after a row's EOS
        every token is EOS). `uncond_prompt` [B, T] is required exactly when the decoder has a cfg_scale;
        `guided_steps` limits guidance to the first new tokens (one more compiled graph for the rest).
        On CUDA with `graph="loop"` the first call of a (bucket, lengths) runs step by step (compiling the
        kernels) and the next ones replay all compiled steps as one captured CUDA graph (or one per chunk of
        `exit_every` steps). A `DecodeStats` gets the forward passes run (the prefill included) and the new
        tokens computed per row: `max_new_tokens` each unless the run exited early."""
        check_prompt(self.model, prompt, max_new_tokens)
        guided = self.cfg_scale is not None
        if guided != (uncond_prompt is not None):
            raise SamplingError(
                "uncond_prompt is needed with cfg_scale and only then "
                f"(cfg_scale={self.cfg_scale}, uncond_prompt given: {uncond_prompt is not None})"
            )
        if guided and tuple(uncond_prompt.shape) != tuple(prompt.shape):
            raise SamplingError(
                f"uncond_prompt must have the prompt's shape {tuple(prompt.shape)}, got {tuple(uncond_prompt.shape)}"
            )
        check_guided_steps(guided_steps, guided)
        batch, prompt_len = prompt.shape
        size = self.bucket(batch)
        device = prompt.device
        rows = _pad_rows(prompt.long(), size)
        if guided:
            rows = torch.cat([rows, _pad_rows(uncond_prompt.to(device).long(), size)])
        cache_len = self.cache_length(prompt_len + max_new_tokens - 1)
        self.model.setup_cache(rows.shape[0], cache_len, static=True)
        _mark_static(self._step_module)

        # feed[s] is the input token of new token s and feed[s + 1] its output (time-major: fixed strides)
        feed = torch.zeros(max_new_tokens + 1, size, dtype=torch.long, device=device)
        finished = torch.zeros(size, dtype=torch.bool, device=device)
        first, entry = self._first_step(prompt_len, guided)
        embeddings = None
        if entry == "token":  # a one-token prompt is just the first step: it runs compiled, inside the graphs
            feed[0] = rows[:, 0]
            vocab = self._vocab_size()
        elif entry == "embeddings":  # the same, fed as its embeddings (one eager lookup)
            embeddings = self._prompt_embedder()(rows)
            vocab = self._vocab_size()
        else:  # the prompt through the model itself, eagerly
            logits = self.model(rows, input_pos=torch.arange(prompt_len, device=device))[:, -1].float()
            logits = self._guide(logits, guides(0, guided_steps))
            vocab = logits.shape[-1]
            raw = self._draw(batch, size, vocab, generator, device)
            noise = None if raw is None else log_noise(raw)
            token, finished = finish_rows(
                sample_with_noise(logits, self.params, noise)[:, None], finished, self.eos_id
            )
            feed[1] = token[:, 0]  # feed[0] stays unread: step 1 is the first compiled one
        positions = torch.arange(prompt_len - 1, prompt_len - 1 + max_new_tokens, device=device)
        plan = [self._step_plan(step, prompt_len, cache_len, guided_steps) for step in range(max_new_tokens)]
        chunks = self._chunks(first, max_new_tokens)
        key = (size, batch, prompt_len, max_new_tokens, cache_len, tuple(plan), vocab, entry)
        with self._compile_budget():  # one decoder's variants: see `_compile_budget`
            if self.graph == "loop" and device.type == "cuda" and chunks and key in self._seen:
                loop = self._loops.get(key)
                if loop is not None and loop.fingerprint != memory_fingerprint(self._step_module):
                    loop = None  # weights, cache or context were reallocated: the capture reads stale memory
                if loop is None:
                    loop = self._loops[key] = _LoopGraph(
                        self, vocab, feed, finished, positions, plan, chunks, embeddings, batch
                    )
                feed, done = loop.run(
                    feed, finished, batch, generator, embeddings, early=self.exit_every is not None
                )
            else:
                self._seen.add(key)
                done = first  # new tokens computed so far
                for index, (start, stop) in enumerate(chunks):
                    if index and self.exit_every is not None and bool(finished[:batch].all()):
                        break  # one host read per chunk
                    for step in range(start, stop):
                        raw = self._draw(batch, size, vocab, generator, device)
                        if device.type == "cuda":
                            torch.compiler.cudagraph_mark_step_begin()
                        guide, kv_len = plan[step]
                        pos = positions[step : step + 1]
                        fed = embeddings if step == 0 else None
                        token, finished = self._step(feed[step], pos, raw, finished, guide, kv_len, fed)
                        feed[step + 1] = token
                    done = stop
        if stats is not None:
            stats.forward_passes += done
            stats.new_tokens += done
        tokens = feed[1:, :batch].T.contiguous()
        if done < max_new_tokens:  # every real row finished: the rest is EOS, as the full loop writes it
            tokens[:, done:] = self.eos_id
        return tokens

    # ------------------------------------------------------------------ helpers
    def _compile_budget(self) -> contextlib.AbstractContextManager:
        """Raise dynamo's recompile limit (8 per function) while this decoder steps: its compiled step has one
        variant per batch bucket, guidance setting, cache-read length and first-step input (a one-token
        prompt's embeddings), and every decoder in the process shares the function's count; a few buckets
        of a guided one-token prompt exceeded 8 and failed (FailOnRecompileLimitHit). Each variant compiles
        once; the limit only has to stay finite."""
        limit = max(torch._dynamo.config.recompile_limit, COMPILE_VARIANTS)
        return torch._dynamo.config.patch(recompile_limit=limit)

    def _chunks(self, first: int, max_new_tokens: int) -> list[tuple[int, int]]:
        """The compiled steps, new tokens `first`.. `max_new_tokens - 1`, as [start, stop) ranges: all of them
        at once, or `exit_every` each (the last one shorter when they do not divide)."""
        if max_new_tokens <= first:
            return []
        every = self.exit_every or max_new_tokens - first
        return [(start, min(start + every, max_new_tokens)) for start in range(first, max_new_tokens, every)]

    def _first_step(self, prompt_len: int, guided: bool) -> tuple[int, str]:
        """(the first new token the compiled steps compute, how the prompt enters): (0, "token") for a
        one-token prompt the step module itself embeds with no guidance (the conditional and unconditional
        prompts differ); (0, "embeddings") for another one-token prompt whose embeddings are known; (1,
        "eager") otherwise, or when the vocabulary size (for the noise buffers) is unknown: an eager prefill
        computes the first token."""
        if prompt_len != 1 or not self._vocab_size():
            return 1, "eager"
        if not guided and self._step_module is self.model:
            return 0, "token"
        return (0, "embeddings") if self._prompt_embedder() is not None else (1, "eager")

    def _prompt_embedder(self) -> Callable[[Tensor], Tensor] | None:
        """Prompt ids [N, T] -> the step module's input embeddings [N, T, dim]: the model's own
        `prompt_embeddings` (an adapter whose prompt ids are not all tokens), else the step module's `embed`
        when the model is its own step module; None when neither exists."""
        own = getattr(self.model, "prompt_embeddings", None)
        if callable(own):
            return own
        embed = getattr(self._step_module, "embed", None)
        return embed if self._step_module is self.model and callable(embed) else None

    def _vocab_size(self) -> int | None:
        """The logits' width, for the noise buffers, when no eager prefill shows it (None: not known, so the
        prefill stays eager)."""
        vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
        return int(vocab) if vocab else None

    def _step_plan(
        self, step: int, prompt_len: int, cache_len: int, guided_steps: int | None
    ) -> tuple[bool, int | None]:
        """(guided?, cache slots read) of new token `step`: what the compiled step specialises on."""
        kv_len = None
        if self.kv_bucket is not None:  # slots 0..pos filled: read them rounded up to the bucket
            kv_len = min(cache_len, -(-(prompt_len + step) // self.kv_bucket) * self.kv_bucket)
        return guides(step, guided_steps), kv_len

    def _guide(self, logits: Tensor, guide: bool) -> Tensor:
        """CFG on doubled-batch logits [2N, V] -> [N, V]; unguided steps keep the conditional half."""
        if self.cfg_scale is None:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + self.cfg_scale * (cond - uncond) if guide else cond

    def _draw(
        self, batch: int, size: int, vocab: int, generator: torch.Generator | None, device: torch.device
    ) -> Tensor | None:
        """Raw Exp(1) noise for one step in a reused [bucket, ...] buffer; only the real rows are drawn, so the
        generator advances exactly as `sample_from_logits` on [batch, vocab] logits advances it."""
        shape = noise_shape((size, vocab), self.params)
        if shape is None:
            return None
        if self._noise is None or tuple(self._noise.shape) != shape or self._noise.device != device:
            self._noise = torch.ones(shape, dtype=torch.float32, device=device)
            torch._dynamo.mark_static_address(self._noise)
        self._noise[:batch].exponential_(1.0, generator=generator)
        return self._noise


class _LoopGraph:
    """The compiled decode steps captured as ONE CUDA graph (per bucket, real rows, lengths and guidance plan),
    or as one graph per chunk of steps (`exit_every`), the chunks sharing one memory pool.

    The step's compiled kernels replay back to back with no host work between them, so a small model's
    step costs its kernels' time, not Python's. Inputs live in static buffers: the token feed (its first one
    or two rows written before each replay: the prompt token, and the eagerly computed first token if any),
    the prompt's embeddings (when it enters that way) and the finished mask. Each step's noise is drawn
    INSIDE the graph, into one reused buffer, from a generator registered with the graph
    (`CUDAGraph.register_generator_state`): its state is set to the caller's generator before the replays and
    handed back after them, so the draws (Philox offsets relative to that state, the real rows only, one step
    at a time) are the eager loop's and the caller's generator advances as it would there: the same tokens,
    and no host launch per step (LlamaGen-B: 255 draws, ~4 ms of host time a generation). Chunks pass the
    tokens and the finished mask on through the same buffers.
    """

    def __init__(
        self,
        decoder: CompiledDecoder,
        vocab: int,
        feed: Tensor,
        finished: Tensor,
        positions: Tensor,
        plan: list[tuple[bool, int | None]],
        chunks: list[tuple[int, int]],
        embeddings: Tensor | None,
        batch: int,
    ) -> None:
        self.feed, self.finished, self.positions = feed.clone(), finished.clone(), positions.clone()
        self.embeddings = None if embeddings is None else embeddings.clone()  # the prompt's, step 0's input
        self.first = chunks[0][0]
        size = feed.shape[1]
        shape = noise_shape((size, vocab), decoder.params)
        self.noise = None if shape is None else torch.ones(shape, dtype=torch.float32, device=feed.device)
        self.generator = None if shape is None else torch.Generator(device=feed.device)
        self.decoder = decoder
        self.chunks = chunks
        self.all_finished = torch.zeros((), dtype=torch.bool, pin_memory=True)  # read by the host per chunk
        self.read = torch.cuda.Event()

        def body(start: int, stop: int) -> None:
            finished_now = self.finished
            for step in range(start, stop):
                guide, kv_len = plan[step]
                if self.noise is not None:  # as `CompiledDecoder._draw`: the real rows only
                    self.noise[:batch].exponential_(1.0, generator=self.generator)
                fed = self.embeddings if step == 0 else None
                token, finished_now = decoder._step(
                    self.feed[step],
                    self.positions[step : step + 1],
                    self.noise,
                    finished_now,
                    guide,
                    kv_len,
                    fed,
                )
                self.feed[step + 1].copy_(token)
            self.finished.copy_(finished_now)

        pool = None if len(chunks) == 1 else torch.cuda.graph_pool_handle()  # chunks run one after another
        self.graphs: list[torch.cuda.CUDAGraph] = []
        for start, stop in chunks:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # one uncaptured run on a side stream: lazy inits happen here
                body(start, stop)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            if self.generator is not None:
                graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph, pool=pool):
                body(start, stop)
            self.graphs.append(graph)
        self.fingerprint = memory_fingerprint(decoder._step_module)  # after setup: the memory the graph uses

    def run(
        self,
        feed: Tensor,
        finished: Tensor,
        batch: int,
        generator: torch.Generator | None,
        embeddings: Tensor | None,
        *,
        early: bool,
    ) -> tuple[Tensor, int]:
        """Replay the chunks (all of them, or, `early`, until every real row has finished): (the static token
        feed [max_new_tokens + 1, bucket], new tokens computed = the last step replayed + 1)."""
        self.feed[: self.first + 1].copy_(feed[: self.first + 1])
        if self.embeddings is not None:
            self.embeddings.copy_(embeddings)
        self.finished.copy_(finished)
        source = None
        if self.generator is not None:  # the graph draws from the caller's generator's state
            index = self.feed.device.index
            index = torch.cuda.current_device() if index is None else index
            source = generator if generator is not None else torch.cuda.default_generators[index]
            self.generator.set_state(source.get_state())
        done = self.first
        for index, ((_, stop), graph) in enumerate(zip(self.chunks, self.graphs, strict=True)):
            if index and early:
                self.read.synchronize()  # the flag of the previous chunk has arrived
                if bool(self.all_finished):
                    break
            graph.replay()
            done = stop
            if early and index + 1 < len(self.graphs):
                self.all_finished.copy_(self.finished[:batch].all(), non_blocking=True)
                self.read.record()
        if source is not None:  # advanced by the draws of the chunks replayed, as the eager loop's would be
            source.set_state(self.generator.get_state())
        return self.feed, done


def _mark_static(module: object) -> None:
    """Tell the compiler the KV cache buffers keep their address: CUDA graphs then write them in place
    instead of treating them as ordinary inputs (which, mutated, would make it skip the graphs)."""
    if not isinstance(module, torch.nn.Module):
        return
    for layer in module.modules():
        if isinstance(layer, KVCache):
            torch._dynamo.mark_static_address(layer.k_cache)
            torch._dynamo.mark_static_address(layer.v_cache)


def _pad_rows(rows: Tensor, size: int) -> Tensor:
    """Pad [B, T] to [size, T] by repeating the first row (padded rows are computed and dropped)."""
    if rows.shape[0] == size:
        return rows
    return torch.cat([rows, rows[:1].expand(size - rows.shape[0], -1)])
