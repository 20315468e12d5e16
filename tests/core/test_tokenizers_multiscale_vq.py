"""MultiScaleResidualVQ (VAR): Phi sharing, teacher-forcing vs incremental inputs, and parity with VAR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genloom.core.tokenizers import MultiScaleResidualVQ, TokenIndexError, TokenizerInputError

SHARED = Path(os.environ.get("GENLOOM_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
VAR_DIR = SHARED / "parity" / "var"


def smooth_features(batch: int, dim: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, dim, 3, 3, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic") + 0.3 * torch.randn(
        batch, dim, size, size, generator=gen
    )


def random_msvq(**kwargs) -> MultiScaleResidualVQ:
    torch.manual_seed(0)
    q = MultiScaleResidualVQ(dim=4, codebook_size=256, **kwargs).eval()
    torch.nn.init.normal_(q.embedding.weight)
    return q


@pytest.mark.parametrize("quant_resi", [0.0, 0.5])
def test_reconstruction_improves_with_every_scale(quant_resi):
    q = random_msvq(patch_nums=(1, 2, 3, 4, 6, 8), quant_resi=quant_resi)
    f = smooth_features(4, 4, 8)
    indices, f_hats = q.quantize_scales(f)
    errors = [F.mse_loss(f_hat, f).item() for f_hat in f_hats]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.15 * errors[0]
    per_scale = q.indices_to_codes(indices, per_scale=True)
    for a, b in zip(per_scale, f_hats):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_teacher_forcing_input_matches_the_incremental_sampling_path():
    q = random_msvq(patch_nums=(1, 2, 3, 5, 8))
    indices = q.encode(smooth_features(2, 4, 8))
    teacher = q.idxBl_to_var_input(indices)
    assert teacher.shape == (2, q.num_tokens - 1, 4)

    parts = q.split_scales(indices)
    f_hat = torch.zeros(2, 4, 8, 8)
    pieces = []
    for si, (h, w) in enumerate(q.scale_sizes):
        h_map = q.embedding(parts[si]).transpose(1, 2).reshape(2, 4, h, w)
        f_hat, next_input = q.get_next_autoregressive_input(si, q.num_scales, f_hat, h_map)
        if si < q.num_scales - 1:
            pieces.append(next_input.flatten(2).transpose(1, 2))
    torch.testing.assert_close(torch.cat(pieces, dim=1), teacher, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(f_hat, q.indices_to_codes(indices), atol=1e-6, rtol=1e-6)


def test_phi_selection_and_state_dict_layouts():
    partial = MultiScaleResidualVQ(dim=4, codebook_size=8, share_quant_resi=4)  # VAR default, 10 scales
    chosen = [list(partial.quant_resi.qresi_ls).index(partial.phi(si)) for si in range(10)]
    # ticks 1/12 + k*5/18; scales 2 and 7 sit exactly between two ticks and float64 rounding of
    # numpy's linspace (what VAR uses) sends them to the later / later tick.
    assert chosen == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert "quant_resi.qresi_ls.3.weight" in partial.state_dict()

    shared = MultiScaleResidualVQ(dim=4, codebook_size=8, share_quant_resi=1)
    assert all(shared.phi(si) is shared.quant_resi.qresi for si in range(10))
    assert "quant_resi.qresi.weight" in shared.state_dict()

    separate = MultiScaleResidualVQ(dim=4, codebook_size=8, share_quant_resi=0, patch_nums=(1, 2, 4))
    assert [separate.phi(si) for si in range(3)] == list(separate.quant_resi)
    assert "quant_resi.2.bias" in separate.state_dict()

    plain = MultiScaleResidualVQ(dim=4, codebook_size=8, quant_resi=0.0)
    assert not any(k.startswith("quant_resi") for k in plain.state_dict())


def test_phi_blends_input_and_conv():
    q = MultiScaleResidualVQ(dim=3, codebook_size=8, patch_nums=(1, 2), share_quant_resi=1, quant_resi=0.25)
    phi = q.quant_resi.qresi
    h = torch.randn(2, 3, 2, 2)
    expected = 0.75 * h + 0.25 * F.conv2d(h, phi.weight, phi.bias, padding=1)
    torch.testing.assert_close(phi(h), expected)


def test_training_loss_reaches_codebook_phi_and_input():
    q = random_msvq(patch_nums=(1, 2, 4)).train()
    f = smooth_features(2, 4, 4).requires_grad_(True)
    out = q(f)
    out.loss.backward()
    assert q.embedding.weight.grad.abs().sum() > 0
    used_phis = {q.phi(si) for si in range(q.num_scales)}
    assert len(used_phis) == 3  # 3 scales pick 3 of the 4 shared convs
    for phi in q.quant_resi.qresi_ls:
        has_grad = phi.weight.grad is not None and phi.weight.grad.abs().sum() > 0
        assert has_grad == (phi in used_phis)
    assert f.grad.abs().sum() > 0
    assert q.ema_vocab_hit_SV.sum() > 0 and 0 < out.metrics["codebook_usage"] <= 1


def test_bad_inputs():
    q = random_msvq(patch_nums=(1, 2, 4))
    with pytest.raises(TokenizerInputError, match="last patch size"):
        q(torch.randn(1, 4, 5, 5))
    with pytest.raises(TokenIndexError, match="expects indices"):
        q.indices_to_codes(torch.zeros(1, 20, dtype=torch.long))
    with pytest.raises(TokenIndexError, match="scale 1"):
        q.indices_to_codes([torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)])


# ----------------------------------------------------------------------------------------------------
# Dead-code restart (`dead_code_after`, the plain VQ's `restart_idle_codes`; not in VAR).


def collapsed_msvq(**kwargs) -> MultiScaleResidualVQ:
    """16 codes of which only code 0 (the origin) lies near small features: codes 1..15 are never picked."""
    q = MultiScaleResidualVQ(dim=4, codebook_size=16, patch_nums=(1, 2, 4), quant_resi=0.0, **kwargs)
    q.embedding.weight.data.copy_(torch.full((16, 4), 100.0) * torch.arange(16.0)[:, None])
    return q


def scale_residuals(q: MultiScaleResidualVQ, f: torch.Tensor) -> torch.Tensor:
    """Every vector the scales look up for `f` [N, dim]: each scale's residual at its size."""
    _, f_hats = q.quantize_scales(f)
    before = [torch.zeros_like(f), *f_hats[:-1]]
    rows = [
        F.interpolate(f - f_hat, size=size, mode="area").permute(0, 2, 3, 1).reshape(-1, q.dim)
        for size, f_hat in zip(q.scale_sizes, before)
    ]
    return torch.cat(rows)


def test_dead_codes_are_restarted_with_scale_residuals_and_live_codes_kept():
    torch.manual_seed(0)
    q = collapsed_msvq(dead_code_after=2).train()
    f = 0.1 * smooth_features(2, 4, 4)
    start = q.embedding.weight.detach().clone()
    q(f)
    assert torch.equal(q.embedding.weight, start) and int(q.codes_restarted) == 0  # idle 1 step: kept
    candidates = scale_residuals(q, f)
    q(f)  # codes 1..15 have now been idle for 2 steps
    weight = q.embedding.weight.detach()
    assert torch.equal(weight[0], start[0])  # the live code is untouched
    gap = (weight[1:, None] - candidates[None]).abs().amax(dim=-1).min(dim=1).values
    assert (gap < 1e-6).all()  # every restarted code is one of the looked-up residuals
    assert len({tuple(row.tolist()) for row in weight[1:]}) == 15  # drawn without replacement
    assert int(q.codes_restarted) == 15 and q.last_used_step.tolist() == [2] * 16
    q(f)  # a fresh grace period: nothing restarts one step later
    assert int(q.codes_restarted) == 15 and torch.equal(q.embedding.weight, weight)


def test_restart_leaves_the_step_outputs_alone_and_is_off_by_default():
    f = 0.1 * smooth_features(2, 4, 4)
    plain, restarting = collapsed_msvq().train(), collapsed_msvq(dead_code_after=1).train()
    a, b = plain(f), restarting(f)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.codes, b.codes) and torch.equal(a.loss, b.loss)
    assert int(restarting.codes_restarted) == 15 and int(plain.codes_restarted) == 0
    assert torch.equal(plain.embedding.weight, collapsed_msvq().embedding.weight)
    with pytest.raises(ValueError, match="dead_code_after"):
        MultiScaleResidualVQ(dim=4, codebook_size=8, dead_code_after=0)


def test_eval_mode_never_restarts():
    q = collapsed_msvq(dead_code_after=1).eval()
    start = q.embedding.weight.detach().clone()
    f = 0.1 * smooth_features(2, 4, 4)
    for _ in range(3):
        q(f)
        q.encode(f)
    q.train().quantize_scales(f)  # the inference lookup never restarts either
    assert torch.equal(q.embedding.weight, start)
    assert int(q.train_steps) == 0 and int(q.codes_restarted) == 0


def test_restart_state_is_not_saved_and_the_state_dict_round_trips():
    """Non-persistent by design: the state dict keeps VAR's layout (official checkpoints load strictly);
    a reloaded quantizer starts every code with a fresh grace period."""
    q = collapsed_msvq(dead_code_after=2).train()
    f = 0.1 * smooth_features(2, 4, 4)
    for _ in range(2):
        q(f)
    state = q.state_dict()
    assert set(state) == set(collapsed_msvq().state_dict())
    assert not {"train_steps", "last_used_step", "codes_restarted"} & set(state)
    fresh = collapsed_msvq(dead_code_after=2)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.embedding.weight, q.embedding.weight)
    assert int(fresh.train_steps) == 0 and (fresh.last_used_step == -1).all()
    q.eval(), fresh.eval()
    assert torch.equal(fresh(f).codes, q(f).codes)


# ----------------------------------------------------------------------------------------------------
# Parity with FoundationVision/VAR (tensors from its official quantizer, see ../shared/parity/var).


@pytest.fixture(scope="module")
def var_fixture():
    if not (VAR_DIR / "cases.safetensors").is_file():
        pytest.skip("VAR parity fixture (../shared/parity/var) not present")
    import json

    from safetensors.torch import load_file

    config = json.loads((VAR_DIR / "config.json").read_text())["VQVAE"]
    weights = load_file(str(VAR_DIR / "vqvae.safetensors"))
    q = MultiScaleResidualVQ(
        dim=config["z_channels"],
        codebook_size=config["vocab_size"],
        patch_nums=config["v_patch_nums"],
        share_quant_resi=config["share_quant_resi"],
    ).eval()
    quantizer_weights = {
        k.removeprefix("quantize."): v.float() for k, v in weights.items() if k.startswith("quantize.")
    }
    q.load_state_dict(quantizer_weights, strict=True)
    cases = load_file(str(VAR_DIR / "cases.safetensors"))
    official_indices = [cases[f"idx_Bl.{si}"] for si in range(q.num_scales)]
    return q, cases, official_indices


@pytest.mark.parity
def test_var_parity_feature_to_indices_and_f_hat(var_fixture):
    q, cases, official_indices = var_fixture
    indices, f_hats = q.quantize_scales(cases["f_BChw"])
    for ours, theirs in zip(indices, official_indices):
        assert torch.equal(ours, theirs)
    torch.testing.assert_close(f_hats[-1], cases["f_hat_BChw"], atol=1e-4, rtol=0)
    out = q(cases["f_BChw"])
    assert torch.equal(out.indices, torch.cat(official_indices, dim=1))
    torch.testing.assert_close(out.codes, cases["f_hat_BChw"], atol=1e-4, rtol=0)


@pytest.mark.parity
def test_var_parity_indices_to_teacher_forcing_input_and_f_hat(var_fixture):
    q, cases, official_indices = var_fixture
    with torch.no_grad():
        teacher = q.idxBl_to_var_input(official_indices)
        f_hat = q.indices_to_codes(official_indices)
    torch.testing.assert_close(teacher, cases["x_BLCv_wo_first_l"], atol=1e-4, rtol=0)
    torch.testing.assert_close(f_hat, cases["f_hat_BChw"], atol=1e-4, rtol=0)


@pytest.mark.parity
def test_var_parity_sampled_indices_incremental_path(var_fixture):
    """The cached-inference indices of case (e), replayed through the incremental helper, rebuild the
    same f_hat as the teacher-forcing helper and the decoder input."""
    q, cases, _ = var_fixture
    sampled = [cases[f"infer.idx_Bl.{si}"] for si in range(q.num_scales)]
    with torch.no_grad():
        teacher = q.idxBl_to_var_input(sampled)
        f_hat = torch.zeros(2, q.dim, *q.scale_sizes[-1])
        pieces = []
        for si, (h, w) in enumerate(q.scale_sizes):
            h_map = q.embedding(sampled[si]).transpose(1, 2).reshape(2, q.dim, h, w)
            f_hat, next_input = q.get_next_autoregressive_input(si, q.num_scales, f_hat, h_map)
            if si < q.num_scales - 1:
                pieces.append(next_input.flatten(2).transpose(1, 2))
        torch.testing.assert_close(torch.cat(pieces, dim=1), teacher, atol=1e-6, rtol=0)
        torch.testing.assert_close(f_hat, q.indices_to_codes(sampled), atol=1e-6, rtol=0)
