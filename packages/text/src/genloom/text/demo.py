"""Demo of genloom-text: real outputs of the shipped presets, written as `.txt` files.

Each sort-task translator preset sorts the same fixed letter sequences (one file per family, with the
exact-match rate and decoder passes in the caption); the Multi30k presets translate the same German
sentences into English (their test BLEU from the preset card in the caption); the MDLM presets sample
Markov-chain text (scored under the true chain) and docstring text (scored by the AR preset).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from genloom.core.demo import DemoItem
from genloom.text.markov import MarkovChainSource
from genloom.text.pretrained import load_text_model
from genloom.text.specials import NUM_SPECIAL
from genloom.text.tasks import Seq2SeqTask
from genloom.text.zoo import PRESETS

TRANSLATOR_PRESETS = [p.name for p in PRESETS if p.family == "text.translator"]
# what `translate` does without options, per family (the demo's decoding)
DEFAULT_DECODING = {
    "ar": "greedy",
    "dat": "lookahead",
    "cmlm": "Mask-Predict",
    "ctc": "argmax",
    "nat": "argmax",
}
# German captions in the style of Multi30k (written for this demo, not taken from the data set)
GERMAN_SENTENCES = [
    "Zwei Hunde spielen im Schnee.",
    "Ein Mann mit einem orangefarbenen Hut starrt auf etwas.",
    "Eine Frau fährt mit dem Fahrrad durch die Stadt.",
    "Kinder spielen auf einer grünen Wiese Fußball.",
    "Ein kleines Mädchen isst ein Eis.",
    "Eine Gruppe von Menschen wartet an einer Bushaltestelle.",
    "Ein Hund rennt am Strand entlang.",
    "Zwei Männer arbeiten auf einer Baustelle.",
]


def _write_text(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _translator_item(name: str, out_dir: Path, device: str) -> DemoItem:
    from genloom.text.cli import translate_lines

    model, tokenizer, _ = load_text_model(name, device=device)
    task = Seq2SeqTask(name="sort", num_symbols=9, min_length=2, max_length=8)
    batch = task.sample(16, generator=torch.Generator().manual_seed(7))
    sources = [tokenizer.decode(r[:n]) for r, n in zip(batch.source.tolist(), batch.source_length.tolist())]
    outputs, passes = translate_lines(model, tokenizer, sources, device=device)
    correct = sum(task.is_correct(tokenizer.encode(s), tokenizer.encode(o)) for s, o in zip(sources, outputs))
    lines = [f"# {name}: sort task, family {model.config.family}, {passes} decoder passes", ""]
    lines += [f"{s:<18} -> {o}{'' if task.is_correct(tokenizer.encode(s), tokenizer.encode(o)) else '   (wrong)'}"
              for s, o in zip(sources, outputs)]  # fmt: skip
    path = out_dir / f"{name}.txt"
    _write_text(path, "\n".join(lines) + "\n")
    caption = (
        f"task: sort; family: {model.config.family}; decoder passes: {passes}; "
        f"exact match {correct}/{len(sources)}"
    )
    return DemoItem(title=f"{name} (sort)", path=path, kind="text", caption=caption)


# decodings with a preset's bigram LM (weights chosen on Multi30k's validation set; test BLEU, CPU)
LM_DECODING = {
    "dat": ("joint Viterbi (LM weight 0.5; test BLEU 33.95 against 31.50)",
            {"strategy": "joint-viterbi", "lm_weight": 0.5, "collapse_repeats": True}),
    "ctc": ("prefix beam search of 8 (LM weight 0.5, 3.0 per label; test BLEU 34.29 against 29.96)",
            {"beam_size": 8, "lm_weight": 0.5, "length_bonus": 3.0}),
}  # fmt: skip


def _multi30k_item(name: str, out_dir: Path, device: str) -> DemoItem:
    """German -> English with a Multi30k preset; its card's test BLEU goes into the caption."""
    import json

    from genloom.text.cli import load_bigram, translate_lines
    from genloom.text.dag_beam import BIGRAM_FILE

    model, tokenizer, folder = load_text_model(name, device=device)
    outputs, passes = translate_lines(model, tokenizer, GERMAN_SENTENCES, device=device)
    scores = json.loads((folder / "preset.json").read_text())["card"]["metric"]["test_2016_flickr"]
    bleu = "; ".join(f"{decoding} {row['bleu']:.2f}" for decoding, row in scores.items())
    lines = [f"# {name}: German -> English, family {model.config.family}, {passes} decoder passes", ""]
    lines += [f"{de}\n  -> {en}" for de, en in zip(GERMAN_SENTENCES, outputs, strict=True)]
    with_lm = LM_DECODING.get(model.config.family)
    if with_lm is not None and (folder / BIGRAM_FILE).is_file():  # the preset's shipped bigram LM
        label, options = with_lm
        bigram = load_bigram(folder, model.config.vocab_size)
        best, _ = translate_lines(model, tokenizer, GERMAN_SENTENCES, device=device, bigram=bigram, **options)
        lines += ["", f"# {label} with the shipped bigram LM", ""]
        lines += [f"{de}\n  -> {en}" for de, en in zip(GERMAN_SENTENCES, best, strict=True)]
    path = out_dir / f"{name}.txt"
    _write_text(path, "\n".join(lines) + "\n")
    caption = (
        f"task: Multi30k De->En; family: {model.config.family}; decoder passes: {passes}; "
        f"test BLEU (1,000 sentences): {bleu}; this demo decodes with the default "
        f"({DEFAULT_DECODING.get(model.config.family, 'default')})"
    )
    return DemoItem(title=f"{name} (German -> English)", path=path, kind="text", caption=caption)


def _mdlm_item(out_dir: Path, device: str) -> DemoItem:
    model, tokenizer, _ = load_text_model("text-markov-mdlm", device=device)
    source = MarkovChainSource(num_states=6, seed=0)
    out = model.sample(
        16, model.config.max_seq_len, steps=64, generator=torch.Generator().manual_seed(0), device=device
    )
    states = (out.tokens.cpu() - NUM_SPECIAL).clamp(min=0)
    nll = -source.log_likelihood(states).double() / states.shape[1]
    lines = [
        f"# text-markov-mdlm: 16 samples, 64 diffusion steps, {out.num_model_calls} denoiser passes",
        f"# true NLL of the samples {nll.mean():.3f} nats/token; entropy of the chain "
        f"{source.expected_nll_per_token(states.shape[1]):.3f}",
        "",
    ] + [tokenizer.decode(row) for row in out.tokens.tolist()]
    path = out_dir / "text-markov-mdlm.txt"
    _write_text(path, "\n".join(lines) + "\n")
    caption = f"task: Markov-chain text; family: mdlm; decoder passes: {out.num_model_calls} (64 steps)"
    return DemoItem(title="text-markov-mdlm (samples)", path=path, kind="text", caption=caption)


def _stdlib_item(out_dir: Path, device: str) -> DemoItem:
    """MDLM samples of docstring text (float64 sampling), scored by the AR preset."""
    from genloom.text.lm import unigram_entropy

    mdlm, tokenizer, _ = load_text_model("text-stdlib-mdlm", device=device)
    ar, _, _ = load_text_model("text-stdlib-ar", device=device)
    out = mdlm.sample(8, mdlm.config.max_seq_len, steps=128, generator=torch.Generator().manual_seed(0), device=device,
                      float64=True)  # fmt: skip
    gen_ppl = ar.perplexity(out.tokens)
    lines = [
        f"# text-stdlib-mdlm: 8 samples of 64 BPE tokens, 128 steps, {out.num_model_calls} denoiser passes",
        f"# generative perplexity under text-stdlib-ar {gen_ppl:.1f}; unigram entropy {unigram_entropy(out.tokens):.2f}",
        "",
    ]
    for row in out.tokens.tolist():
        lines += [tokenizer.decode(row).replace("\n", " "), "-" * 40]
    path = out_dir / "text-stdlib-mdlm.txt"
    _write_text(path, "\n".join(lines) + "\n")
    caption = f"task: stdlib docstrings; family: mdlm; decoder passes: {out.num_model_calls} (128 steps)"
    return DemoItem(title="text-stdlib-mdlm (samples)", path=path, kind="text", caption=caption)


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Write this package's demo outputs under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        items = [
            _multi30k_item(name, out_dir, device)
            if name.startswith("multi30k-")
            else _translator_item(name, out_dir, device)
            for name in TRANSLATOR_PRESETS
        ]
        items.append(_mdlm_item(out_dir, device))
        items.append(_stdlib_item(out_dir, device))
    return items
