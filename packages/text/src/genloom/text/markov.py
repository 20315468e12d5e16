"""A first-order Markov-chain text source whose exact likelihood is known.

Sequences start in the stationary distribution, so every position has the same marginal and the
expected negative log-likelihood per token has a closed form: (H(pi) + (n - 1) * H_rate) / n with
H_rate = sum_i pi_i H(P[i, :]). A language model (or a diffusion ELBO) can be checked against it:
its perplexity can approach exp(true NLL) but never go below it in expectation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from genloom.text.errors import TextInputError


class MarkovChainSource:
    """Random sparse-ish transition matrix (Dirichlet(concentration) rows), fixed by `seed`."""

    def __init__(self, *, num_states: int = 8, concentration: float = 0.3, seed: int = 0) -> None:
        if num_states < 2:
            raise TextInputError(f"num_states must be >= 2, got {num_states}")
        rng = np.random.default_rng(seed)
        rows = torch.from_numpy(rng.dirichlet(np.full(num_states, concentration), size=num_states)) + 1e-4
        self.num_states = num_states
        self.transition = rows / rows.sum(-1, keepdim=True)  # [V, V] float64
        self.initial = self._stationary(self.transition)

    @staticmethod
    def _stationary(transition: Tensor) -> Tensor:
        eigenvalues, eigenvectors = torch.linalg.eig(transition.T)
        vector = eigenvectors[:, eigenvalues.real.sub(1.0).abs().argmin()].real
        vector = vector / vector.sum()
        return vector.clamp(min=0) / vector.clamp(min=0).sum()

    def sample(self, batch_size: int, length: int, *, generator: torch.Generator) -> Tensor:
        """[batch_size, length] state ids in [0, num_states)."""
        out = torch.empty(batch_size, length, dtype=torch.long)
        out[:, 0] = torch.multinomial(self.initial.expand(batch_size, -1), 1, generator=generator).squeeze(1)
        for t in range(1, length):
            probs = self.transition[out[:, t - 1]]
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return out

    def log_likelihood(self, sequences: Tensor) -> Tensor:
        """Exact log P(x) per row, float64."""
        if sequences.min() < 0 or sequences.max() >= self.num_states:
            raise TextInputError(
                f"states must lie in [0, {self.num_states}), got {sequences.min()}..{sequences.max()}"
            )
        first = self.initial.log()[sequences[:, 0]]
        steps = self.transition.log()[sequences[:, :-1], sequences[:, 1:]].sum(1)
        return first + steps

    def entropy_rate(self) -> float:
        """H_rate = sum_i pi_i H(P[i, :]) in nats."""
        p = self.transition
        row_entropy = -(p * p.clamp(min=1e-300).log()).sum(-1)
        return float((self.initial * row_entropy).sum())

    def expected_nll_per_token(self, length: int) -> float:
        """E[-log P(x)] / length for sequences of `length` tokens (nats)."""
        pi = self.initial
        start_entropy = float(-(pi * pi.clamp(min=1e-300).log()).sum())
        return (start_entropy + (length - 1) * self.entropy_rate()) / length

    def perplexity(self, length: int) -> float:
        """exp of the expected NLL per token: the floor any model's perplexity can reach on this source."""
        return math.exp(self.expected_nll_per_token(length))
