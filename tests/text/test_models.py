"""Tiny models of every family trained for a few hundred CPU steps must solve the sort task.

Baseline: the same model untrained (NAR families with tied embeddings copy some inputs by chance). Each model trains once per session (module fixture).
"""

import pytest
import torch

from genloom.text.ar import ARTranslator
from genloom.text.errors import GraphTooSmallError, TextInputError
from genloom.text.glat import GlanceSchedule
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
from genloom.text.nat import CMLM, CTCNAT, DATransformer, VanillaNAT
from genloom.text.seq2seq import Seq2SeqConfig
from genloom.text.tasks import Seq2SeqBatch, Seq2SeqTask
from genloom.text.training import text_train_config, train

FAMILIES = {"ar": ARTranslator, "nat": VanillaNAT, "cmlm": CMLM, "ctc": CTCNAT, "dat": DATransformer}
TASK = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=6)
STEPS = {"ar": 200, "nat": 250, "cmlm": 200, "ctc": 250, "dat": 200}


def tiny_config(family: str, task: Seq2SeqTask = TASK, **overrides) -> Seq2SeqConfig:
    fields = dict(
        family=family,
        vocab_size=task.vocab_size,
        dim=32,
        encoder_layers=1,
        decoder_layers=2,
        n_heads=4,
        dropout=0.0,
        max_source_length=task.max_length,
        max_target_length=task.max_target_length,
        upsample_ratio=2.0,
    )
    fields.update(overrides)
    return Seq2SeqConfig(**fields)


@pytest.fixture(scope="module")
def trained() -> dict[str, torch.nn.Module]:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    models = {}
    for family, cls in FAMILIES.items():
        torch.manual_seed(0)
        model = cls(tiny_config(family))
        glance = (
            GlanceSchedule(start=0.5, end=0.1, anneal_steps=STEPS[family])
            if family in ("ctc", "dat")
            else None
        )
        config = text_train_config(steps=STEPS[family], lr=5e-3, warmup_steps=20)
        train(model, lambda g: TASK.sample(32, generator=g), config, glance=glance)
        models[family] = model
    return models


@pytest.fixture(scope="module")
def test_batch() -> Seq2SeqBatch:
    return TASK.sample(200, generator=torch.Generator().manual_seed(123))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_learns_sort(trained, test_batch, family):
    untrained = FAMILIES[family](tiny_config(family)).eval()
    baseline = TASK.accuracy(
        test_batch, untrained.translate(test_batch.source, test_batch.source_length).tokens
    )
    out = trained[family].translate(test_batch.source, test_batch.source_length)
    accuracy = TASK.accuracy(test_batch, out.tokens)
    assert accuracy > 0.9 and accuracy > baseline + 0.5, (family, baseline, accuracy)
    if family in ("nat", "ctc", "dat"):
        assert out.decoder_passes == 1
    if family == "cmlm":
        assert out.decoder_passes == 4


@pytest.mark.slow
def test_dat_decoders_and_cmlm_iterations(trained, test_batch):
    dat = trained["dat"]
    for strategy in ("greedy", "viterbi"):
        out = dat.translate(test_batch.source, test_batch.source_length, strategy=strategy)
        assert TASK.accuracy(test_batch, out.tokens) > 0.85, strategy
    one_pass = trained["cmlm"].translate(
        test_batch.source, test_batch.source_length, iterations=1, length_beam=1
    )
    assert TASK.accuracy(test_batch, one_pass.tokens) > 0.5 and one_pass.decoder_passes == 1


@pytest.mark.slow
def test_ar_cached_greedy_speculative_and_beam_search(trained, test_batch):
    model = trained["ar"]
    greedy = model.translate(test_batch.source[:32], test_batch.source_length[:32])
    # cached decoding must equal the argmax of a full teacher-forced pass over its own output
    from genloom.text.seq2seq import add_markers, padding_mask
    from genloom.text.tasks import pad_sequences

    hyp, hyp_length = pad_sequences(greedy.tokens)
    inputs, input_length = add_markers(hyp, hyp_length, bos=True, eos=False)
    with torch.no_grad():
        logits = model.model(
            test_batch.source[:32],
            inputs,
            src_padding_mask=padding_mask(test_batch.source_length[:32], test_batch.source.shape[1]),
            tgt_padding_mask=padding_mask(input_length, inputs.shape[1]),
        )
    logits[..., :4] = float("-inf")  # the decoder never emits pad / bos / mask / blank
    for row in range(32):
        n = len(greedy.tokens[row])
        assert logits[row, :n].argmax(-1).tolist() == greedy.tokens[row]
    # speculative decoding with a (weaker) draft returns exactly the greedy output, in fewer target passes
    # when the draft is good; with the model as its own draft every proposal is accepted
    draft = ARTranslator(tiny_config("ar")).eval()
    speculative = model.translate(test_batch.source[:32], test_batch.source_length[:32], draft=draft, gamma=3)
    assert speculative.tokens == greedy.tokens
    self_draft = model.translate(test_batch.source[:32], test_batch.source_length[:32], draft=model, gamma=3)
    assert self_draft.tokens == greedy.tokens and self_draft.decoder_passes < greedy.decoder_passes
    beam = model.translate(test_batch.source, test_batch.source_length, beam_size=4)
    assert (
        TASK.accuracy(test_batch, beam.tokens)
        >= TASK.accuracy(test_batch, model.translate(test_batch.source, test_batch.source_length).tokens)
        - 0.02
    )


def test_bad_inputs_give_clear_errors():
    model = DATransformer(tiny_config("dat", upsample_ratio=1.0))
    source = torch.tensor([[5, 6, 7]])
    with pytest.raises(TextInputError, match="empty source"):
        model.translate(source, torch.tensor([0]))
    with pytest.raises(TextInputError, match="exceeds the model's maximum"):
        model.translate(torch.full((1, 9), 5), torch.tensor([9]))
    with pytest.raises(TextInputError, match="ids must lie"):
        model.translate(torch.tensor([[5, 99]]), torch.tensor([2]))
    # a target longer than the graph (1.0 x (2 + 2) vertices for a 6-token target + bos / eos)
    batch = Seq2SeqBatch(torch.tensor([[5, 6]]), torch.tensor([2]), torch.full((1, 6), 7), torch.tensor([6]))
    with pytest.raises(GraphTooSmallError, match="graph too small"):
        model.loss(batch)
    with pytest.raises(TextInputError, match="unknown family"):
        Seq2SeqConfig(family="gpt")
    config = tiny_config("ctc")
    assert Seq2SeqConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TextInputError, match=r"unknown Seq2SeqConfig field\(s\) \['layers'\]"):
        Seq2SeqConfig.from_dict({**config.to_dict(), "layers": 2})
    with pytest.raises(TextInputError, match="dag_vertex_inputs"):
        tiny_config("dat", dag_vertex_inputs="random")


def test_host_batch_checks_match_the_tensor_checks():
    # a small host batch is checked in Python, a large one (or a GPU one) by tensor reductions: same verdicts
    from genloom.text.seq2seq import HOST_CHECK_MAX, check_source

    config = tiny_config("dat")
    width = min(5, config.max_source_length)
    for rows in (2, HOST_CHECK_MAX // width + 1):
        source, length = torch.full((rows, width), 6), torch.full((rows,), width)
        check_source(source, length, config)
        too_big = source.clone()
        too_big[-1, 1] = config.vocab_size
        with pytest.raises(TextInputError, match=rf"got 6\.\.{config.vocab_size}$"):
            check_source(too_big, length, config)
        negative = source.clone()
        negative[0, 0] = -3
        with pytest.raises(TextInputError, match=r"got -3\.\.6$"):
            check_source(negative, length, config)
        empty = length.clone()
        empty[1] = 0
        with pytest.raises(TextInputError, match=r"empty source sentence in rows \[1\]"):
            check_source(source, empty, config)


def test_dat_with_official_mask_vertex_inputs_trains():
    torch.manual_seed(0)
    model = DATransformer(tiny_config("dat", dag_vertex_inputs="mask"))
    losses = train(
        model, lambda g: TASK.sample(16, generator=g), text_train_config(steps=30, lr=5e-3, warmup_steps=5)
    )
    assert losses[-1] < 0.6 * losses[0]
    out = model.translate(torch.tensor([[7, 5, 6]]), torch.tensor([3]), strategy="viterbi")
    assert out.decoder_passes == 1 and len(out.tokens) == 1


@pytest.mark.slow
def test_mdlm_elbo_perplexity_is_within_10_percent_of_the_true_one_and_never_below(train_on_markov):
    torch.manual_seed(0)
    length = 12
    model = MaskedDiffusionLM(
        MDLMConfig(vocab_size=7, mask_id=6, dim=64, n_layers=2, n_heads=4, max_seq_len=length)
    )
    run = train_on_markov(model)
    source, true, trained = run.source, run.true_perplexity, run.trained_perplexity
    assert run.untrained_perplexity > 1.5 * true
    assert true <= trained <= 1.10 * true, (true, trained)
    sample = model.sample(1, length, steps=64, generator=torch.Generator().manual_seed(0))
    assert sample.tokens.max() < 6 and sample.num_model_calls <= length  # steps revealing nothing are skipped
    # samples follow the chain: under the true source they score far closer to its entropy than random strings
    many = model.sample(256, length, steps=64, generator=torch.Generator().manual_seed(1)).tokens
    sample_nll = -source.log_likelihood(many).mean().item() / length
    random_nll = -source.log_likelihood(torch.randint(0, 6, (256, length))).mean().item() / length
    entropy = source.expected_nll_per_token(length)
    assert sample_nll < entropy + 0.3 * (random_nll - entropy), (sample_nll, entropy, random_nll)


@pytest.mark.slow
def test_vanilla_nat_mixes_the_two_dialects():
    """The multi-modality failure the task exists to show: per-position argmax mixes dialect A and B."""
    task = Seq2SeqTask(name="two_dialect", num_symbols=18, min_length=3, max_length=6)
    torch.manual_seed(0)
    model = VanillaNAT(tiny_config("nat", task))
    train(
        model, lambda g: task.sample(32, generator=g), text_train_config(steps=200, lr=5e-3, warmup_steps=20)
    )
    batch = task.sample(200, generator=torch.Generator().manual_seed(5))
    out = model.translate(batch.source, batch.source_length).tokens
    third = task.num_symbols // 3
    # every emitted token is a correct translation of its source symbol in one dialect or the other ...
    per_token = [
        o in (s + third, s + 2 * third)
        for row, tokens in enumerate(out)
        for s, o in zip(batch.source[row, : batch.source_length[row]].tolist(), tokens)
    ]
    assert sum(per_token) / len(per_token) > 0.9
    # ... yet many sentences mix the dialects, so they match neither valid target
    assert task.dialect_mixing(batch, out) > 0.3 and task.accuracy(batch, out) < 0.6


def test_lm_configs_refuse_unknown_fields() -> None:
    from genloom.text.errors import TextInputError
    from genloom.text.lm import CausalLMConfig
    from genloom.text.mdlm import MDLMConfig

    for config_cls in (CausalLMConfig, MDLMConfig):
        with pytest.raises(TextInputError, match=r"unknown .* field\(s\) \['bogus'\]"):
            config_cls.from_dict({"bogus": 1})


def test_placed_source_checks_then_moves_only_when_needed() -> None:
    from genloom.text.pretrained import load_text_model
    from genloom.text.seq2seq import placed_source

    model, _, _ = load_text_model("text-sort-dat")
    source, length = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    placed, placed_length = placed_source(model, source, length)
    assert placed is source and placed_length is length  # already on the model's device: untouched
    with pytest.raises(TextInputError, match="maximum"):
        placed_source(model, torch.full((1, 500), 5), torch.tensor([500]))
