"""genloom text package: non-autoregressive (NAT, CMLM, CTC, DA-Transformer) and diffusion (MDLM) text
generation on the shared core, with an autoregressive baseline (encoder-decoder and decoder-only)."""

from __future__ import annotations

__version__ = "0.1.0"


def load(name_or_path: str, *, device: str = "cpu"):  # noqa: ANN201 - returns (model, tokenizer, folder)
    """(model, tokenizer, folder) of a shipped preset name or a saved model folder, offline."""
    from genloom.text.pretrained import load_text_model

    return load_text_model(name_or_path, device=device)
