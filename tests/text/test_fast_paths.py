"""The masked diffusion LM's graphed denoiser passes sample the eager tokens (CPU fallback and GPU graphs)."""

from __future__ import annotations

import functools

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_mdlm_graphed_sampling_gives_the_eager_tokens(device: str) -> None:
    torch.manual_seed(0)
    model = MaskedDiffusionLM(MDLMConfig(vocab_size=40, dim=32, n_layers=2, n_heads=4, max_seq_len=24))
    model = model.to(device).eval()
    for batch, length in ((3, 24), (2, 16), (3, 24)):
        kwargs = dict(steps=12, params=SamplingParams(top_k=10), device=device)
        eager = model.sample(batch, length, generator=torch.Generator(device).manual_seed(length), **kwargs)
        fast = model.sample(
            batch, length, generator=torch.Generator(device).manual_seed(length), graphed=True, **kwargs
        )
        assert torch.equal(fast.tokens, eager.tokens)
        assert fast.num_model_calls == eager.num_model_calls
        assert not (fast.tokens == model.config.mask_id).any()
    if device == "cuda":
        assert len(model._graphs) == 2  # one capture per shape, reused by the third call


def test_ar_translator_compiled_greedy_gives_the_eager_translations() -> None:
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model("text-sort-ar")
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    for batch_size, seed in ((5, 0), (3, 1), (5, 2)):  # bucket 8, then 4, then 8 again (kept buffers)
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        eager = model.translate(batch.source, batch.source_length)
        fast = model.translate(batch.source, batch.source_length, compiled="eager")
        assert fast.tokens == eager.tokens
        assert task.accuracy(batch, fast.tokens) > 0.8
    with pytest.raises(Exception, match="greedy"):
        model.translate(batch.source, batch.source_length, beam_size=2, compiled="eager")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ar_translator_compiled_greedy_exits_early_per_chunk(device: str) -> None:
    # the compiled AR stops after the first chunk of `exit_every` steps at whose end every sentence has ended:
    # the eager translations, and decoder_passes = the eager passes rounded up to whole chunks (the BOS prompt
    # is the first compiled step: no eager prefill) (this preset's budget is only 9 passes, one default chunk
    # of 8: chunks of 2 show the exit)
    from genloom.text.ar import COMPILED_EXIT_EVERY
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model("text-sort-ar", device=device)
    backend = "eager" if device == "cpu" else True  # CUDA: inductor, chunk graphs replayed from the 2nd call
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    saved = []
    for batch_size, seed in ((5, 0), (3, 1), (5, 2), (3, 5), (1, 3), (1, 4), (5, 0)):
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        source, length = batch.source.to(device), batch.source_length.to(device)
        eager = model.translate(source, length)
        full = model.translate(source, length, compiled=backend, exit_every=None)
        assert full.tokens == eager.tokens
        for every in (COMPILED_EXIT_EVERY, 2):
            fast = model.translate(source, length, compiled=backend, exit_every=every)
            assert fast.tokens == eager.tokens
            chunks = -(-eager.decoder_passes // every)
            assert fast.decoder_passes == min(every * chunks, full.decoder_passes)
            saved.append(full.decoder_passes - fast.decoder_passes)
    assert max(saved) > 0  # some batches stopped before the budget
    if device == "cuda":  # buckets 8, 4 and 1, each captured once per exit setting
        assert [len(runner._loops) for runner in model._compiled.values()] == [3, 3, 3]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("preset", ["text-sort-dat", "text-sort-ctc"])
def test_one_pass_nar_graphed_translation_equals_eager(preset: str, device: str) -> None:
    # the graphed pass pads the source to a multiple of 8 (masked): the same translations as the eager pass,
    # batch sizes and widths changing between calls (on CUDA: one captured graph per padded shape)
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model(preset, device=device)
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    for batch_size, seed in ((1, 0), (5, 1), (1, 2), (5, 1)):
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        source, length = batch.source.to(device), batch.source_length.to(device)
        vocab = model.config.vocab_size
        bigram = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
        for options in (
            (
                {},
                {"strategy": "greedy"},
                {"strategy": "viterbi"},
                {"strategy": "joint-viterbi"},
                {"strategy": "beam", "beam_size": 4, "bigram": bigram, "lm_weight": 0.5},
                {
                    "strategy": "beam",
                    "beam_size": 4,
                    "bigram": bigram,
                    "lm_weight": 0.5,
                    "merge_prefixes": True,
                },
            )  # fmt: skip
            if preset.endswith("dat")
            else (
                {},
                {"beam_size": 4},
                {"beam_size": 4, "bigram": bigram, "lm_weight": 0.5, "length_bonus": 1.0},
            )
        ):
            eager = model.translate(source, length, **options)
            fast = model.translate(source, length, graphed=True, **options)
            assert fast.tokens == eager.tokens and fast.decoder_passes == 1
            assert task.accuracy(batch, fast.tokens) >= 0.8


def _on_meta(preset: str) -> tuple:
    """A shipped preset moved to the meta device, with a two-row source batch there."""
    from genloom.text.pretrained import load_text_model

    model, _, _ = load_text_model(preset)
    source = torch.tensor([[5, 7, 6, 0, 0, 0, 0, 0], [6, 5, 8, 7, 9, 5, 6, 7]], device="meta")
    return model.to("meta"), source, torch.tensor([3, 8], device="meta")


@pytest.mark.parametrize("preset", ["text-sort-dat", "text-sort-ctc"])
def test_one_pass_nar_network_pass_reads_nothing_from_the_device(preset: str) -> None:
    # a CUDA graph cannot contain a host read (.item(), int(tensor), data-dependent shapes) or a host-to-device
    # copy: on the meta device every such read raises, so the CPU proves the pass capturable
    from genloom.core.nn.capture_check import check_capturable

    model, source, length = _on_meta(preset)
    check_capturable(model._graphable_pass, source, length)
    if preset == "text-sort-ctc":  # the batched prefix beam search, with and without the LM, goes inside too
        bigram = torch.zeros(model.config.vocab_size, model.config.vocab_size, device="meta")
        for table in (None, bigram):
            beam = functools.partial(
                model._graphable_beam, beam_size=4, bigram=table, lm_weight=0.5, length_bonus=1.0
            )
            check_capturable(beam, source, length)
    if preset == "text-sort-dat":  # lookahead decoding goes inside the graph too
        for beta in (None, 1.0):
            decode = functools.partial(model._graphable_lookahead, beta=beta, collapse_repeats=False)
            tokens = check_capturable(decode, source, length)
            assert tokens.shape == (2, int(model.graph_size(torch.tensor([8]))))  # fixed width: no read
        # lookahead with a bigram LM, and beam search (with and without one), go inside the graph as well
        bigram = torch.zeros(model.config.vocab_size, model.config.vocab_size, device="meta")
        with_lm = functools.partial(
            model._graphable_lookahead, beta=1.0, collapse_repeats=True, bigram=bigram, lm_weight=0.5
        )
        check_capturable(with_lm, source, length)
        for joint in (False, True):
            viterbi = functools.partial(
                model._graphable_viterbi, length_beta=1.0, joint=joint, bigram=bigram, lm_weight=0.5,
                collapse_repeats=True,
            )  # fmt: skip
            check_capturable(viterbi, source, length)
        for table in (None, bigram):
            beam = functools.partial(
                model._graphable_beam, beam_size=3, beta=1.0, bigram=table, lm_weight=0.5,
                length_alpha=1.0, collapse_repeats=True, fixed_width=True,
            )  # fmt: skip
            assert check_capturable(beam, source, length).shape == tokens.shape


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("preset", ["text-sort-nat", "text-sort-cmlm"])
def test_length_predicting_graphed_translation_equals_eager(preset: str, device: str) -> None:
    # the graphed NAT / CMLM decode at the fixed width max_target_length (not the longest predicted length, a
    # device read) on the source padded to a multiple of 8, both masked: the eager translations, token for
    # token, for every batch size / width and (CMLM) every iterations / length-beam setting
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model(preset, device=device)
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    cmlm = preset.endswith("cmlm")
    settings = (
        [{"iterations": i, "length_beam": b} for i, b in ((1, 1), (2, 3), (4, 3), (10, 3), (3, 5))]
        if cmlm
        else [{}]
    )
    widths = set()
    for batch_size, seed in ((1, 0), (5, 1), (7, 3), (1, 2), (16, 4), (5, 1)):
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        source, length = batch.source.to(device), batch.source_length.to(device)
        widths.add(source.shape[1])
        for options in settings:
            eager = model.translate(source, length, **options)
            fast = model.translate(source, length, graphed=True, **options)
            assert fast.tokens == eager.tokens
            assert fast.decoder_passes == eager.decoder_passes == options.get("iterations", 1)
            if options.get("iterations", 4) >= 2:
                assert task.accuracy(batch, fast.tokens) >= 0.8
    assert len(widths) > 1  # unpadded source widths differ between calls (all pad to 8)
    if device == "cuda":  # one graph per (options, padded shape): batch sizes 1, 5, 7, 16 at width 8
        assert [len(cache) for cache in model._graph_caches.values()] == [4] * len(settings)


@pytest.mark.parametrize("preset", ["text-sort-nat", "text-sort-cmlm"])
def test_wider_decoder_padding_leaves_real_positions_unchanged(preset: str) -> None:
    # why the fixed width is safe: decode_logits masks the padding keys of the decoder self-attention, so the
    # real positions' logits at width max_target_length are those at the longest predicted length
    from genloom.text.pretrained import load_text_model
    from genloom.text.seq2seq import encode_source
    from genloom.text.specials import MASK_ID

    model, _, _ = load_text_model(preset)
    source = torch.tensor([[5, 7, 6, 0, 0], [6, 5, 8, 7, 9]])
    length = torch.tensor([3, 5])
    memory, source_mask = encode_source(model.model, source, length)
    lengths = model.top_lengths(memory, source_mask, 1)[:, 0]
    narrow = int(lengths.max())
    assert narrow < model.fixed_width == model.config.max_target_length
    outputs = []
    for width in (narrow, model.fixed_width):
        if preset.endswith("nat"):
            inputs = model.copied_source(source, length, lengths, width)
        else:
            inputs = model.decoder.embed(torch.full((2, width), MASK_ID))
        logits, _ = model.decode_logits(inputs, lengths, memory, source_mask)
        outputs.append(logits[:, :narrow])
    real = (torch.arange(narrow) < lengths.unsqueeze(1)).unsqueeze(-1)
    torch.testing.assert_close(outputs[1] * real, outputs[0] * real, rtol=1e-5, atol=1e-5)
    # without the padding mask the wide padding changes the real positions: the check above is not vacuous
    unmasked, _ = model.decode_logits(inputs, torch.full_like(lengths, width), memory, source_mask)
    assert not torch.allclose(unmasked[:, :narrow] * real, outputs[0] * real, atol=1e-3)


@pytest.mark.parametrize("preset", ["text-sort-nat", "text-sort-cmlm"])
def test_length_predicting_graphed_functions_read_nothing_from_the_device(preset: str) -> None:
    # the graphed NAT pass and the whole Mask-Predict loop (iterations, per-row re-masking counts, the choice
    # among the length beam) capture: nothing read back, nothing copied from the host. The eager internals
    # (width = the longest predicted length) and the former length predictor (index_fill with a host-made
    # index tensor) fail the same check, so passing it means something
    from genloom.core.nn.capture_check import CaptureCheckError, check_capturable
    from genloom.text.seq2seq import encode_source

    model, source, length = _on_meta(preset)
    width = model.config.max_target_length
    if preset == "text-sort-nat":
        assert check_capturable(model._graphable_pass, source, length).shape == (2, width)
        eager = functools.partial(model._decode, width=None)
    else:
        for iterations, beam in ((1, 1), (4, 3), (10, 3)):
            decode = functools.partial(model._graphable_mask_predict, iterations=iterations, length_beam=beam)
            assert check_capturable(decode, source, length).shape == (2, width)
        eager = functools.partial(model._mask_predict, iterations=4, length_beam=3, width=None)
    with pytest.raises(CaptureCheckError, match="reads a value"):
        check_capturable(eager, source, length)

    def former_length_logits(source: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        memory, mask = encode_source(model.model, source, length)
        pooled = (memory * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        logits = model.length_predictor.proj(pooled.float())
        return logits.index_fill(1, torch.tensor([0], device=logits.device), float("-inf"))

    with pytest.raises(CaptureCheckError, match="copies host data"):
        check_capturable(former_length_logits, source, length)


def test_length_predictor_excludes_length_zero() -> None:
    # the capture-safe class-0 mask gives the former index_fill's logits exactly
    from genloom.text.seq2seq import LengthPredictor, Seq2SeqConfig

    torch.manual_seed(0)
    predictor = LengthPredictor(Seq2SeqConfig(family="nat", dim=16, max_target_length=10))
    memory, mask = torch.randn(3, 4, 16), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    logits = predictor(memory, mask)
    pooled = (memory * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    former = predictor.proj(pooled).index_fill(1, torch.tensor([0]), float("-inf"))
    assert torch.equal(logits, former) and logits.shape == (3, 11)
    assert (logits[:, 0] == float("-inf")).all() and logits[:, 1:].isfinite().all()


def test_unknown_dag_strategy_is_refused_before_any_pass() -> None:
    from genloom.text.errors import TextInputError
    from genloom.text.pretrained import load_text_model

    model, _, _ = load_text_model("text-sort-dat")
    with pytest.raises(TextInputError, match="unknown DAG decoding strategy 'nope'"):
        model.translate(torch.tensor([[5, 6, 7]]), torch.tensor([3]), strategy="nope", graphed=True)
    assert model._graph_caches == {}  # nothing was run (on a GPU: nothing captured) for the bad call


@pytest.mark.parametrize("preset", ["text-sort-dat", "text-sort-ctc", "text-sort-nat", "text-sort-cmlm"])
def test_compiled_graphed_nar_translation_equals_eager(preset: str) -> None:
    # graphed="<backend>" compiles the pass before capture; dynamo's "eager" backend traces it without code
    # generation, so the CPU shows the traced functions give the eager translations (inductor: on the GPU)
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    torch._dynamo.reset()
    model, _, _ = load_text_model(preset)
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    for batch_size, seed in ((1, 0), (4, 1)):
        batch = task.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        eager = model.translate(batch.source, batch.source_length)
        fast = model.translate(batch.source, batch.source_length, graphed="eager")
        assert fast.tokens == eager.tokens


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["text-sort-ar", "text-sort-dat", "text-sort-cmlm"])
def test_translators_take_a_cpu_batch_and_decode_on_their_device(preset: str) -> None:
    # checked on the host (no GPU read before decoding), then moved: the same translations as a GPU batch
    from genloom.text.pretrained import load_text_model
    from genloom.text.tasks import Seq2SeqTask

    model, _, _ = load_text_model(preset, device="cuda")
    batch = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8).sample(
        5, generator=torch.Generator().manual_seed(3)
    )
    on_cpu = model.translate(batch.source, batch.source_length)
    on_gpu = model.translate(batch.source.cuda(), batch.source_length.cuda())
    assert on_cpu.tokens == on_gpu.tokens


@pytest.mark.parametrize(
    ("preset", "strategy"),
    [("multi30k-dat", "lookahead"), ("multi30k-dat", "joint-viterbi"), ("multi30k-ctc", None)],
)
def test_compiled_one_pass_translators_compile_once_for_every_source_width(preset: str, strategy) -> None:
    # the padded source width is symbolic in the compiled pass: sentences of three widths (8 / 16 / 24 after
    # padding) share one dynamo graph per batch size (a compile takes minutes at real sizes on the GPU), and
    # each translates as the eager pass does; joint Viterbi with the bigram LM too (its recursion and walk
    # back are custom ops of symbolic size, the step count integer maths)
    from torch._dynamo.utils import counters

    from genloom.text.cli import load_bigram, translate_lines
    from genloom.text.pretrained import load_text_model

    torch._dynamo.reset()
    counters.clear()
    model, tokenizer, folder = load_text_model(preset)
    options = {}
    if strategy == "joint-viterbi":
        bigram = load_bigram(folder, model.config.vocab_size)
        options = {"strategy": strategy, "bigram": bigram, "lm_weight": 0.5}
    lines = [
        "Zwei Hunde.",
        "Zwei Hunde spielen im Schnee und ein Mann schaut ihnen zu.",
        "Ein Mann mit einem orangefarbenen Hut starrt auf etwas, während zwei Kinder im Park spielen und lachen.",
    ]
    widths = {len(tokenizer.encode(line)) // 8 for line in lines}
    assert len(widths) == 3  # three padded widths
    eager, _ = translate_lines(model, tokenizer, lines, batch_size=1, **options)
    compiled, _ = translate_lines(model, tokenizer, lines, batch_size=1, graphed="eager", **options)
    assert compiled == eager
    assert counters["stats"]["unique_graphs"] == 1


def test_upsampled_width_is_the_upsampled_length_of_a_width() -> None:
    # host arithmetic that stays symbolic in a compiled pass (integer maths for multiples of 1/1024), equal to
    # the tensor computation the decoder lengths use, for integer, dyadic and other ratios
    from genloom.text.ctc_nat import upsampled_length, upsampled_width

    widths = torch.arange(0, 300)
    for ratio in (4, 4.0, 3.0, 1.5, 1.1, 2.3, 0.3):
        expected = upsampled_length(widths, ratio, max_length=200).tolist()
        got = [upsampled_width(int(w), ratio, max_length=200) for w in widths]
        assert got == expected and all(type(g) is int for g in got), ratio
