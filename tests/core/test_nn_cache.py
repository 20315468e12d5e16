"""KV-cache exactness: teacher forcing = prefill + steps = chunked steps; truncate-and-redo = never written."""

from __future__ import annotations

import pytest
import torch

from genloom.core.errors import InputError
from genloom.core.nn import EncoderDecoder, Transformer, TransformerConfig

ATOL = 1e-5

CONFIGS = {
    "llama_gqa_rope1d": dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, rope="1d", rope_layout="half"),
    "vit_gelu_learned_qknorm": dict(
        dim=32,
        n_layers=2,
        n_heads=2,
        mlp="gelu",
        norm="layernorm",
        learned_pos=True,
        qk_norm="layernorm",
        qkv_bias="qkv",
        attn_out_bias=True,
        mlp_bias=True,
        fused_qkv=False,
    ),
    "llamagen_2d_prefix": dict(
        dim=32,
        n_layers=2,
        n_heads=2,
        rope="2d",
        rope_grid=[4, 5],
        rope_prefix=2,
        rope_prefix_rotation="zero",
    ),
    "var_adaln_cosine": dict(
        dim=32,
        n_layers=2,
        n_heads=2,
        mlp="gelu_tanh",
        norm="layernorm",
        norm_eps=1e-6,
        qk_norm="l2",
        qkv_bias="qv",
        attn_out_bias=True,
        mlp_bias=True,
        adaln="adaln",
        cond_dim=12,
        adaln_chunks=["gate_attn", "gate_mlp", "scale_attn", "scale_mlp", "shift_attn", "shift_mlp"],
        final_adaln_chunks=["scale", "shift"],
        output_bias=True,
    ),
    "prefix_lm": dict(dim=32, n_layers=2, n_heads=4, rope="1d", mask="prefix", prefix_len=3),
}


def _model(name: str, seed: int = 0, **extra) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=23, **{"max_seq_len": 22, **CONFIGS[name], **extra})
    model = Transformer(cfg).eval()
    with torch.no_grad():  # non-zero AdaLN / norm parameters so every path carries signal
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _cond(model: Transformer, batch: int) -> torch.Tensor | None:
    return torch.randn(batch, model.config.cond_size) if model.config.adaln != "none" else None


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("static", [False, True])
def test_teacher_forcing_equals_prefill_steps_and_chunks(name: str, static: bool) -> None:
    model = _model(name)
    tokens = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(1))
    cond = _cond(model, 2)
    with torch.no_grad():
        full = model(tokens, cond=cond)
        model.setup_cache(2, 20, static=static)
        prefill = 5 if name != "prefix_lm" else 3  # a prefix-LM prefills its whole bidirectional prefix
        steps = [model(tokens[:, :prefill], input_pos=torch.arange(prefill), cond=cond)]
        for t in range(prefill, 16):
            steps.append(model(tokens[:, t : t + 1], input_pos=torch.tensor([t]), cond=cond))
        stepped = torch.cat(steps, dim=1)
        model.reset_cache()
        chunks, start = [], 0
        for size in (prefill, 4, 1, 11 - prefill):
            pos = torch.arange(start, start + size)
            chunks.append(model(tokens[:, pos], input_pos=pos, cond=cond))
            start += size
        chunked = torch.cat(chunks, dim=1)
    assert full.shape == (2, 16, 23) and full.dtype == torch.float32
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(chunked, full, atol=ATOL, rtol=0)


def test_cached_steps_across_kv_buckets_equal_teacher_forcing() -> None:
    """Dynamic mode reads the filled slots rounded up to 64: crossing bucket edges changes nothing."""
    model = _model("llama_gqa_rope1d", max_seq_len=150)
    tokens = torch.randint(0, 23, (1, 140), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        model.setup_cache(1, 150)
        steps = [model(tokens[:, :60], input_pos=torch.arange(60))]
        steps += [model(tokens[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(60, 70)]
        steps.append(model(tokens[:, 70:140], input_pos=torch.arange(70, 140)))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=0)


def test_uncached_explicit_positions_equal_default() -> None:
    model = _model("llamagen_2d_prefix")
    tokens = torch.randint(0, 23, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(
            model(tokens, input_pos=torch.arange(12)), model(tokens), atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("name", ["llama_gqa_rope1d", "var_adaln_cosine"])
def test_truncate_and_redo_equals_never_written(name: str) -> None:
    model = _model(name)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 23, (2, 6), generator=gen)
    drafts = torch.randint(0, 23, (2, 5), generator=gen)
    redo = torch.randint(0, 23, (2, 4), generator=gen)
    cond = _cond(model, 2)
    with torch.no_grad():
        model.setup_cache(2, 18)
        model(prompt, input_pos=torch.arange(6), cond=cond)
        model(drafts, input_pos=torch.arange(6, 11), cond=cond)  # rejected drafts
        model.truncate_cache(6)
        dirty = model(redo, input_pos=torch.arange(6, 10), cond=cond)
        dirty_caches = [layer.attn.kv_cache.k_cache.clone() for layer in model.layers]

        model.setup_cache(2, 18)
        model(prompt, input_pos=torch.arange(6), cond=cond)
        clean = model(redo, input_pos=torch.arange(6, 10), cond=cond)
        clean_caches = [layer.attn.kv_cache.k_cache for layer in model.layers]
    assert not torch.equal(drafts[:, :4], redo)
    torch.testing.assert_close(dirty, clean, atol=0, rtol=0)
    for a, b in zip(dirty_caches, clean_caches):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_cache_errors_are_specific() -> None:
    model = _model("llama_gqa_rope1d")
    tokens = torch.randint(0, 23, (2, 3))
    with pytest.raises(InputError, match="setup_cache"):
        model.truncate_cache(2)
    model.setup_cache(2, 10)
    with pytest.raises(InputError, match="input_pos"):
        model(tokens)
    with pytest.raises(InputError, match="cache batch"):
        model(tokens[:1], input_pos=torch.arange(3))
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        model(tokens, input_pos=torch.arange(8, 11))
    with pytest.raises(InputError, match="exceeds"):
        model.setup_cache(2, 100)


def test_encoder_decoder_cached_decoding_equals_teacher_forcing() -> None:
    torch.manual_seed(0)
    enc = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, vocab_size=19, mask="bidirectional", rope="1d", max_seq_len=16
    )
    dec = TransformerConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=21, cross_attn=True, rope="1d", max_seq_len=16
    )
    model = EncoderDecoder(enc, dec).eval()
    src = torch.randint(0, 19, (2, 9))
    src_mask = torch.ones(2, 9, dtype=torch.bool)
    src_mask[1, 6:] = False  # second source is 6 tokens long
    tgt = torch.randint(0, 21, (2, 7))
    with torch.no_grad():
        full = model(src, tgt, src_padding_mask=src_mask)
        decoder = model.start_decoding(src, src_padding_mask=src_mask)
        decoder.setup_cache(2, 12)
        steps = [decoder(tgt[:, :2], input_pos=torch.arange(2))]
        steps += [decoder(tgt[:, t : t + 1], input_pos=torch.tensor([t])) for t in range(2, 7)]
        # padding really hides the tail of source 1: changing it changes nothing
        decoder.remove_cache()
        src2 = src.clone()
        src2[1, 6:] = (src2[1, 6:] + 1) % 19
        full2 = model(src2, tgt, src_padding_mask=src_mask)
        src3 = src.clone()
        src3[1, 5] = (src3[1, 5] + 1) % 19  # a real source token: the output must change
        full3 = model(src3, tgt, src_padding_mask=src_mask)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=0)
    torch.testing.assert_close(full2[1], full[1], atol=ATOL, rtol=0)
    assert (full3[1] - full[1]).abs().max() > 1e-4
    rebuilt = EncoderDecoder.from_dict(model.to_dict())
    assert rebuilt.to_dict() == model.to_dict()


def test_cache_state_stays_out_of_checkpoints() -> None:
    """Keys, values and the decode kernels' arrival counters (`KVCache.sync`, zero) are run state: a model's
    state_dict is the same with and without a cache, so checkpoints do not change."""
    model = Transformer(
        TransformerConfig(dim=32, n_layers=2, n_heads=4, vocab_size=20, rope="1d", max_seq_len=16)
    )
    before = set(model.state_dict())
    model.setup_cache(2, 16)
    assert set(model.state_dict()) == before
    cache = model.layers[0].attn.kv_cache
    assert cache.sync.dtype == torch.int32 and not cache.sync.any()
