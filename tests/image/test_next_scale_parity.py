"""VAR converted into NextScaleAR reproduces teacher forcing and cached CFG logits per scale (atol 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genloom.image.convert import load_var, load_var_vqvae

pytestmark = pytest.mark.parity


@torch.no_grad()
def test_var_teacher_forcing_and_cached_cfg_logits(parity_dir) -> None:
    folder = parity_dir("var")
    cases = load_file(folder / "cases.safetensors")
    config = json.loads((folder / "config.json").read_text())
    patch_nums = config["VAR"]["patch_nums"]
    vae = load_var_vqvae(folder / "vqvae.safetensors", patch_nums=patch_nums)
    model = load_var(folder / "var.safetensors", patch_nums=patch_nums)
    close = dict(atol=1e-4, rtol=0)
    torch.testing.assert_close(
        model(cases["label_B"], cases["x_BLCv_wo_first_l"]), cases["logits_BLV"], **close
    )
    indices = [cases[f"infer.idx_Bl.{si}"] for si in range(len(patch_nums))]
    cfg = config["autoregressive_infer_cfg"]["cfg"]
    raws, guided = model.decode_logits(cases["infer.label_B"], indices, vae.quantize, cfg_scale=cfg)
    for si in range(len(patch_nums)):
        torch.testing.assert_close(raws[si], cases[f"infer.raw_logits_2BlV.{si}"], **close)
        torch.testing.assert_close(guided[si], cases[f"infer.cfg_logits_BlV.{si}"], **close)
    image01 = (vae.decode(indices) + 1) / 2
    torch.testing.assert_close(image01, cases["infer.img_B3HW_01"], **close)
