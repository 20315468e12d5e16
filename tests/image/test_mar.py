"""MaskedAutoregressive (MAR): training lowers the diffusion loss, sampling is seeded and fills every token."""

from __future__ import annotations

import pytest
import torch

from genloom.image.errors import ImageInputError, UnknownClassError
from genloom.image.models.masked_autoregressive import (
    MARConfig,
    MaskedAutoregressive,
    sample_mask_ratio,
    vit_config,
)


def _tiny(prediction: str = "epsilon") -> MaskedAutoregressive:
    config = MARConfig(
        encoder=vit_config(dim=32, depth=1, n_heads=2), decoder=vit_config(dim=32, depth=1, n_heads=2),
        num_classes=3, token_dim=4, vae_channels=4, grid=(3, 3), buffer_size=2, diffusion_width=32,
        diffusion_depth=2, diffusion_steps=10, diffusion_batch_mul=2, diffusion_prediction=prediction,
    )  # fmt: skip
    return MaskedAutoregressive(config)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_training_lowers_the_diffusion_loss_on_class_dependent_tokens(prediction: str) -> None:
    torch.manual_seed(0)
    model = _tiny(prediction)
    assert model.head.train_diffusion.prediction_type == model.head.sampler.prediction_type == prediction
    labels = torch.arange(3).repeat(16)
    tokens = (labels.view(-1, 1, 1).float() - 1.0).expand(-1, 9, 4) + 0.05 * torch.randn(48, 9, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(120):
        loss = model.loss(labels, tokens, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    model.eval()
    sampled = model.generate(
        torch.tensor([0, 2]), num_iter=4, cfg_scale=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert sampled.shape == (2, 9, 4) and torch.isfinite(sampled).all()
    # the learned classes sit at -1 and +1: generated tokens land on the right side
    assert sampled[0].mean() < 0 < sampled[1].mean()
    again = model.generate(
        torch.tensor([0, 2]), num_iter=4, cfg_scale=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(sampled, again)


def test_bad_inputs_are_clear_errors() -> None:
    model = _tiny().eval()
    with pytest.raises(UnknownClassError, match="0..2"):
        model.generate(torch.tensor([3]))
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        model.generate(torch.tensor([0]), cfg_scale=-2.0)
    with pytest.raises(ImageInputError, match=r"\(B, 4, 3, 3\)"):
        model.patchify(torch.zeros(1, 4, 4, 4))


def test_clip_x0_bounds_the_sampled_tokens_and_rejects_bad_values() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    labels = torch.tensor([0, 1, 2])
    free = model.generate(labels, num_iter=3, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    clipped = model.generate(
        labels, num_iter=3, cfg_scale=2.0, clip_x0=0.2, generator=torch.Generator().manual_seed(0)
    )
    # the last DDPM step returns the posterior mean, whose x0 part was clamped to [-0.2, 0.2]
    assert free.abs().max() > 0.5 and clipped.abs().max() < 0.25
    with pytest.raises(ValueError, match="clip_x0 must be > 0"):
        model.generate(labels, num_iter=2, clip_x0=0.0)


def test_mask_ratio_is_mar_truncated_normal_not_a_clamped_one() -> None:
    # MAR: scipy truncnorm((0.7 - 1) / 0.25, 0, loc=1, scale=0.25), mean 1 - 0.25 (phi(-1.2) - phi(0)) /
    # (Phi(0) - Phi(-1.2)) = 0.8670; clamping a normal draw puts half the draws on exactly 1 (mean 0.93)
    generator = torch.Generator().manual_seed(0)
    ratios = torch.tensor([sample_mask_ratio(0.7, generator=generator) for _ in range(4000)])
    assert ratios.min() >= 0.7 and ratios.max() <= 1.0
    assert abs(ratios.mean().item() - 0.8670) < 0.005
    assert (ratios > 0.999).float().mean() < 0.01
    # the loss masks ceil(seq_len * ratio) tokens with such a ratio: rarely all 9 of a 3x3 grid
    model, seen = _tiny(), []
    model.head.loss = lambda target, cond, mask: seen.append(int(mask.sum())) or target.sum() * 0
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        model.loss(torch.zeros(1, dtype=torch.long), torch.zeros(1, 9, 4), generator=generator)
    masked = torch.tensor(seen) // model.config.diffusion_batch_mul
    assert masked.min() >= 7 and (masked == 9).float().mean() < 0.56  # 0.445 expected, clamped: 0.67


def test_weights_start_as_mar_initialises_them() -> None:
    torch.manual_seed(0)
    model = _tiny()
    net = model.head.net
    for layer in [block.modulation[-1] for block in net.blocks] + [
        net.final.modulation[-1],
        net.final.linear,
    ]:
        assert not layer.weight.any() and not layer.bias.any()
    # a zeroed head predicts zero noise and mid-range variance for any input
    out = net(torch.randn(5, 4), torch.tensor([0, 10, 100, 500, 999]), torch.randn(5, 32))
    assert not out.any()
    assert model.class_emb.weight.std() < 0.03  # N(0, 0.02), not nn.Embedding's N(0, 1)
    bound = (6 / (32 + 32)) ** 0.5  # xavier-uniform of the 32 -> 32 decoder_embed
    w = model.decoder_embed.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound and not model.decoder_embed.bias.any()


def test_a_v_head_regresses_v_and_its_samples_follow_a_perfect_v() -> None:
    # the training loss's MSE term is zero for the true v = sqrt(a) eps - sqrt(1 - a) x0 (not for eps)
    head = _tiny("v").head
    x0, noise, t = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 100, 400, 700, 950, 999])
    acp = head.train_diffusion.train_alphas_cumprod[t].float().unsqueeze(1)
    v = acp.sqrt() * noise - (1 - acp).sqrt() * x0
    out = torch.cat([v, torch.zeros_like(v)], dim=1)
    losses = head.train_diffusion.training_losses(out, x0, noise, t)
    assert losses["mse"].abs().max() < 1e-10
    assert (
        head.train_diffusion.training_losses(torch.cat([noise, noise * 0], 1), x0, noise, t)["mse"].mean()
        > 0.5
    )
    # sampling with a network that always answers the v of one fixed token lands on that token
    target = torch.tensor([[2.5, -4.0, 0.5, 7.0]])
    sampler = head.sampler

    def oracle(x, timesteps):
        a = sampler.train_alphas_cumprod[timesteps].float().unsqueeze(1)
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        return torch.cat([a.sqrt() * eps - (1 - a).sqrt() * target, torch.zeros_like(x)], dim=1)

    sampled = sampler.sample(oracle, torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(sampled, target.expand(3, -1), atol=1e-3, rtol=0)
