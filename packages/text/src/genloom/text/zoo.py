"""Presets of genloom-text, registered through the `genloom.zoo` entry point.

Importing this module also registers the model families "text.translator" (every seq2seq family,
dispatched on its config's `family`) and "text.mdlm" with the core zoo, so `from_pretrained` can build
them from a folder. The shipped presets are tiny models trained on CPU by
`scripts/train_text_presets.py` on the package's synthetic tasks; their cards hold the measured metric.
"""

from functools import partial

from genloom.core.zoo import Preset, WeightSource, register_family
from genloom.text.pretrained import build_text_model

register_family("text.translator", build_text_model)
register_family("text.mdlm", partial(build_text_model, mdlm=True))
register_family("text.lm", partial(build_text_model, lm=True))

DEFAULT_TRANSLATOR = "text-sort-dat"
DEFAULT_GENERATOR = "text-markov-mdlm"

_FAMILY_TITLES = {
    "ar": "autoregressive encoder-decoder baseline (static KV cache, beam search)",
    "nat": "vanilla NAT with length prediction",
    "cmlm": "CMLM decoded with Mask-Predict",
    "ctc": "CTC-NAT with upsampling and glancing training",
    "dat": "DA-Transformer (DAG of 2x source vertices, lookahead decoding)",
}


def _card(name: str, data: str) -> dict:
    return {"license": "Apache-2.0", "data": data, "trained_by": "scripts/train_text_presets.py"}


PRESETS: list[Preset] = (
    [
        Preset(
            name=f"text-sort-{family}",
            family="text.translator",
            modality="text",
            description=f"Tiny {title}, trained to sort letter sequences (input: 'c a b', output: 'a b c')",
            source=WeightSource(kind="package", package="genloom.text", path=f"presets/text-sort-{family}"),
            loader="genloom.text.pretrained:load_text_model",
            card=_card(f"text-sort-{family}", "genloom.text.tasks sort task, 9 symbols, lengths 2-8"),
        )
        for family, title in _FAMILY_TITLES.items()
    ]
    + [
        Preset(
            name="text-markov-mdlm",
            family="text.mdlm",
            modality="text",
            description="Tiny masked diffusion LM of a 6-state Markov chain (sequences of 12 letters)",
            source=WeightSource(kind="package", package="genloom.text", path="presets/text-markov-mdlm"),
            loader="genloom.text.pretrained:load_text_model",
            card=_card("text-markov-mdlm", "genloom.text.markov MarkovChainSource(num_states=6, seed=0)"),
        )
    ]
    + [
        Preset(
            name=f"text-stdlib-{kind}",
            family=f"text.{kind if kind == 'mdlm' else 'lm'}",
            modality="text",
            description=f"Tiny {title} of the Python standard library's docstrings (BPE 2048, 64-token windows)",
            source=WeightSource(kind="package", package="genloom.text", path=f"presets/text-stdlib-{kind}"),
            loader="genloom.text.pretrained:load_text_model",
            card={
                **_card(f"text-stdlib-{kind}", "genloom.text.stdlib_corpus (train split)"),
                "trained_by": "scripts/train_text_stdlib.py",
            },
        )
        for kind, title in (("ar", "decoder-only AR LM"), ("mdlm", "masked diffusion LM"))
    ]
)
