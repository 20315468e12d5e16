"""`genloom bench` targets for the text presets: translation (AR, NAT, CMLM, CTC, DA-Transformer), masked
diffusion sampling (MDLM) and decoder-only sampling, at a batch size, with the FLOP floor of their passes.

Translation inputs are random source sentences of the preset's own symbols (half its maximum source length),
so the timing covers the decoding algorithm and not a data set. Floors count the decoder passes' matrix
FLOPs; for AR decoding that underestimates the true (bandwidth-bound) floor at small batch.
"""

from __future__ import annotations

import torch

from genloom.core.bench import BenchTarget, Work, linear_weight_count
from genloom.core.zoo import list_presets
from genloom.text.ar import ARTranslator
from genloom.text.mdlm import MaskedDiffusionLM
from genloom.text.nat import NonAutoregressiveTranslator
from genloom.text.pretrained import load_text_model


def _text_preset_names() -> set[str]:
    return {p.name for p in list_presets("text")}


def bench_target(
    name: str, *, device: torch.device, dtype: torch.dtype, fast: bool, random_weights: bool = False
) -> BenchTarget | None:
    """The generation of the text preset `name`, or None if it is not one. `fast` (on CUDA) runs the AR
    translator through the compiled decoder (early exit per chunk) and replays the NAR translators' passes
    (`graphed=True`) and the diffusion LMs' denoiser passes from CUDA graphs."""
    if random_weights:  # only the image package builds official architectures with random weights
        return None
    if name not in _text_preset_names():
        return None
    model, tokenizer, _ = load_text_model(name, device=device)
    model.to(dtype)
    specials = set(getattr(tokenizer, "special_ids", ()))
    symbols = torch.tensor([i for i in range(tokenizer.vocab_size) if i not in specials])
    weights = linear_weight_count(model)
    passes = {"count": 1}

    if hasattr(model, "translate"):
        length = max(1, model.config.max_source_length // 2)

        def run(batch: int) -> object:
            pick = torch.randint(0, len(symbols), (batch, length), generator=torch.Generator().manual_seed(0))
            source = symbols[pick].to(device)
            extra = {}
            if fast and device.type == "cuda":  # the compiled AR loop; the NAR passes from CUDA graphs
                if isinstance(model, ARTranslator):
                    extra = {"compiled": True}
                elif isinstance(model, NonAutoregressiveTranslator):
                    extra = {"graphed": True}
            result = model.translate(source, torch.full((batch,), length, device=device), **extra)
            passes["count"] = result.decoder_passes
            return result

        sample_unit, unit, per_sample = "sentence", "source token", float(length)
    elif hasattr(model, "elbo_nll"):
        length = model.config.max_seq_len

        def run(batch: int) -> object:
            generator = torch.Generator(device).manual_seed(0)
            graphed = fast and device.type == "cuda" and isinstance(model, MaskedDiffusionLM)
            extra = {"graphed": True} if graphed else {}
            out = model.sample(batch, length, steps=64, generator=generator, device=device, **extra)
            passes["count"] = out.num_model_calls
            return out

        sample_unit, unit, per_sample = "sample", "token", float(length)
    elif hasattr(model, "sample"):
        length = model.config.max_seq_len - 1

        def run(batch: int) -> object:
            prompt = symbols[:1].repeat(batch, 1).to(device)
            tokens, calls = model.sample(prompt, length, generator=torch.Generator(device).manual_seed(0))
            passes["count"] = calls
            return tokens

        sample_unit, unit, per_sample = "sample", "token", float(length)
    else:
        return None

    def work(batch: int) -> Work:  # a lower bound: the last call's passes, counted at one token per row
        return Work(flops=2.0 * weights * batch * max(passes["count"], 1))

    return BenchTarget(
        name=f"{name} ({type(model).__name__})",
        run=run,
        work=work,
        sample_unit=sample_unit,
        unit=unit,
        units_per_sample=per_sample,
    )
