"""genloom.core.nn hosts official LlamaGen, VAR and MAR transformer weights through a pure key renaming and
reproduces their logits / hidden states (fixtures in ../shared/parity, produced by the official code).

The model-level glue (class embeddings, VAR's word/level/position embeddings, MAR's buffer and masking) is
written here in a few lines; the transformer trunk is entirely genloom's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genloom.core.nn import VAR_ADALN_CHUNKS, Encoder, Transformer, TransformerConfig

PARITY = Path(__file__).resolve().parents[2].parent / "shared" / "parity"
pytestmark = pytest.mark.parity
ATOL = 1e-4


def _load(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    folder = PARITY / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    weights = "gpt" if name == "llamagen" else name
    return load_file(str(folder / f"{weights}.safetensors")), load_file(str(folder / "cases.safetensors"))


def _rename(
    state: dict[str, torch.Tensor], rules: list[tuple[str, str]], keep: str
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not re.match(keep, key):
            continue
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value.float()
    return out


# ---------------------------------------------------------------- LlamaGen
LLAMAGEN_RULES = [(r"\.attention_norm\.", ".attn_norm."), (r"\.attention\.", ".attn."),
                  (r"\.ffn_norm\.", ".mlp_norm."), (r"\.feed_forward\.", ".mlp.")]  # fmt: skip


def _llamagen() -> tuple[Transformer, torch.Tensor, dict[str, torch.Tensor]]:
    state, cases = _load("llamagen")
    cfg = TransformerConfig(
        dim=128, n_layers=2, n_heads=4, vocab_size=256, max_seq_len=17, mlp="swiglu", mlp_multiple_of=256,
        norm="rmsnorm", norm_eps=1e-5, rope="2d", rope_grid=[4, 4], rope_prefix=1, rope_prefix_rotation="zero",
        rope_layout="interleaved", rope_theta=10000.0,
    )  # fmt: skip
    model = Transformer(cfg).eval()
    model.load_state_dict(_rename(state, LLAMAGEN_RULES, r"^(?!cls_embedding)"), strict=True)
    return model, state["cls_embedding.embedding_table.weight"], cases


def test_llamagen_teacher_forcing_and_cached_decoding() -> None:
    model, class_table, cases = _llamagen()
    tokens, cond = cases["tokens"], cases["cond_idx"]
    with torch.no_grad():
        prefix = class_table[cond][:, None]
        tf = model(embeddings=torch.cat([prefix, model.embed(tokens[:, :-1])], 1))
        model.setup_cache(2, 17)
        steps = [model(embeddings=prefix, input_pos=torch.tensor([0]))]
        steps += [model(tokens[:, t : t + 1], input_pos=torch.tensor([1 + t])) for t in range(15)]
    torch.testing.assert_close(tf, cases["tf.logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(steps, 1), cases["cached.logits"], atol=ATOL, rtol=0)


def test_llamagen_cached_cfg_logits() -> None:
    model, class_table, cases = _llamagen()
    tokens, cond = cases["gen.tokens"], cases["gen.cond"]
    labels = torch.cat([cond, torch.full_like(cond, 10)])  # [cond; uncond] with the null class
    model.setup_cache(4, 17)
    cfg_logits = []
    with torch.no_grad():
        for step in range(16):
            if step == 0:
                logits = model(embeddings=class_table[labels][:, None], input_pos=torch.tensor([0]))
            else:
                tok = tokens[:, step - 1 : step].repeat(2, 1)
                logits = model(tok, input_pos=torch.tensor([step]))
            c, u = logits[:, -1].chunk(2)
            cfg_logits.append(u + (c - u) * 4.0)
    torch.testing.assert_close(torch.stack(cfg_logits, 1), cases["gen.cfg_logits"], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- VAR
VAR_RULES = [(r"^head_nm\.ada_lin\.1\.", "norm.adaln.1."), (r"^blocks\.", "layers."), (r"\.ada_lin\.1\.", ".adaln.1."), (r"\.attn\.mat_qkv\.", ".attn.wqkv."),
             (r"\.attn\.proj\.", ".attn.wo."), (r"\.attn\.scale_mul_1H11$", ".attn.scale_mul"), (r"\.ffn\.", ".mlp."),
             (r"^head\.", "output.")]  # fmt: skip


def test_var_teacher_forcing_and_cached_scales() -> None:
    state, cases = _load("var")
    cfg = TransformerConfig(
        dim=128, n_layers=2, n_heads=2, vocab_size=64, embed_tokens=False, max_seq_len=30, mlp="gelu_tanh",
        mlp_bias=True, norm="layernorm", norm_eps=1e-6, qk_norm="l2", qkv_bias="qv", attn_out_bias=True,
        adaln="adaln", cond_dim=128, adaln_chunks=list(VAR_ADALN_CHUNKS), final_adaln_chunks=["scale", "shift"],
        output_bias=True, mask="block_causal", block_sizes=[1, 4, 9, 16],
    )  # fmt: skip
    model = Transformer(cfg).eval()
    trunk = r"^(blocks\.(?!.*zero_k_bias)|head)"
    model.load_state_dict(_rename(state, VAR_RULES, trunk), strict=True)
    cond = state["class_emb.weight"][cases["label_B"]]
    with torch.no_grad():
        sos = cond[:, None] + state["pos_start"]
        words = torch.nn.functional.linear(
            cases["x_BLCv_wo_first_l"], state["word_embed.weight"], state["word_embed.bias"]
        )
        x = torch.cat([sos, words], 1) + state["lvl_embed.weight"][state["lvl_1L"][0]] + state["pos_1LC"]
        tf = model(embeddings=x, cond=cond)
        model.setup_cache(2, 30)
        chunks, start = [], 0
        for size in (1, 4, 9, 16):  # one cached chunk per scale, as VAR's inference does
            chunks.append(
                model(
                    embeddings=x[:, start : start + size],
                    input_pos=torch.arange(start, start + size),
                    cond=cond,
                )
            )
            start += size
    torch.testing.assert_close(tf, cases["logits_BLV"], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(chunks, 1), cases["logits_BLV"], atol=ATOL, rtol=0)


# ---------------------------------------------------------------- MAR (timm ViT blocks)
def _mar_rules(prefix: str) -> list[tuple[str, str]]:
    return [(rf"^{prefix}_blocks\.", "layers."), (r"\.attn\.qkv\.", ".attn.wqkv."), (r"\.attn\.proj\.", ".attn.wo."),
            (r"\.norm1\.", ".attn_norm."), (r"\.norm2\.", ".mlp_norm."), (rf"^{prefix}_norm\.", "norm.")]  # fmt: skip


def test_mar_encoder_and_decoder() -> None:
    state, cases = _load("mar")
    cfg = TransformerConfig(
        dim=64, n_layers=1, n_heads=4, mlp="gelu", mlp_bias=True, norm="layernorm", norm_eps=1e-6, qkv_bias="qkv",
        attn_out_bias=True, mask="bidirectional", max_seq_len=20,
    )  # fmt: skip
    encoder, decoder = Encoder(cfg).eval(), Encoder(cfg).eval()
    encoder.load_state_dict(_rename(state, _mar_rules("encoder"), r"^encoder_(blocks|norm)\."), strict=True)
    decoder.load_state_dict(_rename(state, _mar_rules("decoder"), r"^decoder_(blocks|norm)\."), strict=True)
    mask = cases["mask"]
    keep = torch.cat([torch.zeros(2, 4), mask], 1) == 0
    linear = torch.nn.functional.linear
    for class_embedding, enc_key, z_key in [
        (cases["class_embedding"], "enc_out", "z"),
        (state["fake_latent"].repeat(2, 1), "uncond.enc_out", "uncond.z"),
    ]:
        with torch.no_grad():
            x = linear(cases["x_tokens"], state["z_proj.weight"], state["z_proj.bias"])
            x = (
                torch.cat([class_embedding[:, None].expand(2, 4, 64), x], 1)
                + state["encoder_pos_embed_learned"]
            )
            x = torch.nn.functional.layer_norm(
                x, (64,), state["z_proj_ln.weight"], state["z_proj_ln.bias"], 1e-6
            )
            enc = encoder(embeddings=x[keep].reshape(2, -1, 64))
            y = linear(enc, state["decoder_embed.weight"], state["decoder_embed.bias"])
            full = state["mask_token"].expand(2, 20, 64).clone()
            full[keep] = y.reshape(-1, 64)
            z = (
                decoder(embeddings=full + state["decoder_pos_embed_learned"])[:, 4:]
                + state["diffusion_pos_embed_learned"]
            )
        torch.testing.assert_close(enc, cases[enc_key], atol=ATOL, rtol=0)
        torch.testing.assert_close(z, cases[z_key], atol=ATOL, rtol=0)
