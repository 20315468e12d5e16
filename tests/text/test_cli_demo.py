"""Shipped presets, save / load, the `genloom text` CLI (typer runner) and the demo."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from genloom.text.cli import app
from genloom.text.corpus import ParallelCorpus, encode_lines, read_tsv_pairs
from genloom.text.demo import TRANSLATOR_PRESETS, run_demo
from genloom.text.errors import TextInputError
from genloom.text.markov import MarkovChainSource
from genloom.text.pretrained import SymbolTokenizer, load_text_model, save_text_model
from genloom.text.specials import NUM_SPECIAL
from genloom.text.stdlib_corpus import split_corpus, stdlib_docstrings, token_windows
from genloom.text.tasks import Seq2SeqTask
from genloom.text.zoo import PRESETS

runner = CliRunner()
SORT = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)


# the Multi30k translators have their own checks (tests/text/test_multi30k_presets.py: translations, BLEU)
@pytest.mark.parametrize(
    "preset", [p.name for p in PRESETS if p.source.kind == "package" and not p.name.startswith("multi30k-")]
)
def test_shipped_presets_load_and_meet_their_metric(preset):
    model, tokenizer, folder = load_text_model(preset)
    weights = folder / "model" / "model.safetensors"
    assert weights.stat().st_size < 5 * 2**20 and (folder / "preset.json").is_file()
    if preset.startswith("text-stdlib"):
        # the held-out docstring windows give back the perplexity recorded in the card (10%: Python versions
        # change some docstrings), well below the vocabulary size a uniform model would score
        card = json.loads((folder / "preset.json").read_text())["card"]["metric"]
        _, val_texts = split_corpus(stdlib_docstrings())
        val = token_windows(tokenizer, val_texts, model.config.max_seq_len)
        if preset.endswith("ar"):
            measured, recorded, bound = (
                model.perplexity(val),
                card["ar_perplexity"],
                tokenizer.vocab_size / 10,
            )
        else:  # the tiny MDLM is under-trained (see docs/text.md), but far from uniform
            measured = model.elbo_perplexity(val, num_times=16, generator=torch.Generator().manual_seed(0))
            recorded, bound = card["mdlm_elbo_perplexity"], tokenizer.vocab_size / 3
        assert measured == pytest.approx(recorded, rel=0.1)
        assert measured < bound
        return
    if preset.endswith(("mdlm", "sedd")):
        source = MarkovChainSource(num_states=6, seed=0)
        held_out = source.sample(1024, 12, generator=torch.Generator().manual_seed(5))
        true = math.exp(-source.log_likelihood(held_out).mean().item() / 12)
        # enough sequences x times that Monte-Carlo noise (~1% here) stays below the ELBO gap
        elbo = model.elbo_perplexity(
            held_out + NUM_SPECIAL, num_times=32, generator=torch.Generator().manual_seed(0)
        )
        assert true <= elbo <= 1.1 * true
        return
    batch = SORT.sample(100, generator=torch.Generator().manual_seed(11))
    options = (
        {"steps": 20, "generator": torch.Generator().manual_seed(0)} if preset.endswith("diffuseq") else {}
    )
    out = model.translate(batch.source, batch.source_length, **options)
    assert SORT.accuracy(batch, out.tokens) >= 0.95
    assert tokenizer.decode(out.tokens[0]).split() == sorted(tokenizer.decode(batch.source[0]).split())


def test_save_load_round_trip(tmp_path):
    model, tokenizer, _ = load_text_model("text-sort-dat")
    save_text_model(model, tokenizer, tmp_path / "copy")
    again, tokenizer2, _ = load_text_model(tmp_path / "copy")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # the shipped weights are already fp16-exact
    assert tokenizer2.symbols == tokenizer.symbols
    with pytest.raises(TextInputError, match="unknown symbol"):
        tokenizer.encode("a b zz")


@pytest.mark.parametrize(
    "preset",
    [
        "text-sort-dat",
        "text-sort-ctc",
        "text-sort-ar",
        "text-sort-nat",
        "text-sort-cmlm",
        "text-sort-diffuseq",
    ],
)
def test_translators_loaded_in_bfloat16_still_sort(preset: str) -> None:
    # bf16 weights and network (the GPU fast path's precision), decoding in float32: the trained task survives
    model, _, _ = load_text_model(preset, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    batch = SORT.sample(100, generator=torch.Generator().manual_seed(12))
    options = {"strategy": "joint-viterbi"} if preset.endswith("dat") else {}
    if preset.endswith("diffuseq"):
        options = {"steps": 20, "generator": torch.Generator().manual_seed(0)}
    assert SORT.accuracy(batch, model.translate(batch.source, batch.source_length, **options).tokens) >= 0.95
    if preset.endswith("dat"):
        log_probs, links, _ = model._graphable_pass(batch.source, batch.source_length)
        assert log_probs.dtype == links.dtype == torch.float32
    with pytest.raises(TextInputError, match="dtype must be"):
        load_text_model(preset, dtype=torch.int8)


def test_translate_command_default_preset_and_bad_input():
    result = runner.invoke(app, ["translate"], input="c a b\ni h g a\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == ["a b c", "a g h i"]
    for model in ("text-sort-ar", "text-sort-cmlm"):
        result = runner.invoke(app, ["translate", "--model", model, "--beam", "2"], input="b a\n")
        assert result.exit_code == 0 and result.stdout.splitlines()[0] == "a b"
    empty = runner.invoke(app, ["translate"], input="")
    assert empty.exit_code == 2 and "empty input" in empty.output
    blank = runner.invoke(app, ["translate"], input="a b\n\n")
    assert blank.exit_code == 2 and "line 2 is empty" in blank.output
    long_line = " ".join("abcdefghi")
    too_long = runner.invoke(app, ["translate"], input=long_line + "\n")
    assert too_long.exit_code == 2 and "more than the model's maximum of 8" in too_long.output
    truncated = runner.invoke(app, ["translate", "--truncate"], input=long_line + "\n")
    assert truncated.exit_code == 0 and truncated.stdout.split() == list("abcdefgh")
    unknown = runner.invoke(app, ["translate"], input="a b z\n")
    assert unknown.exit_code == 2 and "unknown symbol" in unknown.output
    on_cpu = runner.invoke(app, ["translate", "--fast"], input="b a\n")
    assert on_cpu.exit_code == 2 and "needs --device cuda" in on_cpu.output
    half = runner.invoke(app, ["translate", "--dtype", "bfloat16"], input="c a b\n")
    assert half.exit_code == 0 and half.stdout.split() == ["a", "b", "c"]
    bad_dtype = runner.invoke(app, ["translate", "--dtype", "int8"], input="b a\n")
    assert bad_dtype.exit_code == 2 and "--dtype must be float32 or bfloat16" in bad_dtype.output


@pytest.mark.gpu
@pytest.mark.parametrize(
    "model", ["text-sort-ar", "text-sort-dat", "text-sort-ctc", "text-sort-cmlm", "text-sort-nat"]
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_translate_fast_on_cuda_prints_the_same_lines(model: str, dtype: str) -> None:
    lines = "c a b\ni h g a\nb a\n"
    cuda = ["translate", "--model", model, "--device", "cuda", "--dtype", dtype]
    plain = runner.invoke(app, cuda, input=lines)
    fast = runner.invoke(app, [*cuda, "--fast"], input=lines)
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.output
    assert fast.stdout == plain.stdout
    beam = runner.invoke(
        app, ["translate", "--model", "text-sort-ar", "--fast", "--device", "cuda", "--beam", "2"]
    )
    assert beam.exit_code == 2 and "drop --beam" in beam.output


def test_bigram_command_and_translate_with_its_lm(tmp_path):
    import shutil

    folder = tmp_path / "sort-dat"
    shutil.copytree(load_text_model("text-sort-dat")[2], folder)
    missing = runner.invoke(app, ["translate", "--model", str(folder), "--lm-weight", "0.5"], input="b a\n")
    assert missing.exit_code == 2 and "bigram.safetensors is missing" in missing.output
    not_dat = runner.invoke(
        app, ["translate", "--model", "text-sort-ar", "--lm-weight", "0.5"], input="b a\n"
    )
    assert not_dat.exit_code == 2 and "needs a DA-Transformer or CTC" in not_dat.output
    no_file = runner.invoke(app, ["bigram", "--model", str(folder), "--targets", str(tmp_path / "nope.txt")])
    assert no_file.exit_code == 2 and "is not a file" in no_file.output
    targets = tmp_path / "targets.txt"
    targets.write_text("a b c\na b d\nb c e\n")
    made = runner.invoke(app, ["bigram", "--model", str(folder), "--targets", str(targets)])
    assert made.exit_code == 0, made.output
    assert "distinct bigrams from 3 sentences" in made.stdout and (folder / "bigram.safetensors").is_file()
    for strategy in ("lookahead", "beam"):
        options = ["--strategy", strategy, "--beam", "3", "--lm-weight", "0.5"]
        result = runner.invoke(app, ["translate", "--model", str(folder), *options], input="c a b\ni h g a\n")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[:2] == [
            "a b c",
            "a g h i",
        ]  # a weak LM leaves sure outputs as they are


def test_generate_train_and_distill_commands(tmp_path):
    result = runner.invoke(app, ["generate", "--num", "3", "--steps", "32"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(
        len(line.split()) == 12 and set(line.split()) <= set("abcdef") for line in lines
    )
    out = tmp_path / "copy-ar"
    result = runner.invoke(
        app, ["train", "--family", "ar", "--data", "copy", "--out", str(out), "--steps", "20", "--dim", "32",
              "--layers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model, _, _ = load_text_model(out)
    assert model.config.family == "ar" and model.config.dim == 32
    bad = runner.invoke(app, ["train", "--family", "gpt", "--data", "copy", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown family" in bad.output
    tsv = tmp_path / "distilled.tsv"
    result = runner.invoke(
        app, ["distill", "--teacher", "text-sort-ar", "--data", "sort", "--out", str(tsv), "--num", "50"]
    )
    assert result.exit_code == 0, result.output
    pairs = read_tsv_pairs(tsv)
    assert len(pairs) == 50 and sum(sorted(s.split()) == t.split() for s, t in pairs) >= 48


def test_corpus_helpers(tmp_path):
    tokenizer = SymbolTokenizer.letters(4)
    with pytest.raises(TextInputError, match="line 2 is empty"):
        encode_lines(tokenizer, ["a b", " "], max_length=4)
    with pytest.warns(UserWarning, match="truncated"):
        assert encode_lines(tokenizer, ["a b c d a"], max_length=4, truncate=True) == [[5, 6, 7, 8]]
    corpus = ParallelCorpus.from_text(
        tokenizer, [("a b", "b a"), ("a b c d a", "d")], max_source=4, max_target=4
    )
    assert len(corpus) == 1
    batch = corpus.sample(3, generator=torch.Generator().manual_seed(0))
    assert batch.source.tolist() == [[5, 6]] * 3 and batch.target_length.tolist() == [2] * 3
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one field\n")
    with pytest.raises(TextInputError, match="expected 'source<TAB>target'"):
        read_tsv_pairs(bad)


def test_demo_writes_captioned_text_files(tmp_path):
    items = run_demo(tmp_path)
    assert len(items) == len(TRANSLATOR_PRESETS) + 2  # + Markov and docstring MDLM samples
    for item in items:
        assert item.kind == "text" and Path(item.path).is_file() and "decoder passes" in item.caption
        assert "family" in item.caption and "task" in item.caption
    dat = next(i for i in items if i.title.startswith("text-sort-dat"))
    assert "exact match 16/16" in dat.caption
    multi30k = next(i for i in items if i.title.startswith("multi30k-dat"))
    assert "Multi30k De->En" in multi30k.caption and "DA-Transformer, lookahead 31.50" in multi30k.caption
    assert "-> Two dogs play in the snow." in Path(multi30k.path).read_text()


def _train_small(family: str, data: str, out: Path, *options: str):
    """`genloom text train` of a one-layer, width-32 model; the runner's result (checked to have succeeded)."""
    args = ["train", "--family", family, "--data", data, "--out", str(out), "--dim", "32", "--layers", "1"]
    result = runner.invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    return result


def test_sedd_trains_and_samples_through_the_cli(tmp_path):
    out = tmp_path / "markov-sedd"
    result = _train_small("sedd", "markov", out, "--steps", "200", "--lr", "3e-3")
    model, _, _ = load_text_model(out)
    assert type(model).__name__ == "ScoreEntropyLM"
    # 200 CPU steps: below 6, the perplexity of a uniform guess over the chain's 6 states (true: 3.52)
    elbo = float(result.stdout.split("'elbo_perplexity': ")[1].split("}")[0])
    assert elbo < 5.6, elbo
    sampled = runner.invoke(app, ["generate", "--model", str(out), "--num", "3", "--steps", "12"])
    assert sampled.exit_code == 0, sampled.output
    rows = sampled.stdout.splitlines()
    assert len(rows) == 3 and all(len(r.split()) == 12 and set(r.split()) <= set("abcdef") for r in rows)


def test_mdlm_recipe_on_stdlib_docstrings(tmp_path):
    out = tmp_path / "stdlib-mdlm"
    _train_small("mdlm", "stdlib", out, "--steps", "3", "--vocab-size", "600")
    model, tokenizer, _ = load_text_model(out)
    assert model.config.max_seq_len == 64 and tokenizer.vocab_size == 600
    sampled = runner.invoke(
        app, ["generate", "--model", str(out), "--num", "2", "--length", "16", "--steps", "8"]
    )
    assert sampled.exit_code == 0 and len(sampled.stdout.splitlines()) >= 2
    prompted = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(out),
            "--num",
            "1",
            "--length",
            "8",
            "--steps",
            "8",
            "--prompt",
            "Return",
        ],
    )
    assert prompted.exit_code == 0 and prompted.stdout.startswith("Return")
