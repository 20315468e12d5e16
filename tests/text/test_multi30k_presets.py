"""The shipped Multi30k presets (AR baseline; distilled DA-Transformer, CTC, CMLM and vanilla NAT) load offline by name, translate, and keep
the BLEU they were trained to on the first 200 test sentences (CPU; the data set from ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genloom.text.cli import translate_lines
from genloom.text.pretrained import load_text_model

SHARED_MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"
DECODING = {"multi30k-cmlm": {"iterations": 10, "length_beam": 3}}  # the benchmark's CMLM row
SENTENCES = ["Zwei Hunde spielen im Schnee.", "Ein Mann mit einem orangefarbenen Hut starrt auf etwas."]


@pytest.mark.parametrize(
    "name,expected,passes",
    [
        (
            "multi30k-ar",
            ["Two dogs are playing in the snow.", "A man in an orange hat staring at something."],
            12,
        ),
        ("multi30k-dat", ["Two dogs play in the snow.", "A man in an orange hat staring at something."], 1),
        (
            "multi30k-ctc",
            ["Two dogs play in the snow.", "A man in an orange hat is staring at something."],
            1,
        ),
        (
            "multi30k-cmlm",
            ["Two dogs are playing in the snow.", "A man in an orange hat is staring at something."],
            10,
        ),
        (
            "multi30k-nat",
            ["Two dogs are playing in the snow.", "A man in an orange hat st staring at something."],
            1,
        ),
    ],
)
def test_shipped_multi30k_preset_translates_offline(name: str, expected: list[str], passes: int) -> None:
    model, tokenizer, _ = load_text_model(name)
    outputs, decoder_passes = translate_lines(model, tokenizer, SENTENCES, **DECODING.get(name, {}))
    assert outputs == expected
    assert decoder_passes <= passes


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs ../shared/data/multi30k")
@pytest.mark.parametrize(
    "name,least_bleu",
    [
        ("multi30k-ar", 30.0),
        ("multi30k-dat", 28.0),
        ("multi30k-ctc", 26.0),
        ("multi30k-cmlm", 25.0),
        ("multi30k-nat", 16.0),
    ],
)
def test_shipped_multi30k_preset_keeps_its_test_bleu(name: str, least_bleu: float) -> None:
    from genloom.text.multi30k import corpus_bleu, load_multi30k

    pairs = load_multi30k("test", data_dir=SHARED_MULTI30K)[:200]
    model, tokenizer, _ = load_text_model(name)
    outputs, _ = translate_lines(model, tokenizer, [de for de, _ in pairs], **DECODING.get(name, {}))
    bleu = corpus_bleu(outputs, [en for _, en in pairs])
    # test_2016_flickr, all 1,000 sentences on the GPU: AR 33.45, DAT 31.5, CTC 29.96,
    # CMLM 27.08, NAT 18.66 (these 200 on the CPU: 34.0 / 29.9 / 28.4 / 27.6 / 18.0)
    assert bleu >= least_bleu, bleu


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs ../shared/data/multi30k")
@pytest.mark.parametrize("name", ["multi30k-nat", "multi30k-cmlm"])
def test_shipped_length_predicting_preset_graphed_equals_eager(name: str) -> None:
    # the graphed path's decoder width is max_target_length (64) instead of the longest predicted length, on
    # real-size models too: the same translations as the eager path (CPU: the graphed function called directly)
    from genloom.text.multi30k import load_multi30k

    sources = [de for de, _ in load_multi30k("test", data_dir=SHARED_MULTI30K)[:64]]
    model, tokenizer, _ = load_text_model(name)
    options = DECODING.get(name, {})
    eager, _ = translate_lines(model, tokenizer, sources, batch_size=16, **options)
    graphed, _ = translate_lines(model, tokenizer, sources, batch_size=16, graphed=True, **options)
    assert graphed == eager


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs ../shared/data/multi30k")
def test_shipped_dat_scores_higher_with_its_bigram_lm() -> None:
    # multi30k-dat ships the bigram counts of Multi30k's English training side (bigram.safetensors, 0.85 MB):
    # scoring jumps with them (weights chosen on the validation set) adds BLEU on test sentences it never saw
    from genloom.text.cli import load_bigram
    from genloom.text.multi30k import corpus_bleu, load_multi30k

    pairs = load_multi30k("test", data_dir=SHARED_MULTI30K)[:200]
    model, tokenizer, folder = load_text_model("multi30k-dat")
    lm = {"bigram": load_bigram(folder, model.config.vocab_size), "lm_weight": 0.6, "collapse_repeats": True}
    sources, references = [de for de, _ in pairs], [en for _, en in pairs]

    def bleu(**options) -> float:
        return corpus_bleu(translate_lines(model, tokenizer, sources, **options)[0], references)

    plain = bleu()
    # these 200 on the CPU: 29.9 lookahead, 31.6 lookahead + LM, 32.3 beam 4 + LM (all 1,000: 31.5 / 32.3 / 33.1)
    lookahead_lm = bleu(strategy="lookahead", **lm)
    beam_lm = bleu(strategy="beam", beam_size=4, length_alpha=1.0, **lm)
    assert lookahead_lm >= plain + 1.0 and beam_lm >= lookahead_lm + 0.5, (plain, lookahead_lm, beam_lm)
    # joint Viterbi with the LM (weight 0.5): the exact best path of the same scores, length-normalised
    viterbi = {**lm, "strategy": "joint-viterbi", "lm_weight": 0.5}
    viterbi_lm = bleu(**viterbi)  # these 200: 33.44 (all 1,000: 33.95, above the AR greedy 33.48)
    assert viterbi_lm >= lookahead_lm + 0.5, (lookahead_lm, viterbi_lm)
    # the graphed searches (pass and search in one graph on a GPU: every step run, fixed width) find the same
    for options in ({"strategy": "beam", "beam_size": 4, "length_alpha": 1.0, **lm}, viterbi):
        eager = translate_lines(model, tokenizer, sources[:40], **options)[0]
        assert translate_lines(model, tokenizer, sources[:40], graphed=True, **options)[0] == eager
        assert translate_lines(model, tokenizer, sources[:40], graphed="eager", **options)[0] == eager


@pytest.mark.skipif(not SHARED_MULTI30K.is_dir(), reason="needs ../shared/data/multi30k")
def test_shipped_ctc_scores_higher_with_beam_search_and_its_bigram_lm() -> None:
    # multi30k-ctc ships the same bigram counts; prefix beam search with shallow fusion (weight 0.5, 3.0 per
    # label, chosen on the validation set) on the first 100 test sentences (all 1,000: 29.96 -> 34.29)
    from genloom.text.cli import load_bigram
    from genloom.text.multi30k import corpus_bleu, load_multi30k

    pairs = load_multi30k("test", data_dir=SHARED_MULTI30K)[:100]
    model, tokenizer, folder = load_text_model("multi30k-ctc")
    sources, references = [de for de, _ in pairs], [en for _, en in pairs]
    greedy = corpus_bleu(translate_lines(model, tokenizer, sources)[0], references)
    lm = {"bigram": load_bigram(folder, model.config.vocab_size), "lm_weight": 0.5, "length_bonus": 3.0}
    fused = corpus_bleu(translate_lines(model, tokenizer, sources, beam_size=8, **lm)[0], references)
    assert fused >= greedy + 2.0, (greedy, fused)
