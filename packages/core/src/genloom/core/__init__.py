"""genloom core: the pieces every modality shares (tokenizers, transformer, samplers, zoo, trainer, CLI)."""

__version__ = "0.1.0"
