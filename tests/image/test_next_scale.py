"""NextScaleAR (VAR): learns class -> multi-scale token maps and samples them back scale by scale."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.core.tokenizers.multiscale_vq import MultiScaleResidualVQ
from genloom.image.errors import ImageInputError, UnknownClassError
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig, var_transformer_config


def _tiny(patch_nums=(1, 2, 3)) -> NextScaleAR:
    tcfg = var_transformer_config(dim=64, depth=2, n_heads=2, vocab_size=16, patch_nums=patch_nums)
    return NextScaleAR(
        NextScaleConfig(
            transformer=tcfg.to_dict(), num_classes=3, patch_nums=list(patch_nums), codebook_dim=8
        )
    )


def test_trained_model_generates_each_class_tokens_and_cache_matches_teacher_forcing() -> None:
    torch.manual_seed(0)
    quantizer = MultiScaleResidualVQ(dim=8, codebook_size=16, patch_nums=[1, 2, 3]).eval()
    model = _tiny()
    labels = torch.arange(3).repeat(12)
    targets = (labels.view(-1, 1) * 5 + torch.arange(14).view(1, -1)) % 16  # L = 1 + 4 + 9 = 14
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model.loss(labels, targets, quantizer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert loss.item() < 0.3
    wanted = torch.tensor([0, 1, 2])
    ids = model.generate(wanted, quantizer, cfg_scale=1.0, sampling=SamplingParams(temperature=0))
    assert torch.equal(ids, targets[:3])
    parts = list(targets[:3].split([1, 4, 9], dim=1))
    raws, _ = model.decode_logits(wanted, parts, quantizer, cfg_scale=0.0)
    teacher = model(wanted, quantizer.idxBl_to_var_input(targets[:3]))
    torch.testing.assert_close(torch.cat([r[:3] for r in raws], dim=1), teacher, atol=1e-4, rtol=0)


def test_wrong_quantizer_and_labels_are_clear_errors() -> None:
    model = _tiny().eval()
    with pytest.raises(ImageInputError, match="patch_nums"):
        model.generate(torch.tensor([0]), MultiScaleResidualVQ(dim=8, codebook_size=16, patch_nums=[1, 2, 4]))
    with pytest.raises(UnknownClassError, match="0..2"):
        model.generate(torch.tensor([5]), MultiScaleResidualVQ(dim=8, codebook_size=16, patch_nums=[1, 2, 3]))
