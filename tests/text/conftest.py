"""Shared fixture of the text tests: train a diffusion LM on the 6-state Markov source whose exact
likelihood is known (MDLM and SEDD are checked against the same true perplexity)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from genloom.text.markov import MarkovChainSource
from genloom.text.training import text_train_config, train

MARKOV_LENGTH = 12


@dataclass
class MarkovRun:
    source: MarkovChainSource
    true_perplexity: float  # exact, on the held-out sequences
    untrained_perplexity: float  # ELBO perplexity before training
    trained_perplexity: float  # ELBO perplexity after 400 steps


@pytest.fixture
def train_on_markov():
    """`run(model)`: trains `model` (vocabulary 7, mask id 6, max length 12) 400 steps in place."""

    def run(model: torch.nn.Module) -> MarkovRun:
        source = MarkovChainSource(num_states=6, seed=0)
        held_out = source.sample(1024, MARKOV_LENGTH, generator=torch.Generator().manual_seed(9))
        true = math.exp(-source.log_likelihood(held_out).mean().item() / MARKOV_LENGTH)
        untrained = model.elbo_perplexity(held_out, num_times=8, generator=torch.Generator().manual_seed(1))
        train(
            model,
            lambda g: source.sample(128, MARKOV_LENGTH, generator=g),
            text_train_config(steps=400, lr=3e-3, warmup_steps=20),
        )
        trained = model.elbo_perplexity(held_out, num_times=32, generator=torch.Generator().manual_seed(1))
        return MarkovRun(source, true, untrained, trained)

    return run
