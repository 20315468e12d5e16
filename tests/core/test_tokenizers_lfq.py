"""LFQ / binary spherical quantisation: bit indices, entropy terms, spherical codes."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.core.tokenizers import LFQ, BinarySphericalQuantizer


def test_index_is_the_sign_pattern_read_as_bits_msb_first():
    q = LFQ(codebook_dim=3)
    out = q(torch.tensor([[0.4, -2.0, 1.0], [-0.1, -0.2, -0.3], [1.0, 1.0, 1.0]]))
    assert out.indices.tolist() == [0b101, 0, 0b111]
    torch.testing.assert_close(out.codes[0], torch.tensor([1.0, -1.0, 1.0]))
    torch.testing.assert_close(q.indices_to_codes(torch.tensor(6)), torch.tensor([1.0, 1.0, -1.0]))


def test_factorized_per_sample_entropy_equals_exact_and_codebook_entropy_bounds_it():
    z = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 0.02
    exact = LFQ(codebook_dim=5, entropy_mode="exact").entropy_terms(z)
    factorized = LFQ(codebook_dim=5, entropy_mode="factorized").entropy_terms(z)
    torch.testing.assert_close(exact[0], factorized[0], rtol=1e-4, atol=1e-5)
    assert factorized[1] >= exact[1] - 1e-5
    assert exact[1] <= 5 * math.log(2) + 1e-5


def test_entropy_terms_at_the_extremes():
    q = LFQ(codebook_dim=4, entropy_mode="exact")
    collapsed = torch.ones(32, 4)  # one confident code for everything
    per_sample, codebook = q.entropy_terms(collapsed)
    assert per_sample < 1e-3 and codebook < 1e-3
    all_codes = q.implicit_codebook()  # every code once, confidently
    per_sample, codebook = q.entropy_terms(all_codes)
    assert per_sample < 1e-3
    torch.testing.assert_close(codebook, torch.tensor(4 * math.log(2)), rtol=1e-4, atol=1e-4)


def test_entropy_penalty_spreads_codes_under_training():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 4)
    q = LFQ(codebook_dim=4, entropy_weight=1.0, commitment_weight=0.0, inv_temperature=1.0)
    x = torch.randn(256, 6)
    with torch.no_grad():  # start collapsed: every input maps to code 15
        encoder.weight.mul_(0.1)
        encoder.bias.fill_(1.0)
    assert q(encoder(x)).indices.unique().numel() == 1
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.05)
    for _ in range(150):
        loss = q(encoder(x)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert q(encoder(x)).indices.unique().numel() >= 12


def test_binary_spherical_codes_have_unit_norm():
    q = BinarySphericalQuantizer(codebook_dim=9)
    out = q(torch.randn(10, 9))
    torch.testing.assert_close(out.codes.norm(dim=-1), torch.ones(10))
    assert q.entropy_mode == "factorized" and q.codebook_size == 512


def test_invalid_configuration():
    with pytest.raises(ValueError, match="entropy_mode"):
        LFQ(codebook_dim=4, entropy_mode="approx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codebook_dim"):
        LFQ(codebook_dim=0)
