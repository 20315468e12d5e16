"""RasterAR: learns a class -> token-grid mapping, samples it back through the cache, rejects bad input."""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling.logits import SamplingParams
from genloom.image.accelerated_decoding import jacobi_sample
from genloom.image.convert import convert_llamagen_gpt
from genloom.image.errors import CheckpointError, ImageInputError, UnknownClassError
from genloom.image.models.class_prefix import ClassPrefixLM
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config


def _tiny(num_classes: int = 4, vocab: int = 16, dropout: float = 0.1) -> RasterAR:
    tcfg = llamagen_transformer_config(
        dim=64, n_layers=2, n_heads=4, vocab_size=vocab, grid=(3, 3), mlp_multiple_of=32
    )
    return RasterAR(
        RasterARConfig(
            transformer=tcfg.to_dict(), num_classes=num_classes, grid=(3, 3), class_dropout=dropout
        )
    )


def test_trained_model_generates_the_grid_of_each_class(count_calls) -> None:
    torch.manual_seed(0)
    model = _tiny()
    labels = torch.arange(4).repeat(16)
    targets = (labels.view(-1, 1) * 3 + torch.arange(9).view(1, -1)) % 16  # class c -> 3c, 3c+1, ...
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model.loss(labels, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert loss.item() < 0.3
    wanted = torch.tensor([0, 1, 2, 3])
    greedy = model.generate(wanted, sampling=SamplingParams(temperature=0))
    assert torch.equal(greedy, targets[:4])
    guided = model.generate(
        wanted, cfg_scale=3.0, sampling=SamplingParams(top_k=2), generator=torch.Generator().manual_seed(0)
    )
    assert (guided == targets[:4]).float().mean() > 0.9
    # the compiled fast path samples the same tokens for the same seed (LlamaGen's cfg_interval too); the
    # class prompt enters its first compiled step as embeddings: the adapter never runs a pass eagerly
    for interval in (-1, 2):
        kwargs = dict(cfg_scale=3.0, sampling=SamplingParams(top_k=3), cfg_interval=interval)
        eager = model.generate(wanted, generator=torch.Generator().manual_seed(1), **kwargs)
        eager_passes = count_calls(ClassPrefixLM, "__call__")
        fast = model.generate(wanted, generator=torch.Generator().manual_seed(1), compiled="eager", **kwargs)
        assert torch.equal(fast, eager) and not eager_passes
    # greedy Jacobi decoding gives exactly the greedy tokens; SJD gives valid grids
    jacobi, stats = jacobi_sample(model, wanted, window=4, sampling=SamplingParams(temperature=0))
    assert torch.equal(jacobi, greedy) and 1 <= stats.forward_passes <= 9
    sjd, _ = jacobi_sample(
        model, wanted, window=4, sampling=SamplingParams(top_k=2), generator=torch.Generator().manual_seed(0)
    )
    assert (sjd == targets[:4]).float().mean() > 0.8
    # cached decoding equals teacher forcing
    torch.testing.assert_close(
        model.decode_logits(wanted, targets[:4]), model(wanted, targets[:4, :-1]), atol=1e-4, rtol=0
    )


def test_bad_labels_tokens_and_checkpoints_get_clear_errors() -> None:
    model = _tiny().eval()
    with pytest.raises(UnknownClassError, match="0..3"):
        model.generate(torch.tensor([7]))
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        model.generate(torch.tensor([1]), cfg_scale=-1.0)
    with pytest.raises(ImageInputError, match=r"\[0, 16\)"):
        model(torch.tensor([1]), torch.tensor([[3, 99]]))
    with pytest.raises(CheckpointError, match="pass n_heads"):
        convert_llamagen_gpt({k.removeprefix("transformer."): v for k, v in model.state_dict().items()})


@torch.no_grad()
def test_core_ar_loop_serves_a_longer_class_prefix() -> None:
    """RasterAR samples through core's `generate` via ClassPrefixLM, also with cls_token_num > 1: greedy
    tokens are the argmax of teacher forcing, guided decoding agrees with guided cached logits, and Jacobi
    decoding returns the same greedy grid."""
    torch.manual_seed(1)
    tcfg = llamagen_transformer_config(
        dim=32, n_layers=2, n_heads=4, vocab_size=16, grid=(2, 3), cls_token_num=2, mlp_multiple_of=32
    )
    model = RasterAR(
        RasterARConfig(transformer=tcfg.to_dict(), num_classes=3, cls_token_num=2, grid=(2, 3))
    ).eval()
    labels = torch.tensor([0, 2])
    greedy = model.generate(labels, sampling=SamplingParams(temperature=0))
    assert greedy.shape == (2, 6)
    teacher = model(labels, greedy[:, :-1])[:, 1:]  # position cls_token_num - 1 + i predicts token i
    assert torch.equal(teacher.argmax(-1), greedy)
    guided = model.generate(labels, cfg_scale=3.0, sampling=SamplingParams(temperature=0))
    assert torch.equal(model.decode_logits(labels, guided, cfg_scale=3.0).argmax(-1), guided)
    assert not torch.equal(guided, greedy)  # guidance changes this random model's choices
    jacobi, _ = jacobi_sample(model, labels, window=3, sampling=SamplingParams(temperature=0))
    assert torch.equal(jacobi, greedy)
