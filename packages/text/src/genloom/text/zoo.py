"""Presets of genloom-text, registered through the `genloom.zoo` entry point.

Importing this module also registers the model families "text.translator" (every seq2seq family,
dispatched on its config's `family`) and "text.mdlm" with the core zoo, so `from_pretrained` can build
them from a folder. The shipped presets are tiny models trained on CPU by `scripts/train_text_presets.py` /
`scripts/train_text_stdlib.py` (synthetic tasks, docstrings) and the Multi30k translators of
`benchmarks/text_multi30k.py` (GPU); their cards hold the measured metric.
"""

from functools import partial
from pathlib import Path

from genloom.core.zoo import Preset, WeightSource, register_family
from genloom.text.llada import LLADA_8B, LLaDA, LLaDAConfig
from genloom.text.mdlm_dit import MDLM_OWT, SEDD_SMALL, build_dit
from genloom.text.pretrained import build_text_model

register_family("text.translator", build_text_model)
register_family("text.mdlm", partial(build_text_model, mdlm=True))
register_family("text.lm", partial(build_text_model, lm=True))
register_family("text.sedd", partial(build_text_model, sedd=True))
register_family("text.diffuseq", partial(build_text_model, diffuseq=True))
register_family("text.mdlm_dit", build_dit)
register_family("text.sedd_dit", partial(build_dit, sedd=True))
register_family("text.llada", lambda arguments: LLaDA(LLaDAConfig(**arguments["model"])))

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


SORT_DATA = "genloom.text.tasks sort task, 9 symbols, lengths 2-8"
MARKOV_DATA = "genloom.text.markov MarkovChainSource(num_states=6, seed=0)"


def _shipped(
    name: str, family: str, description: str, data: str, *, trained_by: str = "scripts/train_text_presets.py"
) -> Preset:
    """A preset whose weights ship in the package under presets/<name>."""
    return Preset(
        name=name,
        family=family,
        modality="text",
        description=description,
        source=WeightSource(kind="package", package="genloom.text", path=f"presets/{name}"),
        loader="genloom.text.pretrained:load_text_model",
        card={**_card(name, data), "trained_by": trained_by},
    )


# Multi30k De->En models of benchmarks/text_multi30k.py, made presets by genloom.text.preset_export; each is
# registered only once its folder ships under presets/ (all five ship)
MULTI30K_PRESETS = {
    "multi30k-ar": "AR encoder-decoder baseline for Multi30k German->English (joint BPE; beam search)",
    "multi30k-dat": "DA-Transformer for Multi30k German->English, distilled from the AR (one decoder pass)",
    "multi30k-cmlm": "CMLM for Multi30k German->English, distilled from the AR (Mask-Predict)",
    "multi30k-nat": "Vanilla NAT for Multi30k German->English, distilled from the AR (one decoder pass)",
    "multi30k-ctc": "CTC-NAT + GLAT for Multi30k German->English, distilled from the AR (one decoder pass)",
}
MULTI30K_DATA = "Multi30k task 1 De->En (train split), joint BPE"
PRESETS_ROOT = Path(__file__).resolve().parent / "presets"


def multi30k_presets(root: Path = PRESETS_ROOT) -> list[Preset]:
    """The `MULTI30K_PRESETS` whose folder (with its preset.json) exists under `root`."""
    return [
        _shipped(
            name, "text.translator", description, MULTI30K_DATA, trained_by="benchmarks/text_multi30k.py"
        )
        for name, description in MULTI30K_PRESETS.items()
        if (root / name / "preset.json").is_file()
    ]


PRESETS: list[Preset] = (
    [
        _shipped(
            f"text-sort-{family}",
            "text.translator",
            f"Tiny {title}, trained to sort letter sequences (input: 'c a b', output: 'a b c')",
            SORT_DATA,
        )
        for family, title in _FAMILY_TITLES.items()
    ]
    + [
        _shipped(
            "text-sort-diffuseq",
            "text.diffuseq",
            "Tiny DiffuSeq (continuous embedding diffusion, partial noising), trained to sort letter sequences; "
            "translate with --steps 20",
            SORT_DATA,
        ),
        _shipped(
            "text-markov-sedd",
            "text.sedd",
            "Tiny score-entropy discrete diffusion model (SEDD, absorbing) of the 6-state Markov chain",
            MARKOV_DATA,
        ),
        _shipped(
            "text-markov-mdlm",
            "text.mdlm",
            "Tiny masked diffusion LM of a 6-state Markov chain (sequences of 12 letters)",
            MARKOV_DATA,
        ),
    ]
    + [
        _shipped(
            f"text-stdlib-{kind}",
            f"text.{kind if kind == 'mdlm' else 'lm'}",
            f"Tiny {title} of the Python standard library's docstrings (BPE 2048, 64-token windows)",
            "genloom.text.stdlib_corpus (train split)",
            trained_by="scripts/train_text_stdlib.py",
        )
        for kind, title in (("ar", "decoder-only AR LM"), ("mdlm", "masked diffusion LM"))
    ]
    + [
        Preset(
            name="llada-8b",
            family="text.llada",
            modality="text",
            description="LLaDA-8B (GSAI-ML/LLaDA-8B-Base or -Instruct) architecture; weights from the official "
            "Hugging Face folder with genloom.text.llada.load_llada(folder) (safetensors, offline)",
            source=WeightSource(kind="random"),
            config={"model": LLADA_8B.to_dict()},
            loader="genloom.text.llada:load_llada",
            params=8_015_581_184,
            card={"license": "MIT (LLaDA weights)", "data": "see the LLaDA paper", "trained_by": "GSAI-ML"},
        )
    ]
    + [
        Preset(
            name=name,
            family=family,
            modality="text",
            description=description,
            source=WeightSource(
                kind="converter", filename=filename, converter="genloom.text.mdlm_dit:convert_official_preset"
            ),
            config={"model": config.to_dict()},
            loader="genloom.text.mdlm_dit:load_converted",
            card={
                "license": "Apache-2.0 (official weights)",
                "data": "OpenWebText",
                "trained_by": trained_by,
            },
        )
        for name, family, config, filename, trained_by, description in (
            (
                "mdlm-owt",
                "text.mdlm_dit",
                MDLM_OWT,
                "mdlm-owt.safetensors",
                "kuleshov-group",
                "MDLM (Sahoo et al. 2024) 12 x 768 DiT on OpenWebText, GPT-2 tokens; converted from the official "
                "`backbone.` safetensors (or its EMA list) placed in GENLOOM_HOME/checkpoints",
            ),
            (
                "sedd-small",
                "text.sedd_dit",
                SEDD_SMALL,
                "sedd-small.safetensors",
                "louaaron",
                "SEDD small (Lou et al. 2024), absorbing graph, 12 x 768 DiT on OpenWebText; converted from the "
                "official safetensors placed in GENLOOM_HOME/checkpoints",
            ),
        )  # fmt: skip
    ]
    + multi30k_presets()
)
