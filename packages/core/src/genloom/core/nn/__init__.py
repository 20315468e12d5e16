"""genloom.core.nn: the one transformer stack every modality configures.

- `TransformerConfig` (JSON round-trip with `to_dict` / `from_dict`), `Transformer` (decoder-only LM or any
  masked stack: `forward(tokens=None, *, embeddings=None, input_pos=None, mask=None, cond=None,
  context=None) -> logits`, `features(...) -> hidden`, `setup_cache`, `truncate_cache`, `reset_cache`),
  `Encoder` (bidirectional, returns hidden states), `EncoderDecoder` (seq2seq with cached cross-attention).
- Layers: `Attention` (MHA/GQA, SDPA or FlexAttention, QK-norm, cosine attention), `MLP` (SwiGLU/GELU),
  `Block` (pre-norm, AdaLN / AdaLN-zero, cross-attention, drop-path), `FinalAdaLN`, `RMSNorm`, `KVCache`.
- Positions: `rope_1d`, `rope_2d`, `rope_3d`, `rope_from_coords`, `add_prefix`, `apply_rope(x, cos, sin, layout)`.
- Masks: `causal_mask`, `block_causal_mask(block_sizes)`, `prefix_mask`, `structure_mask`, `flex_mask_mod`,
  random-order `order_mask` / `flex_order_mask_mod`.
- Files: `save_model(model, folder)` / `load_model(folder, device=, dtype=)` (config.json + model.safetensors).
- GPU fast path: `Transformer.compile_decode()` (torch.compile + CUDA graphs for one-token cached steps).
"""

from .attention import Attention
from .block import Block, DropPath, FinalAdaLN
from .checkpoint import build_model, load_model, save_model
from .config import DIT_ADALN_CHUNKS, VAR_ADALN_CHUNKS, TransformerConfig
from .encoder_decoder import Encoder, EncoderDecoder
from .kv_cache import KVCache
from .masks import (
    block_causal_mask,
    block_ids_from_sizes,
    causal_mask,
    flex_mask_mod,
    flex_order_mask_mod,
    order_mask,
    prefix_mask,
    structure_mask,
)
from .mlp import MLP
from .norms import RMSNorm, make_norm
from .rope import add_prefix, apply_rope, rope_1d, rope_2d, rope_3d, rope_frequencies, rope_from_coords
from .transformer import Transformer

__all__ = [
    "Attention",
    "Block",
    "DIT_ADALN_CHUNKS",
    "DropPath",
    "Encoder",
    "EncoderDecoder",
    "FinalAdaLN",
    "KVCache",
    "MLP",
    "RMSNorm",
    "Transformer",
    "TransformerConfig",
    "VAR_ADALN_CHUNKS",
    "add_prefix",
    "apply_rope",
    "build_model",
    "load_model",
    "save_model",
    "block_causal_mask",
    "block_ids_from_sizes",
    "causal_mask",
    "flex_mask_mod",
    "order_mask",
    "flex_order_mask_mod",
    "make_norm",
    "prefix_mask",
    "rope_1d",
    "rope_2d",
    "rope_3d",
    "rope_frequencies",
    "rope_from_coords",
    "structure_mask",
]
