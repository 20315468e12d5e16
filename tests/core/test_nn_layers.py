"""Layer-level guarantees of genloom.core.nn: RoPE relativity, masks, GQA, AdaLN-zero, config JSON."""

from __future__ import annotations

import json

import pytest
import torch

from genloom.core.errors import ConfigError, InputError
from genloom.core.nn import (
    Block,
    Encoder,
    Transformer,
    TransformerConfig,
    apply_rope,
    block_causal_mask,
    causal_mask,
    prefix_mask,
    rope_1d,
    rope_2d,
    rope_3d,
)


# ---------------------------------------------------------------- RoPE
def _score(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, i: int, j: int, layout: str
) -> float:
    qi = apply_rope(q[None], cos[i : i + 1], sin[i : i + 1], layout)[0]
    kj = apply_rope(k[None], cos[j : j + 1], sin[j : j + 1], layout)[0]
    return float(qi @ kj)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_2d_scores_depend_only_on_relative_offset(layout: str) -> None:
    height, width, head_dim = 6, 7, 16
    cos, sin = rope_2d(height, width, head_dim, theta=100.0)
    gen = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(head_dim, generator=gen, dtype=torch.float64),
        torch.randn(head_dim, generator=gen, dtype=torch.float64),
    )
    cos, sin = cos.double(), sin.double()

    def idx(r: int, c: int) -> int:
        return r * width + c

    for dr, dc in [(0, 0), (1, 2), (-2, 3), (3, -4)]:
        scores = [
            _score(q, k, cos, sin, idx(r, c), idx(r + dr, c + dc), layout)
            for r in range(height)
            for c in range(width)
            if 0 <= r + dr < height and 0 <= c + dc < width
        ]
        assert max(scores) - min(scores) < 1e-5, (dr, dc)  # float32 tables
    # rows and columns are distinct axes: offsets (1, 0) and (0, 1) give different scores
    assert (
        abs(
            _score(q, k, cos, sin, idx(0, 0), idx(1, 0), layout)
            - _score(q, k, cos, sin, idx(0, 0), idx(0, 1), layout)
        )
        > 1e-3
    )


def test_rope_3d_scores_depend_only_on_relative_offset() -> None:
    cos, sin = rope_3d(3, 4, 5, 24)
    gen = torch.Generator().manual_seed(1)
    q, k = (
        torch.randn(24, generator=gen, dtype=torch.float64),
        torch.randn(24, generator=gen, dtype=torch.float64),
    )
    cos, sin = cos.double(), sin.double()
    a = _score(q, k, cos, sin, 0 * 20 + 1 * 5 + 1, 1 * 20 + 2 * 5 + 3, "interleaved")
    b = _score(q, k, cos, sin, 1 * 20 + 2 * 5 + 2, 2 * 20 + 3 * 5 + 4, "interleaved")
    c = _score(q, k, cos, sin, 1 * 20 + 2 * 5 + 2, 2 * 20 + 3 * 5 + 3, "interleaved")
    assert abs(a - b) < 1e-5 and abs(a - c) > 1e-3


def test_rope_2d_matches_llamagen_layout_and_zero_prefix() -> None:
    """Pair columns [0, D/4) rotate with the row, [D/4, D/2) with the column, base^(-2j/(D/2)) each."""
    head_dim, grid = 8, 3
    cos, sin = rope_2d(grid, grid, head_dim, prefix=1, prefix_rotation="zero")
    assert cos.shape == (1 + grid * grid, head_dim // 2)
    assert torch.all(cos[0] == 0) and torch.all(sin[0] == 0)
    freqs = 1.0 / (10000.0 ** (torch.arange(0, 4, 2).double() / 4))
    row, col = 2, 1
    expected = torch.cat([row * freqs, col * freqs])
    torch.testing.assert_close(cos[1 + row * grid + col].double(), expected.cos(), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[1 + row * grid + col].double(), expected.sin(), atol=1e-6, rtol=0)
    x = torch.randn(2, 3, 10, head_dim)
    assert torch.all(apply_rope(x, cos[:1], sin[:1]) == 0)  # class token: q = k = 0, as in LlamaGen
    identity_cos, identity_sin = rope_2d(grid, grid, head_dim, prefix=1, prefix_rotation="identity")
    torch.testing.assert_close(apply_rope(x, identity_cos[:1], identity_sin[:1]), x)


def test_rope_1d_rotate_half_matches_complex_formula() -> None:
    cos, sin = rope_1d(5, 6)
    x = torch.randn(5, 6)
    out = apply_rope(x, cos, sin, "half")
    z = torch.complex(x[:, :3], x[:, 3:]) * torch.complex(cos, sin)
    torch.testing.assert_close(out, torch.cat([z.real, z.imag], -1), atol=1e-6, rtol=0)
    out_i = apply_rope(x, cos, sin, "interleaved")
    zi = torch.view_as_complex(x.reshape(5, 3, 2).contiguous()) * torch.complex(cos, sin)
    torch.testing.assert_close(out_i, torch.view_as_real(zi).reshape(5, 6), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- masks
def test_mask_helpers_exact() -> None:
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(block_causal_mask([1, 2, 3]), expected)
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    pm = prefix_mask(5, 2)
    assert pm[0, 1] and pm[1, 0] and not pm[1, 2] and not pm[2, 3] and pm[4, 0]


def test_block_causal_model_sees_exactly_own_and_earlier_blocks() -> None:
    torch.manual_seed(0)
    sizes = [1, 2, 3, 4]
    cfg = TransformerConfig(
        dim=16,
        n_layers=2,
        n_heads=2,
        vocab_size=11,
        mask="block_causal",
        block_sizes=sizes,
        max_seq_len=10,
        rope="1d",
    )
    model = Transformer(cfg).eval()
    tokens = torch.randint(0, 11, (1, 10))
    starts = [0, 1, 3, 6]
    with torch.no_grad():
        base = model(tokens)
        for block, start in enumerate(starts):
            changed = tokens.clone()
            changed[0, start + sizes[block] - 1] = (
                changed[0, start + sizes[block] - 1] + 1
            ) % 11  # last of block
            diff = (model(changed) - base).abs().amax(-1)[0]
            assert torch.all(diff[:start] == 0), (block, diff)  # earlier blocks never see it
            assert torch.all(diff[start:] > 1e-6), (
                block,
                diff,
            )  # its own block (even earlier slots) and later


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(
    "mask", [dict(mask="prefix", prefix_len=3), dict(mask="block_causal", block_sizes=[1, 2, 6])]
)
def test_flex_attention_equals_sdpa_mask(mask: dict) -> None:
    torch.manual_seed(0)
    kw = dict(dim=16, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=11, max_seq_len=9, **mask)
    sdpa = Transformer(TransformerConfig(**kw)).eval()
    flex = Transformer(TransformerConfig(**kw, attn_impl="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    tokens = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(flex(tokens), sdpa(tokens), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- GQA, AdaLN-zero, encoder
def test_gqa_equals_mha_with_repeated_kv_heads() -> None:
    torch.manual_seed(0)
    head_dim, heads, kv_heads = 8, 4, 2
    gqa = Transformer(
        TransformerConfig(
            dim=32, n_layers=2, n_heads=heads, n_kv_heads=kv_heads, vocab_size=13, rope="1d", max_seq_len=12
        )
    ).eval()
    mha = Transformer(
        TransformerConfig(dim=32, n_layers=2, n_heads=heads, vocab_size=13, rope="1d", max_seq_len=12)
    ).eval()
    state = gqa.state_dict()

    def repeat_heads(w: torch.Tensor) -> torch.Tensor:
        return w.unflatten(0, (kv_heads, head_dim)).repeat_interleave(heads // kv_heads, 0).flatten(0, 1)

    for key in [k for k in state if k.endswith("attn.wqkv.weight")]:
        q, k, v = state[key].split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])
        state[key] = torch.cat([q, repeat_heads(k), repeat_heads(v)])
    mha.load_state_dict(state)
    tokens = torch.randint(0, 13, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(gqa(tokens), mha(tokens), atol=1e-5, rtol=0)


def test_adaln_zero_block_is_identity_at_init() -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=16, n_layers=2, n_heads=2, adaln="adaln_zero", cond_dim=8, cross_attn=False)
    model = Transformer(cfg).eval()
    x = torch.randn(2, 5, 16)
    cond = torch.randn(2, 8)
    block = model.layers[0]
    with torch.no_grad():
        torch.testing.assert_close(block(x, cond=cond), x, atol=0, rtol=0)
        block.adaln[1].bias.fill_(0.3)  # once the gates open the block is no longer the identity
        assert (block(x, cond=cond) - x).abs().max() > 1e-3
    assert (
        isinstance(block, Block) and not hasattr(block.attn_norm, "weight") or block.attn_norm.weight is None
    )


def test_encoder_padding_hides_keys_and_features_path() -> None:
    torch.manual_seed(0)
    encoder = Encoder(
        TransformerConfig(dim=16, n_layers=2, n_heads=2, vocab_size=9, max_seq_len=8, rope="1d")
    ).eval()
    assert encoder.config.mask == "bidirectional"
    tokens = torch.randint(0, 9, (2, 8))
    padding = torch.ones(2, 8, dtype=torch.bool)
    padding[0, 5:] = False
    changed = tokens.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 9
    with torch.no_grad():
        a, b = encoder(tokens, padding_mask=padding), encoder(changed, padding_mask=padding)
        c = encoder(changed)
    assert a.shape == (2, 8, 16)
    torch.testing.assert_close(a[0, :5], b[0, :5], atol=0, rtol=0)
    assert (c[0, :5] - a[0, :5]).abs().max() > 1e-4  # without padding the change is visible everywhere
    trunk = Transformer(TransformerConfig(dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    assert trunk.features(embeddings=torch.randn(1, 4, 16)).shape == (1, 4, 16)
    with pytest.raises(ConfigError, match="no output head"):
        trunk(embeddings=torch.randn(1, 4, 16))


# ---------------------------------------------------------------- config, dtype, state dict, errors
def test_config_json_round_trip_and_errors() -> None:
    cfg = TransformerConfig(
        dim=48,
        n_layers=3,
        n_heads=6,
        n_kv_heads=2,
        rope="2d",
        rope_grid=(4, 4),
        rope_prefix=1,
        adaln="adaln_zero",
        cond_dim=10,
        mask="block_causal",
        block_sizes=(1, 4, 11),
        vocab_size=7,
    )
    text = cfg.to_json()
    again = TransformerConfig.from_json(text)
    assert again == cfg and json.loads(text)["rope_grid"] == [4, 4]
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown TransformerConfig field"):
        TransformerConfig.from_dict({**cfg.to_dict(), "n_layer": 2})
    with pytest.raises(ConfigError, match="mlp must be one of"):
        TransformerConfig(mlp="relu")
    with pytest.raises(ConfigError, match="multiple of n_kv_heads"):
        TransformerConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="rope_grid"):
        TransformerConfig(rope="2d")
    with pytest.raises(ConfigError, match="malformed"):
        TransformerConfig.from_json("{not json")


def test_bf16_cast_keeps_rope_tables_fp32_and_state_dict_is_weights_only() -> None:
    model = Transformer(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=5, rope="1d", max_seq_len=8)
    )
    model.setup_cache(1, 8)
    assert not any("cache" in k or "rope" in k for k in model.state_dict())
    model = model.to(torch.bfloat16)
    assert model.rope_cos.dtype == torch.float32 and model.output.weight.dtype == torch.bfloat16
    logits = model(torch.tensor([[1, 2]]), input_pos=torch.arange(2))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_bad_inputs_raise_clear_errors() -> None:
    model = Transformer(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=5, max_seq_len=8, rope="1d")
    )
    with pytest.raises(InputError, match="exactly one"):
        model()
    with pytest.raises(InputError, match="integer tensor"):
        model(torch.randn(1, 3))
    with pytest.raises(InputError, match="exceeds"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InputError, match="no AdaLN"):
        model(torch.zeros(1, 3, dtype=torch.long), cond=torch.randn(1, 16))
    with pytest.raises(InputError, match="mask must be a bool"):
        model(torch.zeros(1, 3, dtype=torch.long), mask=torch.ones(3, 4, dtype=torch.bool))
    ada = Transformer(TransformerConfig(dim=16, n_layers=1, n_heads=2, adaln="adaln", cond_dim=4))
    with pytest.raises(InputError, match="pass cond"):
        ada.features(embeddings=torch.randn(1, 3, 16))


def test_meta_device_build_with_assign_load_equals_eager_build() -> None:
    """gpt-fast style: build on the meta device, load weights with assign=True; RoPE / block tables stay real."""
    cfg = TransformerConfig(dim=16, n_layers=2, n_heads=2, vocab_size=7, rope="2d", rope_grid=[2, 3], rope_prefix=1,
                            mask="block_causal", block_sizes=[1, 2, 4], max_seq_len=7)  # fmt: skip
    torch.manual_seed(0)
    reference = Transformer(cfg).eval()
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(reference.state_dict(), assign=True)
    model.eval()
    tokens = torch.randint(0, 7, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens), atol=0, rtol=0)


def test_dropout_and_drop_path_act_in_training_only() -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig(
        dim=16, n_layers=3, n_heads=2, vocab_size=7, dropout=0.2, attn_dropout=0.1, drop_path=0.3
    )
    model = Transformer(cfg)
    assert [layer.drop_path.p for layer in model.layers] == pytest.approx([0.0, 0.15, 0.3])
    tokens = torch.randint(0, 7, (4, 6))
    model.train()
    assert not torch.allclose(model(tokens), model(tokens))
    model.eval()
    torch.testing.assert_close(model(tokens), model(tokens), atol=0, rtol=0)


def test_save_load_round_trip_and_checkpoint_errors(tmp_path) -> None:
    from genloom.core.errors import CheckpointError
    from genloom.core.nn import EncoderDecoder, load_model, save_model

    torch.manual_seed(0)
    tied = Transformer(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=9, tie_embeddings=True)
    ).eval()
    seq2seq = EncoderDecoder(
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=9, max_seq_len=8),
        TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=9, cross_attn=True, max_seq_len=8),
    ).eval()
    tokens = torch.randint(0, 9, (2, 5))
    loaded = load_model(save_model(tied, tmp_path / "tied"))
    assert loaded.output.weight is loaded.tok_embeddings.weight
    loaded2 = load_model(save_model(seq2seq, tmp_path / "s2s"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), tied(tokens), atol=0, rtol=0)
        torch.testing.assert_close(loaded2(tokens, tokens), seq2seq(tokens, tokens), atol=0, rtol=0)
    assert sorted(p.name for p in (tmp_path / "tied").iterdir()) == ["config.json", "model.safetensors"]
    # a config that does not fit the weights is reported with the tensor's name
    other = Transformer(TransformerConfig(dim=16, n_layers=1, n_heads=2, vocab_size=10, tie_embeddings=True))
    save_model(other, tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "tied" / "config.json").read_text())
    with pytest.raises(
        CheckpointError, match=r"tok_embeddings.weight' expects shape \[9, 16\], file has \[10, 16\]"
    ):
        load_model(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "s2s" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_random_order_masks_are_causal_in_generation_order_and_match_flex() -> None:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from genloom.core.nn import causal_mask, flex_order_mask_mod, order_mask

    g = torch.Generator().manual_seed(0)
    orders = torch.stack([torch.randperm(6, generator=g) for _ in range(3)])  # orders[b, step] = position
    rank = torch.empty_like(orders).scatter_(1, orders, torch.arange(6).expand(3, 6))
    mask = order_mask(rank)
    assert mask.shape == (3, 1, 6, 6)
    for b in range(3):  # permuted into generation order, the mask is exactly causal
        perm = orders[b]
        assert torch.equal(mask[b, 0][perm][:, perm], causal_mask(6))
    q, k, v = (torch.randn(3, 2, 6, 8, generator=g) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    block = create_block_mask(flex_order_mask_mod(rank), 3, None, 6, 6, device="cpu")
    torch.testing.assert_close(flex_attention(q, k, v, block_mask=block), reference, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="rank must be an integer tensor"):
        order_mask(torch.rand(2, 4))


def test_single_query_attention_matches_sdpa_with_gqa_and_mask() -> None:
    import torch.nn.functional as F

    from genloom.core.nn.attention import single_query_attention

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 1, 16, generator=gen)
    k, v = torch.randn(2, 2, 30, 16, generator=gen), torch.randn(2, 2, 30, 16, generator=gen)
    mask = torch.rand(1, 1, 1, 30, generator=gen) > 0.4
    mask[..., 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(single_query_attention(q, k, v, mask, 0.3), ref, atol=1e-6, rtol=1e-5)


def test_fused_gate_keeps_outputs_names_and_loads_unfused_checkpoints() -> None:
    from genloom.core.nn import Transformer, TransformerConfig

    config = TransformerConfig(dim=32, n_layers=2, n_heads=4, vocab_size=50, max_seq_len=16, mlp="swiglu")
    torch.manual_seed(0)
    model = Transformer(config).eval()
    tokens = torch.randint(0, 50, (2, 7))
    before = model(tokens)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse_projections()
    assert hasattr(model.layers[0].mlp, "w13") and not hasattr(model.layers[0].mlp, "w1")
    torch.testing.assert_close(model(tokens), before, atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    other = Transformer(config)
    other.fuse_projections()
    other.load_state_dict(state)  # w1 / w3 names load into the fused layer
    torch.testing.assert_close(other.eval()(tokens), before, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in other.parameters()) == sum(v.numel() for v in state.values())


def test_attend_all_cached_equals_the_block_causal_mask_for_a_whole_block() -> None:
    from genloom.core.errors import InputError
    from genloom.core.nn import Transformer, TransformerConfig

    config = TransformerConfig(
        dim=32,
        n_layers=2,
        n_heads=4,
        vocab_size=40,
        max_seq_len=14,
        mask="block_causal",
        block_sizes=[1, 4, 9],
    )
    torch.manual_seed(0)
    model = Transformer(config).eval()
    x = torch.randn(2, 14, 32)
    outputs = []
    for attend_all in (False, True):
        model.setup_cache(2, 14)
        steps = [model.features(embeddings=x[:, :1], input_pos=torch.arange(0, 1), kv_len=1)]
        steps.append(
            model.features(
                embeddings=x[:, 1:5], input_pos=torch.arange(1, 5), kv_len=5, attend_all_cached=attend_all
            )
        )
        steps.append(
            model.features(
                embeddings=x[:, 5:], input_pos=torch.arange(5, 14), kv_len=14, attend_all_cached=attend_all
            )
        )
        outputs.append(torch.cat(steps, dim=1))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        outputs[0], model.remove_cache() or model.features(embeddings=x), atol=1e-5, rtol=1e-4
    )
    model.setup_cache(2, 14)
    with pytest.raises(InputError, match="attend_all_cached needs kv_len"):
        model.features(embeddings=x[:, :1], input_pos=torch.arange(0, 1), attend_all_cached=True)


def test_a_large_pass_pads_an_odd_vocabulary_head_and_gives_the_same_logits(monkeypatch) -> None:
    """`vocab_logits` runs a big pass through the head padded to a multiple of 64 (on CUDA; forced here on
    the CPU): the same logits, the vocabulary's width; a few rows (decode steps) keep the plain head."""
    from genloom.core.nn import transformer as transformer_module

    torch.manual_seed(0)
    config = TransformerConfig(
        dim=32, n_layers=1, n_heads=4, vocab_size=101, output_bias=True, max_seq_len=64
    )
    model = Transformer(config).eval()
    hidden = torch.randn(40, 64, 32)  # 2,560 rows
    plain = model.output(hidden)
    monkeypatch.setattr(Transformer, "padded_head_devices", ("cpu",))
    calls, pad = [], torch.nn.functional.pad
    monkeypatch.setattr(transformer_module.F, "pad", lambda t, sizes: calls.append(sizes) or pad(t, sizes))
    padded = model.vocab_logits(hidden)
    assert padded.shape == (40, 64, 101) and calls == [(0, 27), (0, 0, 0, 27)]  # 101 -> 128 outputs
    assert torch.allclose(padded, plain, atol=1e-5)
    calls.clear()
    assert torch.equal(model.vocab_logits(hidden[:2]), model.output(hidden[:2])) and calls == []  # 128 rows
