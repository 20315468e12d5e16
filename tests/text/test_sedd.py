"""SEDD (absorbing score entropy): the loss's closed-form minimum, the ELBO on the Markov source, samplers."""

from __future__ import annotations

import math

import pytest
import torch

from genloom.text.errors import TextInputError
from genloom.text.pretrained import SymbolTokenizer, load_text_model, save_text_model
from genloom.text.sedd import ScoreEntropyLM, SEDDConfig, score_entropy


def test_score_entropy_is_zero_at_the_true_ratio_and_positive_elsewhere() -> None:
    sigma_bar = torch.tensor([0.7])
    ratio = 1.0 / math.expm1(0.7)
    x0, xt = torch.tensor([[2, 1]]), torch.tensor([[4, 1]])  # position 0 masked (mask id 4), 1 clean
    true = torch.full((1, 2, 5), -math.inf)
    true[0, 0, 2] = math.log(ratio)  # s_y = r for y = x0, 0 elsewhere
    assert score_entropy(true, x0, xt, sigma_bar, mask_id=4).abs().max() < 1e-6
    off = true.clone()
    off[0, 0, 2] = math.log(2 * ratio)  # SE(c r) = r (c - 1 - log c) > 0
    value = score_entropy(off, x0, xt, sigma_bar, mask_id=4)
    assert value[0, 0].item() == pytest.approx(ratio * (1 - math.log(2)), rel=1e-5) and value[0, 1] == 0


@pytest.mark.slow
def test_sedd_elbo_is_above_the_true_nll_and_within_10_percent_and_samples_follow_the_chain(
    train_on_markov,
) -> None:
    torch.manual_seed(0)
    length = 12
    model = ScoreEntropyLM(
        SEDDConfig(vocab_size=7, mask_id=6, dim=64, n_layers=2, n_heads=4, max_seq_len=length)
    )
    run = train_on_markov(model)
    source, true, trained = run.source, run.true_perplexity, run.trained_perplexity
    assert run.untrained_perplexity > 1.5 * true
    assert true <= trained <= 1.10 * true, (true, trained)  # measured: 3.73 vs 3.52 (+6%)
    entropy = source.expected_nll_per_token(length)
    random_nll = -source.log_likelihood(torch.randint(0, 6, (256, length))).mean().item() / length
    for strategy in ("analytic", "euler"):
        out = model.sample(
            256, length, steps=32, strategy=strategy, generator=torch.Generator().manual_seed(1)
        )
        assert out.num_model_calls == 32 and out.tokens.min() >= 0 and out.tokens.max() < 6  # no mask left
        sample_nll = -source.log_likelihood(out.tokens).mean().item() / length
        assert sample_nll < entropy + 0.3 * (random_nll - entropy), (
            strategy,
            sample_nll,
            entropy,
            random_nll,
        )


def test_untrained_sampler_is_uniform_over_real_tokens_and_round_trips(tmp_path) -> None:
    """At init every score is the same ratio, so samples are uniform over the 5 real tokens (never the mask)."""
    torch.manual_seed(0)
    model = ScoreEntropyLM(SEDDConfig(vocab_size=6, mask_id=0, dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    with torch.no_grad():  # zero output layer: every log score equals the initial ratio
        model.backbone.output.weight.zero_()
        if model.backbone.output.bias is not None:
            model.backbone.output.bias.zero_()
    tokens = model.sample(400, 8, steps=4, generator=torch.Generator().manual_seed(0)).tokens
    assert tokens.min() >= 1
    counts = torch.bincount(tokens.flatten(), minlength=6)[1:].float() / tokens.numel()
    assert (counts - 0.2).abs().max() < 0.05

    save_text_model(model, SymbolTokenizer.letters(2), tmp_path / "sedd", half=False)
    loaded, _, _ = load_text_model(tmp_path / "sedd")
    assert isinstance(loaded, ScoreEntropyLM)
    x = torch.randint(1, 6, (2, 8))
    sigma_bar = torch.tensor([0.5, 1.0])
    torch.testing.assert_close(loaded.log_score(x, sigma_bar), model.eval().log_score(x, sigma_bar))
    with pytest.raises(TextInputError, match="strategy"):
        model.sample(1, 4, strategy="gillespie")
    with pytest.raises(TextInputError, match="mask id"):
        model.loss(torch.zeros(2, 4, dtype=torch.long))
