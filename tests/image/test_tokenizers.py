"""Image tokenizers: training beats a baseline, save/load round-trips, converters read other configurations
and pickled official files safely, and bad input gets a clear error."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from genloom.core.errors import UnsafeCheckpointError
from genloom.image.convert import convert_llamagen_vq, convert_mar_kl, convert_var_vqvae, load_llamagen_vq
from genloom.image.data import load_dataset
from genloom.image.errors import CheckpointError, ImageInputError
from genloom.image.tokenizer_training import TokenizerTrainConfig, evaluate_tokenizer, train_tokenizer
from genloom.image.tokenizers import (
    ConvNetConfig,
    KLAutoencoder,
    KLAutoencoderConfig,
    MultiScaleVQAutoencoder,
    MultiScaleVQAutoencoderConfig,
    VQAutoencoder,
    VQAutoencoderConfig,
)


def _tiny_vq(**kw) -> VQAutoencoder:
    net = ConvNetConfig(
        in_channels=1,
        out_channels=1,
        ch=16,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_levels=[2],
        z_channels=16,
    )
    return VQAutoencoder(VQAutoencoderConfig(net=net, codebook_size=32, codebook_dim=8, **kw))


def test_trained_vq_tokenizer_beats_the_mean_image_baseline() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = _tiny_vq(dead_code_after=10)
    baseline = (test.images[:128] - train.images.mean(0)).square().mean().item()
    before = evaluate_tokenizer(model, test.images[:128]).mse
    config = TokenizerTrainConfig(
        steps=40, batch_size=16, lr=2e-3, warmup_steps=5, log_every=20, eval_images=128
    )
    report = train_tokenizer(model, train, held_out=test, config=config, log=lambda _: None)
    final = report.final
    assert [m.step for m in report.history] == [20, 40]
    assert final.mse < 0.6 * baseline < before
    assert final.codebook_usage is not None and final.codebook_usage > 0.5
    assert final.dead_codes_restarted >= 0 and final.perplexity > 4


@pytest.mark.parametrize("kind", ["vq", "multiscale", "kl"])
def test_save_load_round_trip_keeps_outputs(tmp_path, kind: str) -> None:
    net = ConvNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=[1], z_channels=8)
    if kind == "vq":
        model = VQAutoencoder(VQAutoencoderConfig(net=net, codebook_size=16, codebook_dim=4))
    elif kind == "multiscale":
        model = MultiScaleVQAutoencoder(
            MultiScaleVQAutoencoderConfig(net=net, codebook_size=16, patch_nums=(1, 2, 4))
        )
    else:
        net.double_z = True
        model = KLAutoencoder(KLAutoencoderConfig(net=net, embed_dim=4))
    model.eval()
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    model.save_pretrained(tmp_path / kind)
    loaded = type(model).from_pretrained(tmp_path / kind)
    with torch.no_grad():
        if kind == "kl":
            expected, got = model.encode(images).mean, loaded.encode(images).mean
        else:
            expected, got = model.decode(model.encode(images)), loaded.decode(loaded.encode(images))
    # fp16 storage: outputs agree to half precision
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=0)


def _to_llamagen_names(state: dict[str, torch.Tensor], n_levels: int) -> dict[str, torch.Tensor]:
    """Rename our VQAutoencoder keys into LlamaGen's official ones (the inverse the converter must undo)."""
    out = {}
    for key, value in state.items():
        if key in ("quantize.train_steps", "quantize.last_used_step"):
            continue
        key = re.sub(r"mid\.block_1\.", "mid.0.", key)
        key = re.sub(r"mid\.attn_1\.", "mid.1.", key)
        key = re.sub(r"mid\.block_2\.", "mid.2.", key)
        key = re.sub(
            r"^decoder\.levels\.(\d+)\.",
            lambda m: f"decoder.conv_blocks.{n_levels - 1 - int(m.group(1))}.",
            key,
        )
        key = re.sub(r"^encoder\.levels\.(\d+)\.", r"encoder.conv_blocks.\1.", key)
        key = key.replace(".blocks.", ".res.").replace(".attns.", ".attn.")
        key = key.replace("encoder.conv_blocks", "E").replace(".resample.conv.", "._resample.")
        key = re.sub(r"^E\.(\d+)\._resample\.", r"encoder.conv_blocks.\1.downsample.conv.", key)
        key = re.sub(
            r"^decoder\.conv_blocks\.(\d+)\._resample\.", r"decoder.conv_blocks.\1.upsample.conv.", key
        )
        out[key.replace("E.", "encoder.conv_blocks.")] = value
    out["quantize.codebook_used"] = torch.zeros(65536)
    return out


def test_llamagen_converter_reads_another_configuration_from_a_pickled_file(tmp_path) -> None:
    torch.manual_seed(1)
    net = ConvNetConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_levels=[2], z_channels=16)
    ours = VQAutoencoder(VQAutoencoderConfig(net=net, codebook_size=24, codebook_dim=4)).eval()
    official = _to_llamagen_names(ours.state_dict(), n_levels=3)
    assert (
        "encoder.conv_blocks.0.downsample.conv.weight" in official
        and "decoder.conv_blocks.0.attn.0.q.weight" in official
    )
    # official training checkpoints pickle extra objects beside the weights (here an argparse Namespace)
    path = tmp_path / "vq_ds4_c2i.pt"
    torch.save({"model": official, "args": argparse.Namespace(lr=1e-4), "steps": 5}, path)
    converted = load_llamagen_vq(path)
    assert converted.config.net.ch_mult == [1, 2, 2] and converted.config.net.attn_levels == [2]
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(converted.encode(images), ours.encode(images))
        torch.testing.assert_close(converted.decode(ours.encode(images)), ours.decode(ours.encode(images)))


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_that_would_run_code_are_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError):
        load_llamagen_vq(path)


def test_converters_reject_checkpoints_of_another_family() -> None:
    net = ConvNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=[], z_channels=8, double_z=True)
    kl_state = KLAutoencoder(KLAutoencoderConfig(net=net, embed_dim=4)).state_dict()
    with pytest.raises(CheckpointError, match="quantize.embedding.weight"):
        convert_var_vqvae(kl_state, patch_nums=(1, 2, 4))
    with pytest.raises(CheckpointError):
        convert_llamagen_vq({"transformer.wte.weight": torch.zeros(4, 4)})
    net.double_z = False
    vq_state = MultiScaleVQAutoencoder(
        MultiScaleVQAutoencoderConfig(net=net, codebook_size=8, patch_nums=(1, 2, 4))
    ).state_dict()
    with pytest.raises(CheckpointError, match="mean and log-variance|unexpected keys"):
        convert_mar_kl(vq_state)
    with pytest.raises(CheckpointError, match="3 scales"):
        convert_var_vqvae(vq_state, patch_nums=(1, 2, 3, 4))


def test_bad_images_get_clear_errors() -> None:
    model = _tiny_vq()
    with pytest.raises(ImageInputError, match="expects 1 channels, got 3"):
        model.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ImageInputError, match="divisible by 4"):
        model.encode(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ImageInputError, match="float tensor"):
        model.encode(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ImageInputError, match=r"\(B, h, w\)"):
        model.decode(torch.zeros(1, 64, dtype=torch.long))


def test_latent_scale_calibration_gives_unit_variance_tokens() -> None:
    from genloom.image.tokenizer_training import calibrate_latent_scale

    net = ConvNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_levels=[], z_channels=4, double_z=True)
    model = KLAutoencoder(KLAutoencoderConfig(net=net, embed_dim=4)).eval()
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    scale = calibrate_latent_scale(model, images)
    assert scale == model.config.scale_factor and scale > 0
    tokens = model.encode_tokens(images)
    assert tokens.std().item() == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(model.decode_tokens(tokens), model.decode(tokens / scale).clamp(-1, 1))


@pytest.mark.parametrize("kind", ["multiscale", "kl"])
def test_every_tokenizer_kind_trains_with_the_patch_gan(kind: str) -> None:
    net = ConvNetConfig(
        in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_levels=[], z_channels=8
    )
    if kind == "multiscale":
        model = MultiScaleVQAutoencoder(
            MultiScaleVQAutoencoderConfig(net=net, codebook_size=16, patch_nums=(1, 2, 4, 8, 16))
        )
    else:
        net.double_z = True
        model = KLAutoencoder(KLAutoencoderConfig(net=net, embed_dim=4))
    data = load_dataset("digits", "test")
    before = evaluate_tokenizer(model, data.images[:64]).mse
    config = TokenizerTrainConfig(
        steps=8,
        batch_size=16,
        lr=2e-3,
        warmup_steps=2,
        gan_weight=0.1,
        gan_start_step=4,
        log_every=8,
        eval_images=64,
    )
    final = train_tokenizer(model, data, config=config, log=lambda _: None).final
    assert final.mse < before
    assert (final.codebook_usage is None) == (kind == "kl")
