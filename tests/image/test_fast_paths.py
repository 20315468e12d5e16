"""The GPU fast paths of the image generators give the eager path's tokens: VAR's per-scale CUDA graphs on a
kept cache (batch changes included), LlamaGen-style decoding through the compiled step on a GPU."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.core.tokenizers.multiscale_vq import MultiScaleResidualVQ
from genloom.image.models.masked_tokens import MaskGIT, MaskGITConfig, maskgit_transformer_config
from genloom.image.models.next_scale import NextScaleAR, NextScaleConfig, var_transformer_config
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config


def _var(device: str = "cpu") -> tuple[NextScaleAR, MultiScaleResidualVQ]:
    torch.manual_seed(0)
    patch_nums = (1, 2, 3, 4)
    tcfg = var_transformer_config(dim=64, depth=2, n_heads=2, vocab_size=32, patch_nums=patch_nums)
    model = NextScaleAR(
        NextScaleConfig(
            transformer=tcfg.to_dict(), num_classes=5, patch_nums=list(patch_nums), codebook_dim=8
        )
    )
    quantizer = MultiScaleResidualVQ(dim=8, codebook_size=32, patch_nums=list(patch_nums))
    return model.to(device).eval(), quantizer.to(device).eval()


def _var_both_ways(
    model: NextScaleAR, quantizer: MultiScaleResidualVQ, device: str, compiled: bool | str = False
) -> None:
    params = SamplingParams(temperature=1.0, top_k=10, top_p=0.95)
    for batch in (3, 5, 3):  # a new batch size re-captures; going back must not replay stale graphs
        labels = torch.arange(batch, device=device) % 5
        kwargs = dict(cfg_scale=1.5, sampling=params)
        eager = model.generate(
            labels, quantizer, generator=torch.Generator(device).manual_seed(batch), **kwargs
        )
        fast = model.generate(
            labels,
            quantizer,
            generator=torch.Generator(device).manual_seed(batch),
            graphed=True,
            compiled=compiled,
            **kwargs,
        )
        assert torch.equal(fast, eager)


def test_var_graphed_path_equals_eager_on_cpu() -> None:
    model, quantizer = _var()
    _var_both_ways(model, quantizer, "cpu")


def test_var_returned_fhat_is_the_decoder_input_of_its_ids() -> None:
    # the fast path decodes the sampling loop's own f_hat instead of accumulating the codes again
    model, quantizer = _var()
    labels = torch.tensor([0, 3])
    ids, f_hat = model.generate(
        labels, quantizer, cfg_scale=1.5, generator=torch.Generator().manual_seed(0), return_fhat=True
    )
    again = model.generate(labels, quantizer, cfg_scale=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)
    torch.testing.assert_close(f_hat, quantizer.indices_to_codes(ids), rtol=1e-5, atol=1e-5)
    assert f_hat.abs().sum() > 0


def test_var_compiled_scale_passes_trace_whole_and_equal_eager_on_cpu() -> None:
    # dynamo's "eager" backend traces each scale's pass as one graph (fullgraph would raise on a break)
    # without inductor's CPU code generation; every scale (4 here, 10 in VAR) gets its own graph
    torch._dynamo.reset()
    model, quantizer = _var()
    counts = []

    def counting(gm, example_inputs):  # noqa: ANN001, ANN202
        counts.append(len(example_inputs))
        return gm.forward

    model._compiled["counting"] = torch.compile(
        model._scale_forward, backend=counting, dynamic=False, fullgraph=True
    )
    _var_both_ways(model, quantizer, "cpu", compiled="counting")
    assert len(counts) == 8  # 4 scales x batch sizes 3 and 5; the second batch-3 call compiles nothing


@pytest.mark.gpu
def test_var_compiled_cuda_graphs_equal_eager() -> None:
    model, quantizer = _var("cuda")
    _var_both_ways(model, quantizer, "cuda", compiled=True)  # float32: fused kernels keep every sample
    assert len(model._compiled_graphs["inductor"]) == 4


@pytest.mark.gpu
def test_var_cuda_graphs_equal_eager() -> None:
    model, quantizer = _var("cuda")
    _var_both_ways(model, quantizer, "cuda")
    assert len(model._scale_graphs) == 4  # the last batch size's four scales


@pytest.mark.gpu
def test_raster_ar_compiled_equals_eager_on_gpu() -> None:
    torch.manual_seed(0)
    tcfg = llamagen_transformer_config(dim=64, n_layers=2, n_heads=4, vocab_size=64, grid=(4, 4))
    model = RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=4, grid=(4, 4))).cuda().eval()
    labels = torch.arange(4, device="cuda")
    params = SamplingParams(temperature=1.0, top_k=20)
    eager = model.generate(
        labels, cfg_scale=2.0, sampling=params, generator=torch.Generator("cuda").manual_seed(0)
    )
    fast = model.generate(
        labels,
        cfg_scale=2.0,
        sampling=params,
        generator=torch.Generator("cuda").manual_seed(0),
        compiled=True,
    )
    assert torch.equal(fast, eager)  # float32 weights: the fused kernels keep the argmax of every step


def _maskgit(device: str = "cpu") -> MaskGIT:
    torch.manual_seed(0)
    cfg = maskgit_transformer_config(dim=64, n_layers=2, n_heads=4, codebook_size=32, num_tokens=16)
    return MaskGIT(MaskGITConfig(transformer=cfg, num_classes=5, grid=(4, 4))).to(device).eval()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_maskgit_graphed_passes_give_the_eager_tokens(device: str) -> None:
    model = _maskgit(device)
    for cfg_scale in (1.0, 2.5):
        for batch in (3, 2):
            labels = torch.arange(batch, device=device)
            kwargs = dict(steps=6, cfg_scale=cfg_scale, sampling=SamplingParams(top_k=8))
            eager = model.generate(labels, generator=torch.Generator(device).manual_seed(batch), **kwargs)
            fast = model.generate(
                labels, generator=torch.Generator(device).manual_seed(batch), graphed=True, **kwargs
            )
            assert torch.equal(fast, eager)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [{}, {"channel_sum_norms": False}, {"channels_last": False}])
def test_fast_decode_matches_the_float32_decode_to_bf16_rounding(options: dict) -> None:
    from genloom.image.fast_decode import FastDecode
    from genloom.image.tokenizers.multiscale_autoencoder import (
        MultiScaleVQAutoencoder,
        MultiScaleVQAutoencoderConfig,
    )

    torch.manual_seed(0)
    config = MultiScaleVQAutoencoderConfig(patch_nums=[1, 2, 4], codebook_size=64)
    config.net.ch, config.net.ch_mult = 32, (1, 2)
    vae = MultiScaleVQAutoencoder(config).cuda().eval()
    ids = torch.randint(0, 64, (3, 1 + 4 + 16), device="cuda")
    with torch.no_grad():
        reference = vae.decode(ids)
    fast = FastDecode.for_tokenizer(vae, **options)
    for _ in range(2):  # the second call reuses the compiled decode
        images = fast(ids)
        assert images.dtype == torch.float32 and images.shape == reference.shape
        assert (images - reference).abs().max() < 0.05  # bf16 convolutions over [-1, 1] images
        assert (images - reference).abs().mean() < 0.01
        images = fast(vae.quantize.indices_to_codes(ids), prepared=True)  # from f_hat: the same images
        assert (images - reference).abs().max() < 0.05  # bf16 convolutions over [-1, 1] images
        assert (images - reference).abs().mean() < 0.01


def test_thin_convolutions_padded_to_32_filters_keep_their_outputs() -> None:
    from genloom.image.fast_decode import pad_thin_convolutions

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.Conv2d(32, 3, 3, padding=1))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        expected = net(x)
        assert pad_thin_convolutions(net) == 1  # only the 32 -> 3 convolution
        assert pad_thin_convolutions(net) == 0  # idempotent
        got = net(x)
    assert got.shape == expected.shape == (2, 3, 8, 8)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert net[1].weight.shape == (3, 32, 3, 3)


def test_thin_convolution_padding_leaves_subclasses_and_the_encoder_alone() -> None:
    # VAR's Phi is a Conv2d subclass whose forward blends h*(1-r) + conv(h)*r: replacing it by a plain
    # (padded) convolution would change the quantizer; FastDecode pads only inside the decoder
    from genloom.core.tokenizers.multiscale_vq import Phi
    from genloom.image.fast_decode import FastDecode, pad_thin_convolutions

    torch.manual_seed(0)
    phi = Phi(16, 0.5)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        before = phi(x)
        assert pad_thin_convolutions(torch.nn.Sequential(phi)) == 0
        torch.testing.assert_close(phi(x), before, atol=0, rtol=0)

    tokenizer = torch.nn.Module()
    tokenizer.encoder = torch.nn.Conv2d(3, 8, 3)
    tokenizer.decoder = torch.nn.Sequential(torch.nn.Conv2d(8, 3, 3))
    FastDecode(tokenizer.decoder, tokenizer)._prepare_module()  # what its first CUDA call does
    assert "forward" not in vars(tokenizer.encoder) and "forward" in vars(tokenizer.decoder[0])


def test_group_norm_by_channel_sums_equals_group_norm() -> None:
    from genloom.image.fast_decode import group_norm_by_channel_sums, sum_group_norms

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 20, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 20, 9, 7) * 3 + 1.5  # an offset mean: E[x^2] - E[x]^2 must still be accurate
    for layout in (torch.contiguous_format, torch.channels_last):
        got = group_norm_by_channel_sums(x.to(memory_format=layout), norm)
        torch.testing.assert_close(got, norm(x), rtol=1e-5, atol=1e-5)
    plain = torch.nn.GroupNorm(2, 4, affine=False)
    torch.testing.assert_close(
        group_norm_by_channel_sums(x[:, :4], plain), plain(x[:, :4]), rtol=1e-5, atol=1e-5
    )

    class Custom(torch.nn.GroupNorm):
        pass

    net = torch.nn.Sequential(torch.nn.GroupNorm(4, 20), Custom(4, 20), torch.nn.GroupNorm(2, 20))
    reference = net(x)
    assert sum_group_norms(net) == 2 and "forward" not in vars(net[1])
    torch.testing.assert_close(net(x), reference, rtol=1e-5, atol=1e-5)
    assert set(net.state_dict()) == {f"{i}.{p}" for i in range(3) for p in ("weight", "bias")}
