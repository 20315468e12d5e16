"""MaskedAutoregressive (MAR): training lowers the diffusion loss, sampling is seeded and fills every token."""

from __future__ import annotations

import pytest
import torch

from genloom.image.errors import ImageInputError, UnknownClassError
from genloom.image.models.masked_autoregressive import MARConfig, MaskedAutoregressive, vit_config


def _tiny() -> MaskedAutoregressive:
    config = MARConfig(
        encoder=vit_config(dim=32, depth=1, n_heads=2), decoder=vit_config(dim=32, depth=1, n_heads=2),
        num_classes=3, token_dim=4, vae_channels=4, grid=(3, 3), buffer_size=2, diffusion_width=32,
        diffusion_depth=2, diffusion_steps=10, diffusion_batch_mul=2,
    )  # fmt: skip
    return MaskedAutoregressive(config)


def test_training_lowers_the_diffusion_loss_on_class_dependent_tokens() -> None:
    torch.manual_seed(0)
    model = _tiny()
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
