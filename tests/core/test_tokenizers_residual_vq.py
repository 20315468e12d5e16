"""ResidualVQ: coarse-to-fine refinement, quantize dropout, shared codebooks, prefix decoding."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from genloom.core.tokenizers import ResidualVQ, TokenIndexError


def trained_rvq(**kwargs) -> ResidualVQ:
    torch.manual_seed(0)
    q = ResidualVQ(dim=6, num_quantizers=3, codebook_size=16, dead_code_after=5, **kwargs)
    optimizer = torch.optim.Adam(q.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(1)
    q.train()
    for _ in range(120):
        out = q(torch.randn(256, 6, generator=gen))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return q.eval()


def test_every_extra_stage_lowers_the_reconstruction_error():
    q = trained_rvq()
    z = torch.randn(1024, 6, generator=torch.Generator().manual_seed(2))
    indices = q(z).indices
    assert indices.shape == (1024, 3)
    errors = [F.mse_loss(q.indices_to_codes(indices[:, :n]), z).item() for n in (1, 2, 3)]
    assert errors[0] < 0.8 * z.var().item()
    assert errors[1] < 0.8 * errors[0] and errors[2] < 0.8 * errors[1]
    # -1 ids (dropped stages) decode like the prefix
    dropped = indices.clone()
    dropped[:, 2] = -1
    torch.testing.assert_close(q.indices_to_codes(dropped), q.indices_to_codes(indices[:, :2]))


def test_quantize_dropout_keeps_a_random_prefix_in_training_only():
    q = ResidualVQ(dim=4, num_quantizers=5, codebook_size=8, quantize_dropout=True, quantize_dropout_min=2)
    z = torch.randn(3, 7, 4)
    random.seed(0)
    seen = set()
    for _ in range(40):
        out = q.train()(z)
        active = int(out.metrics["active_quantizers"])
        seen.add(active)
        assert (out.indices[..., :active] >= 0).all() and (out.indices[..., active:] == -1).all()
        torch.testing.assert_close(out.codes, q.indices_to_codes(out.indices), atol=1e-5, rtol=1e-5)
    assert seen == {2, 3, 4, 5}
    assert (q.eval()(z).indices >= 0).all()


def test_shared_codebook_has_one_codebook():
    q = ResidualVQ(dim=4, num_quantizers=4, codebook_size=8, shared_codebook=True)
    assert [k for k in q.state_dict() if k.endswith("embedding.weight")] == ["layers.0.embedding.weight"]
    assert all(q.stage(k) is q.stage(0) for k in range(4))
    separate = ResidualVQ(dim=4, num_quantizers=4, codebook_size=8)
    assert len([k for k in separate.state_dict() if k.endswith("embedding.weight")]) == 4


def test_projection_to_codebook_dim():
    q = ResidualVQ(dim=10, num_quantizers=2, codebook_size=8, codebook_dim=3, channel_dim=1)
    out = q(torch.randn(2, 10, 5))
    assert out.codes.shape == (2, 10, 5) and out.indices.shape == (2, 5, 2)
    assert q.stage(0).embedding.weight.shape == (8, 3)


def test_bad_index_layout():
    q = ResidualVQ(dim=4, num_quantizers=2, codebook_size=8)
    with pytest.raises(TokenIndexError, match="trailing stage dim"):
        q.indices_to_codes(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TokenIndexError, match="must lie in"):
        q.indices_to_codes(torch.full((3, 2), -2))
