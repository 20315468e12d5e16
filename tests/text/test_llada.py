"""LLaDA loader: a shape-reduced random checkpoint in the official layout (Hugging Face key names, sharded
safetensors + index, OLMo-style config.json) loads, and its logits match a direct implementation of the
official block (RMSNorm, rotate-half RoPE, bidirectional attention, SwiGLU ff_proj / up_proj / ff_out)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genloom.text.errors import TextInputError
from genloom.text.llada import LLADA_8B, LLaDAConfig, load_llada

SMALL = {
    "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 48, "vocab_size": 60,
    "embedding_size": 64, "mask_token_id": 63, "max_sequence_length": 16, "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5, "include_bias": False, "weight_tying": False, "block_type": "llama",
    "layer_norm_type": "rms", "activation_type": "silu", "rope": True, "architectures": ["LLaDAModelLM"],
}  # fmt: skip


def official_tensors(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, h, v = config["d_model"], config["mlp_hidden_size"], config["embedding_size"]

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    tensors = {"model.transformer.wte.weight": rand(v, d), "model.transformer.ln_f.weight": 1 + rand(d),
               "model.transformer.ff_out.weight": rand(v, d)}  # fmt: skip
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        for name, shape in [("attn_norm", (d,)), ("ff_norm", (d,))]:
            tensors[p + name + ".weight"] = 1 + rand(*shape)
        for name in ("q_proj", "k_proj", "v_proj", "attn_out"):
            tensors[p + name + ".weight"] = rand(d, d)
        tensors[p + "ff_proj.weight"], tensors[p + "up_proj.weight"] = rand(h, d), rand(h, d)
        tensors[p + "ff_out.weight"] = rand(d, h)
    return tensors


def reference_logits(t: dict[str, torch.Tensor], config: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The official forward, written from its description (no genloom code)."""
    d, heads, eps = config["d_model"], config["n_heads"], config["rms_norm_eps"]
    hd = d // heads

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.arange(tokens.shape[1], dtype=torch.float64)[:, None] * inv_freq[None]
    angles = torch.cat([angles, angles], -1)
    cos, sin = angles.cos().float(), angles.sin().float()

    def rope(x):  # [B, H, T, hd], rotate-half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = t["model.transformer.wte.weight"][tokens]
    b, n = tokens.shape
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        y = rms(x, t[p + "attn_norm.weight"])
        q, k, v = (
            (y @ t[p + f"{name}.weight"].T).view(b, n, heads, hd).transpose(1, 2)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(hd)
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + att @ t[p + "attn_out.weight"].T
        y = rms(x, t[p + "ff_norm.weight"])
        y = F.silu(y @ t[p + "ff_proj.weight"].T) * (y @ t[p + "up_proj.weight"].T)
        x = x + y @ t[p + "ff_out.weight"].T
    return rms(x, t["model.transformer.ln_f.weight"]) @ t["model.transformer.ff_out.weight"].T


def write_checkpoint(folder, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in keys}, str(folder / file))
        weight_map.update({k: file for k in keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def test_llada_loads_the_official_layout_and_matches_the_reference_forward(tmp_path) -> None:
    tensors = official_tensors(SMALL)
    write_checkpoint(tmp_path / "llada", SMALL, tensors)
    model = load_llada(tmp_path / "llada")
    assert model.config.vocab_size == 64 and model.config.mask_token_id == 63
    tokens = torch.randint(0, 60, (2, 11), generator=torch.Generator().manual_seed(1))
    expected = reference_logits(tensors, SMALL, tokens)
    torch.testing.assert_close(model(tokens), expected, rtol=1e-4, atol=1e-4)
    # bidirectional: changing the last token changes the first position's logits
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 60
    assert not torch.allclose(model(changed)[:, 0], model(tokens)[:, 0])
    out = model.generate(tokens[:, :3], 8, steps=8, block_length=4)
    assert out.shape == (2, 11) and (out != 63).all() and torch.equal(out[:, :3], tokens[:, :3])
    half = load_llada(tmp_path / "llada", dtype=torch.bfloat16)
    assert half.backbone.tok_embeddings.weight.dtype == torch.bfloat16


def test_llada_loader_names_what_is_wrong(tmp_path) -> None:
    tensors = official_tensors(SMALL)
    bad = dict(tensors)
    bad["model.transformer.blocks.0.extra.weight"] = torch.zeros(2)
    write_checkpoint(tmp_path / "extra", SMALL, bad)
    with pytest.raises(TextInputError, match="unexpected tensor 'model.transformer.blocks.0.extra.weight'"):
        load_llada(tmp_path / "extra")
    missing = dict(tensors)
    del missing["model.transformer.blocks.1.up_proj.weight"]
    write_checkpoint(tmp_path / "missing", SMALL, missing)
    with pytest.raises(TextInputError, match="lacks 1 tensor"):
        load_llada(tmp_path / "missing")
    write_checkpoint(tmp_path / "tied", {**SMALL, "weight_tying": True}, tensors)
    with pytest.raises(TextInputError, match="weight_tying"):
        load_llada(tmp_path / "tied")
    with pytest.raises(TextInputError, match="config.json"):
        load_llada(tmp_path / "nowhere")


def test_llada_8b_sizes_match_the_published_model() -> None:
    assert LLADA_8B == LLaDAConfig.from_hf_config(
        {
            "d_model": 4096,
            "n_heads": 32,
            "n_kv_heads": 32,
            "n_layers": 32,
            "mlp_hidden_size": 12288,
            "vocab_size": 126464,
            "embedding_size": 126464,
            "mask_token_id": 126336,
            "max_sequence_length": 4096,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
        }  # fmt: skip
    )
    with torch.device("meta"):
        from genloom.text.llada import LLaDA

        params = sum(p.numel() for p in LLaDA(LLADA_8B).parameters())
    assert 8.0e9 < params < 8.1e9  # 8.02B: the published "8B"
