"""Scale-and-bin tokenizer round trips, and the tokenised AR forecaster's sampling contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genloom.timeseries.errors import SeriesInputError
from genloom.timeseries.models.tokenized_ar import TokenizedARForecaster
from genloom.timeseries.tokenizer import PAD_ID, BinTokenizerConfig, ScaleBinTokenizer


@pytest.mark.parametrize("scaling", ["mean", "standard"])
def test_tokenizer_round_trip_within_half_a_bin(scaling):
    tok = ScaleBinTokenizer(BinTokenizerConfig(n_bins=512, limit=4.0, scaling=scaling))
    values = torch.tensor([[10.0, 12.0, 9.0, 11.5, 10.2], [-3.0, 0.0, 3.0, 1.0, -1.0]])
    loc, scale = tok.fit_scale(values)
    ids = tok.encode(values, loc, scale)
    assert ids.min() >= 1 and ids.max() < tok.vocab_size
    back = tok.decode(ids, loc, scale)
    half_bin = 4.0 / 512 * scale
    assert torch.all((back - values).abs() <= half_bin + 1e-6)
    if scaling == "mean":
        torch.testing.assert_close(scale[:, 0], values.abs().mean(1))
    else:
        torch.testing.assert_close(loc[:, 0], values.mean(1))


def test_tokenizer_masks_padding_and_ignores_it_in_the_scale():
    tok = ScaleBinTokenizer(BinTokenizerConfig(scaling="standard"))
    values = torch.tensor([[1000.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[False, True, True, True]])
    loc, scale = tok.fit_scale(values, mask)
    assert loc.item() == pytest.approx(2.0)
    assert tok.encode(values, loc, scale, mask)[0, 0].item() == PAD_ID


def test_sampling_shapes_seeds_and_errors(tiny_forecaster):
    model = tiny_forecaster()
    context = np.sin(np.arange(40) / 3.0)[None].repeat(2, 0) * 10 + 50
    a = model.forecast(context, 20, num_samples=8, seed=1, levels=(0.1, 0.5, 0.9))
    b = model.forecast(context, 20, num_samples=8, seed=1, levels=(0.1, 0.5, 0.9))
    assert a.samples.shape == (8, 2, 20) and a.quantiles.shape == (3, 2, 20)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert np.all(a.quantiles[0] <= a.quantiles[2])
    # sampled values live on the context's scale (standard scaling: within loc +- limit * std)
    seen = context[0, -32:]  # the model keeps the last context_len steps
    assert np.all(np.abs(a.samples - seen.mean()) <= 3.0 * seen.std() + 1e-4)
    with pytest.raises(SeriesInputError, match="NaN"):
        model.forecast(np.array([1.0, np.nan, 2.0]), 3)


def test_training_reduces_the_loss_on_a_periodic_signal(tiny_forecaster):
    model = tiny_forecaster()
    t = torch.arange(48).float()
    windows = torch.stack([torch.sin((t + s) * 2 * torch.pi / 8) * 5 + 20 for s in range(16)])
    mask = torch.ones_like(windows, dtype=torch.bool)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.training_loss(windows, mask, context_steps=32).item()
    for _ in range(60):
        loss = model.training_loss(windows, mask, context_steps=32)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_cached_decoding_matches_full_recompute_and_long_horizons_work(tiny_forecaster):
    model = tiny_forecaster()
    context = torch.randn(3, 32).cumsum(1)
    greedy = model.sample(context, 16, num_samples=1, temperature=0.0)[0]
    # reference: recompute the whole sequence at every step, no cache
    loc, scale = model.tokenizer.fit_scale(context)
    ids = model.tokenizer.encode(context, loc, scale)
    for _ in range(16):
        logits = model.decoder(ids)[:, -1]
        logits[:, PAD_ID] = -float("inf")
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(greedy, model.tokenizer.decode(ids[:, 32:], loc, scale))
    assert model.sample(context, 100, num_samples=2).shape == (2, 3, 100)  # beyond max_len: re-prefills


def test_left_padding_is_masked_out_of_attention(monkeypatch, tiny_forecaster):
    """Padded keys are masked (core key_padding_mask): whatever token ids the padded slots before the last
    one hold, the loss is the same; without the mask it would change. (The last padded slot stays PAD: its
    query predicts the first real token, as a start token.)"""
    model = tiny_forecaster().eval()
    values = torch.sin(torch.arange(40).float() / 3)[None].repeat(2, 1) * 4 + 10
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[:, :8] = False
    encode = model.tokenizer.encode

    def encode_with_junk(junk_id):
        def fn(v, loc, scale, m=None):
            ids = encode(v, loc, scale, m)
            keep = mask | (torch.arange(ids.shape[1]) == 7)
            return torch.where(keep, ids, torch.full_like(ids, junk_id))

        return fn

    losses = []
    for junk_id in (PAD_ID, 5, 60):
        monkeypatch.setattr(model.tokenizer, "encode", encode_with_junk(junk_id))
        losses.append(model.training_loss(values, mask, context_steps=30))
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])
    unmasked = model.decoder(encode_with_junk(60)(values, *model.tokenizer.fit_scale(values), mask))
    masked = model.decoder(encode_with_junk(PAD_ID)(values, *model.tokenizer.fit_scale(values), mask))
    assert not torch.allclose(unmasked[:, 8:], masked[:, 8:])  # the mask is what makes them equal


def test_pretrain_runs_on_the_core_trainer_and_learns_the_mix(tiny_forecaster):
    from genloom.timeseries.zeroshot import pretrain

    model = tiny_forecaster()
    t = np.arange(200.0)
    pool = [np.sin(2 * np.pi * (t + s) / 12) * 3 + s for s in range(6)]
    losses = pretrain(model, steps=80, batch_size=16, lr=3e-3, pred_len=8, pool=pool, log=None)
    assert len(losses) == 80 and not model.training
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_shipped_preset_loads_through_the_core_zoo_with_core_key_names():
    import genloom.timeseries as gts
    from genloom.core.nn import Transformer
    from genloom.core.zoo import from_pretrained

    model = from_pretrained("tiny-tokenized-ar")
    assert isinstance(model, TokenizedARForecaster) and isinstance(model.decoder, Transformer)
    assert "decoder.layers.0.attn.wqkv.weight" in model.state_dict()
    again = gts.load("tiny-tokenized-ar")
    context = np.cos(np.arange(80) / 4.0) * 3 + 7
    np.testing.assert_array_equal(
        model.forecast(context, 6, num_samples=4, seed=2).samples,
        again.forecast(context, 6, num_samples=4, seed=2).samples,
    )


def test_save_and_load_round_trip_and_a_broken_folder(tmp_path, tiny_forecaster):
    from genloom.core.errors import GenloomError
    from genloom.timeseries.pretrained import load_forecaster, save_forecaster

    model = tiny_forecaster()
    save_forecaster(model, tmp_path / "m", preset={"name": "m"})
    again = load_forecaster(tmp_path / "m")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    (tmp_path / "m" / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GenloomError, match="model.safetensors"):
        load_forecaster(tmp_path / "m")
    with pytest.raises(GenloomError, match="not a forecaster folder"):
        load_forecaster(tmp_path)
