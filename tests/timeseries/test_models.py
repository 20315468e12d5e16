"""Model construction on other configurations, state-dict round trips and loader errors (no fixtures)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from genloom.timeseries.errors import CheckpointError, SeriesInputError
from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.gpht import GPHT, GPHTConfig
from genloom.timeseries.models.official import BASELINES, build_baseline, load_official

SMALL = dict(
    seq_len=48,
    label_len=24,
    pred_len=12,
    enc_in=3,
    dec_in=3,
    c_out=3,
    d_model=16,
    n_heads=2,
    d_ff=16,
    e_layers=2,
    d_layers=1,
    moving_avg=13,
    factor=3,
)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("embed", ["timeF", "fixed"])
def test_baselines_round_trip_through_an_official_style_folder(tmp_path, name, embed):
    config = TSLibConfig(**SMALL, embed=embed, patch_len=8, stride=4, individual=True)
    model = build_baseline(name, config).eval()
    x = torch.randn(2, 48, 3)
    marks_enc = torch.randint(0, 7, (2, 48, 4)).float() if embed == "fixed" else torch.rand(2, 48, 4) - 0.5
    marks_dec = torch.randint(0, 7, (2, 36, 4)).float() if embed == "fixed" else torch.rand(2, 36, 4) - 0.5
    x_dec = torch.cat([x[:, -24:], torch.zeros(2, 12, 3)], dim=1)
    torch.manual_seed(1)
    ref = model(x, marks_enc, x_dec, marks_dec)
    assert ref.shape == (2, 12, 3) and torch.isfinite(ref).all()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    names = {
        "dlinear": "DLinear",
        "patchtst": "PatchTST",
        "itransformer": "iTransformer",
        "informer": "Informer",
        "autoformer": "Autoformer",
    }
    (tmp_path / "config.json").write_text(
        json.dumps({**config.to_dict(), "_model_class": f"models/{names[name]}.py::Model"})
    )
    again = load_official(tmp_path)
    torch.manual_seed(1)
    torch.testing.assert_close(again(x, marks_enc, x_dec, marks_dec), ref)


def test_loader_names_the_mismatched_keys(tmp_path):
    config = TSLibConfig(**SMALL)
    model = build_baseline("dlinear", config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("Linear_Trend")}
    state["Linear_Seasonal.weight"] = torch.zeros(5, 5)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**config.to_dict(), "model": "DLinear"}))
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \['Linear_Trend.bias', 'Linear_Trend.weight'\].*"
        r"Linear_Seasonal.weight: checkpoint \(5, 5\) vs model \(12, 48\)",
    ):
        load_official(tmp_path)
    with pytest.raises(CheckpointError, match="expected config.json"):
        load_official(tmp_path / "nowhere")


def test_gpht_other_config_and_input_checks():
    model = GPHT(
        GPHTConfig(
            seq_len=32,
            token_len=8,
            GT_pooling_rate=[4, 2, 1],
            depth=3,
            GT_d_model=16,
            GT_d_ff=16,
            GT_e_layers=1,
            n_heads=2,
        )
    ).eval()
    x = torch.randn(2, 32, 3)
    full = model(x)
    assert full.shape == (2, 32, 3)
    # causality: the prediction made at token 1 does not depend on later inputs
    # instance normalisation sees the whole window, so check causality on one level's normalised input
    level0 = model.encoders[0]
    z = (x - x.mean(1, keepdim=True)).permute(0, 2, 1).reshape(6, 32)
    z2 = z.clone()
    z2[:, 16:] += 1.0
    torch.testing.assert_close(level0(z)[:, :16], level0(z2)[:, :16])
    assert model.forecast(x, 20).shape == (2, 20, 3)
    with pytest.raises(SeriesInputError, match="divisible by token_len 8"):
        model(torch.randn(1, 30, 1))


def test_official_pth_checkpoint_is_converted_without_unpickling_code(tmp_path):
    from genloom.timeseries.models.official import convert_official_checkpoint

    config = TSLibConfig(**SMALL)
    model = build_baseline("patchtst", config).eval()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "checkpoint.pth")
    out = convert_official_checkpoint(
        tmp_path / "checkpoint.pth", {**config.to_dict(), "model": "PatchTST"}, tmp_path / "converted"
    )
    x = torch.randn(2, 48, 3)
    torch.testing.assert_close(load_official(out)(x), model(x))
    torch.save({"weights": object()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a plain state_dict"):
        convert_official_checkpoint(tmp_path / "evil.pth", config.to_dict(), tmp_path / "x")


def test_constructor_keywords_come_from_constructor_kwargs_not_the_namespace():
    # TSLib's PatchTST/DLinear read patch_len, stride, individual from constructor keywords only
    plain = TSLibConfig.from_dict({"patch_len": 4, "stride": 2, "individual": True, "seq_len": 48})
    assert (plain.patch_len, plain.stride, plain.individual) == (16, 8, False)
    explicit = TSLibConfig.from_dict({"seq_len": 48, "_constructor_kwargs": {"patch_len": 4, "stride": 2}})
    assert (explicit.patch_len, explicit.stride) == (4, 2)
    assert TSLibConfig.from_dict(explicit.to_dict()) == explicit
    with pytest.raises(CheckpointError, match="unknown config field"):
        TSLibConfig.from_dict({}, d_modle=8)
