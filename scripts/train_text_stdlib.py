"""Train the tiny AR and MDLM presets on the standard library's docstrings (CPU) and evaluate them.

    .venv/bin/python scripts/train_text_stdlib.py [--steps 1500] [--out packages/text/src/genloom/text/presets]

Reports the AR perplexity and the MDLM ELBO perplexity on held-out docstrings, the generative perplexity
of MDLM samples (float64 sampling) under the AR model, and the unigram entropy of samples vs real text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from genloom.core.tokenizers import BPETokenizer
from genloom.core.zoo.sources import write_preset_json
from genloom.text.lm import CausalLM, CausalLMConfig, unigram_entropy
from genloom.text.mdlm import MaskedDiffusionLM, MDLMConfig
from genloom.text.pretrained import save_text_model
from genloom.text.specials import MASK_ID
from genloom.text.stdlib_corpus import split_corpus, stdlib_docstrings
from genloom.text.training import text_train_config, train
from genloom.text.zoo import PRESETS

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "packages/text/src/genloom/text/presets"


def token_stream(tokenizer: BPETokenizer, texts: list[str]) -> torch.Tensor:
    ids = [i for row in tokenizer.encode_batch(texts, add_eos=True) for i in row]
    return torch.tensor(ids).masked_fill(torch.tensor(ids) == MASK_ID, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    train_texts, val_texts = split_corpus(stdlib_docstrings())
    tokenizer = BPETokenizer.train(train_texts, vocab_size=args.vocab_size)
    stream, val_stream = token_stream(tokenizer, train_texts), token_stream(tokenizer, val_texts)
    length = args.length
    val = val_stream[: len(val_stream) // length * length].view(-1, length)

    def windows(generator: torch.Generator, n: int = 32) -> torch.Tensor:
        starts = torch.randint(0, len(stream) - length, (n,), generator=generator)
        return stream[starts.unsqueeze(1) + torch.arange(length)]

    results: dict = {"train_tokens": len(stream), "val_windows": len(val)}
    sizes = dict(dim=args.dim, n_layers=args.layers, n_heads=4, max_seq_len=length)
    torch.manual_seed(0)
    ar = CausalLM(CausalLMConfig(vocab_size=tokenizer.vocab_size, **sizes))
    start = time.time()
    train(ar, windows, text_train_config(steps=args.steps, lr=2e-3, warmup_steps=100))
    ar.half().float()
    results["ar_perplexity"] = round(ar.perplexity(val), 2)
    results["ar_train_seconds"] = round(time.time() - start)
    print(results, flush=True)

    torch.manual_seed(0)
    mdlm = MaskedDiffusionLM(MDLMConfig(vocab_size=tokenizer.vocab_size, mask_id=MASK_ID, **sizes))
    start = time.time()
    train(mdlm, windows, text_train_config(steps=args.steps, lr=2e-3, warmup_steps=100))
    mdlm.half().float()
    results["mdlm_elbo_perplexity"] = round(
        mdlm.elbo_perplexity(val, num_times=16, generator=torch.Generator().manual_seed(0)), 2
    )
    results["mdlm_train_seconds"] = round(time.time() - start)
    samples = mdlm.sample(64, length, steps=128, generator=torch.Generator().manual_seed(0), float64=True)
    results["mdlm_samples_gen_perplexity_under_ar"] = round(ar.perplexity(samples.tokens), 2)
    results["mdlm_samples_unigram_entropy"] = round(unigram_entropy(samples.tokens), 3)
    results["mdlm_denoiser_passes_for_128_steps"] = samples.num_model_calls
    results["real_text_unigram_entropy"] = round(unigram_entropy(val[:64]), 3)
    ar_samples, _ = ar.sample(val[:64, :1], length - 1, generator=torch.Generator().manual_seed(0))
    results["ar_samples_unigram_entropy"] = round(unigram_entropy(ar_samples), 3)
    print(json.dumps(results, indent=2), flush=True)
    print(tokenizer.decode(samples.tokens[0]), flush=True)

    for name, model in (("text-stdlib-ar", ar), ("text-stdlib-mdlm", mdlm)):
        preset = next(p for p in PRESETS if p.name == name)
        save_text_model(model, tokenizer, args.out / name)
        card = {**preset.card, "metric": results, "train_steps": args.steps}
        write_preset_json(args.out / name, dataclasses.replace(preset, card=card))


if __name__ == "__main__":
    main()
