"""Official tokenizers (LlamaGen VQ, VAR VQVAE, MAR KL) converted into ours reproduce their recorded outputs.

The fixtures in ../shared/parity/{llamagen,var,mar} hold tiny random-init official models with official key
names; tolerances are those of each folder's README (float atol 1e-4, integer ids exact).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genloom.image.convert import load_llamagen_vq, load_mar_kl, load_var_vqvae

pytestmark = pytest.mark.parity
ATOL = 1e-4


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@torch.no_grad()
def test_llamagen_vq_encode_decode(parity_dir) -> None:
    folder = parity_dir("llamagen")
    cases = load_file(folder / "cases.safetensors")
    model = load_llamagen_vq(folder / "vq.safetensors")
    assert model.config.codebook_size == 64 and model.config.net.ch_mult == [1, 1]
    h = model.encode_features(cases["vq.img"])
    _close(h, cases["vq.h_pre_quant"])
    quantized = model.quantize(h)
    _close(quantized.codes, cases["vq.quant"])
    assert torch.equal(quantized.indices.flatten(), cases["vq.indices"])
    assert torch.equal(model.encode(cases["vq.img"]).flatten(), cases["vq.indices"])
    _close(model.decode_codes(quantized.codes), cases["vq.decoded"])
    _close(model.decode(cases["vq.indices"].view(2, 4, 4)), cases["vq.decoded_from_code"])


@torch.no_grad()
def test_var_vqvae_multiscale_encode_decode(parity_dir) -> None:
    folder = parity_dir("var")
    cases = load_file(folder / "cases.safetensors")
    patch_nums = json.loads((folder / "config.json").read_text())["VQVAE"]["v_patch_nums"]
    model = load_var_vqvae(folder / "vqvae.safetensors", patch_nums=patch_nums)
    assert model.config.share_quant_resi == 4 and model.config.quant_conv_kernel == 3
    f = model.encode_features(cases["img_B3HW"])
    _close(f, cases["f_BChw"])
    indices, f_hats = model.quantize.quantize_scales(f)
    for si, idx in enumerate(indices):
        assert torch.equal(idx, cases[f"idx_Bl.{si}"]), f"scale {si}"
    _close(f_hats[-1], cases["f_hat_BChw"])
    assert torch.equal(model.encode(cases["img_B3HW"]), torch.cat(indices, dim=1))
    _close(model.quantize.idxBl_to_var_input(indices), cases["x_BLCv_wo_first_l"])
    _close(model.decode(indices), cases["img_from_idx_B3HW"])
    _close(model.fhat_to_image(cases["f_hat_BChw"]), cases["img_from_fhat_B3HW"])
    _close(torch.stack(model.decode_per_scale(indices)), cases["img_rec_per_scale_B3HW.all"])


@torch.no_grad()
def test_mar_kl_autoencoder_posterior_and_decode(parity_dir) -> None:
    folder = parity_dir("mar")
    cases = load_file(folder / "cases.safetensors")
    model = load_mar_kl(folder / "vae.safetensors")
    assert model.config.embed_dim == 16 and model.config.net.attn_levels == []
    posterior = model.encode(cases["vae.img"])
    _close(posterior.mean, cases["vae.posterior_mean"])
    _close(posterior.logvar, cases["vae.posterior_logvar"])
    _close(posterior.std, cases["vae.posterior_std"])
    _close(model.decode(cases["vae.latent"]), cases["vae.decoded"])
    _close(model.decode(cases["vae.posterior_mean"]), cases["vae.decoded_from_mean"])
