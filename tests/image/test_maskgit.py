"""MaskGIT: learns class -> token grid and decodes it from all-[MASK] in a few parallel steps."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.errors import ImageInputError
from genloom.image.models.masked_tokens import MaskGIT, MaskGITConfig, maskgit_transformer_config


def _tiny() -> MaskGIT:
    tcfg = maskgit_transformer_config(dim=64, n_layers=2, n_heads=4, codebook_size=16, num_tokens=9)
    return MaskGIT(MaskGITConfig(transformer=tcfg, num_classes=4, grid=(3, 3)))


def test_trained_model_decodes_each_class_grid_in_few_steps() -> None:
    torch.manual_seed(0)
    model = _tiny()
    labels = torch.arange(4).repeat(16)
    targets = (labels.view(-1, 1) * 3 + torch.arange(9).view(1, -1)) % 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        loss = model.loss(labels, targets, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert loss.item() < 0.3
    out = model.generate(
        torch.arange(4),
        steps=4,
        cfg_scale=2.0,
        sampling=SamplingParams(top_k=2),
        generator=torch.Generator().manual_seed(0),
    )
    assert (out == targets[:4]).float().mean() > 0.9
    assert (out < 16).all()  # no [MASK] left


def test_mask_id_range_is_checked() -> None:
    model = _tiny().eval()
    with pytest.raises(ImageInputError, match=r"\[0, 16\]"):
        model(torch.tensor([0]), torch.full((1, 9), 17))
    with pytest.raises(ValueError, match="cfg_scale"):
        model.generate(torch.tensor([0]), cfg_scale=-0.5)
