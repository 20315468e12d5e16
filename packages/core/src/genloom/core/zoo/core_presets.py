"""Presets and families of genloom-core itself (entry point `genloom.zoo: core`).

Importing this registers the core transformer families (`core.transformer`, `core.encoder`,
`core.encoder_decoder`) so folders saved by `genloom.core.nn.save_model` load through `from_pretrained`.
`core-debug-lm` is a tiny random-weight decoder for tests and benchmarks of the generic paths.
"""

from genloom.core.nn import checkpoint as _nn_checkpoint  # noqa: F401  (registers the families)
from genloom.core.zoo.preset import Preset, WeightSource

PRESETS: list[Preset] = [
    Preset(
        name="core-debug-lm",
        family="core.transformer",
        modality="core",
        description="tiny random-weight decoder-only transformer for tests and benchmarks",
        source=WeightSource(kind="random"),
        config={"config": {"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 256, "max_seq_len": 256}},
    )
]
