"""The contract every sampler keeps: seeded determinism, output shapes, valid values, any batch size.

A sampler's test subclasses `SamplerContract` and only says how to build it, make an input and run it
(the diffusers `SchedulerCommonTest` pattern). Token samplers must return ids inside the real vocabulary
(never the mask token); continuous samplers must return finite tensors of the input's shape.
"""

from __future__ import annotations

import pytest
import torch

from genloom.core.sampling import (
    DDIMSampler,
    DDPMSampler,
    FlowMatchSampler,
    MaskedDiffusionSampler,
    MaskedSampler,
    SamplingError,
    SamplingParams,
    block_decode,
    sample_from_logits,
)

VOCAB, MASK, LENGTH, DIM = 11, 11, 12, 4  # token ids 0..10, mask id 11 (the model outputs VOCAB + 1 logits)


def _token_model(tokens: torch.Tensor) -> torch.Tensor:
    """A fixed, input-dependent model over VOCAB + 1 classes (the last one is the mask)."""
    table = torch.randn(97, VOCAB + 1, generator=torch.Generator().manual_seed(123))
    flat = tokens.reshape(tokens.shape[0], -1)
    index = (flat.cumsum(-1) * 7 + torch.arange(flat.shape[1])) % 97
    return table[index].reshape(*tokens.shape, VOCAB + 1)


def _gaussian_eps(diffusion):
    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        acp = diffusion.train_alphas_cumprod[t].to(x.dtype)[:, None]
        return (1 - acp).sqrt() * (x - acp.sqrt()) / (acp * 0.25 + 1 - acp)

    return model


class SamplerContract:
    """Subclass with `make_input(batch, generator)` and `run(inputs, generator)`; set `token_output`."""

    token_output = True

    def make_input(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((batch_size, LENGTH), MASK)

    def run(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def expected_shape(self, inputs: torch.Tensor) -> tuple[int, ...]:
        return tuple(inputs.shape)

    def _sample(self, batch_size: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return self.run(self.make_input(batch_size, generator), generator)

    @pytest.mark.parametrize("batch_size", [1, 3])
    def test_shape_and_valid_values(self, batch_size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        inputs = self.make_input(batch_size, generator)
        out = self.run(inputs, generator)
        assert tuple(out.shape) == self.expected_shape(inputs)
        if self.token_output:
            assert out.dtype == torch.int64
            assert out.min() >= 0 and out.max() < VOCAB  # real tokens only, no mask left
        else:
            assert out.is_floating_point() and torch.isfinite(out).all()

    def test_same_seed_same_output(self) -> None:
        assert torch.equal(self._sample(3, seed=7), self._sample(3, seed=7))

    def test_different_seed_different_output(self) -> None:
        assert not torch.equal(self._sample(3, seed=7), self._sample(3, seed=8))


class TestLogitsSamplerContract(SamplerContract):
    def make_input(self, batch_size, generator):
        return torch.randn(batch_size, 64, VOCAB, generator=generator)

    def run(self, inputs, generator):
        return sample_from_logits(inputs, SamplingParams(temperature=0.9, top_k=6, top_p=0.95), generator)

    def expected_shape(self, inputs):
        return tuple(inputs.shape[:-1])


class TestMaskGITContract(SamplerContract):
    variant = "maskgit"

    def run(self, inputs, generator):
        sampler = MaskedSampler(mask_token_id=MASK, variant=self.variant)
        sampler.set_steps(5)
        return sampler.sample(_token_model, inputs, params=SamplingParams(top_k=8), generator=generator)


class TestMAGNeTContract(TestMaskGITContract):
    variant = "magnet"


class TestMaskGCTContract(TestMaskGITContract):
    variant = "maskgct"


class TestMaskedDiffusionContract(SamplerContract):
    def run(self, inputs, generator):
        sampler = MaskedDiffusionSampler(mask_token_id=MASK)
        sampler.set_steps(64)
        return sampler.sample(_token_model, inputs, generator=generator).tokens


class TestBlockDecodeContract(SamplerContract):
    def run(self, inputs, generator):
        return block_decode(
            _token_model,
            inputs,
            mask_token_id=MASK,
            num_steps=6,
            block_length=4,
            params=SamplingParams(temperature=1.0),
            generator=generator,
        )


class TestDDPMContract(SamplerContract):
    token_output = False
    sampler_cls = DDPMSampler
    step_kwargs: dict = {}

    def make_input(self, batch_size, generator):
        return torch.randn(batch_size, DIM, generator=generator)

    def run(self, inputs, generator):
        sampler = self.sampler_cls(beta_schedule="cosine")
        sampler.set_steps(20)
        return sampler.sample(_gaussian_eps(sampler), inputs, generator=generator, **self.step_kwargs)

    def test_step_before_set_steps_raises(self) -> None:
        with pytest.raises(SamplingError, match="set_steps"):
            self.sampler_cls().step(torch.zeros(2, DIM), 0, torch.zeros(2, DIM))


class TestDDIMContract(TestDDPMContract):
    sampler_cls = DDIMSampler


class TestDDIMStochasticContract(TestDDPMContract):
    sampler_cls = DDIMSampler
    step_kwargs = {"eta": 1.0}


class TestFlowEulerContract(SamplerContract):
    token_output = False
    method = "euler"

    def make_input(self, batch_size, generator):
        return torch.randn(batch_size, DIM, generator=generator)

    def run(self, inputs, generator):
        sampler = FlowMatchSampler(method=self.method)
        sampler.set_steps(8)
        return sampler.sample(lambda x, t: 1.0 - x * t[:, None], inputs)


class TestFlowHeunContract(TestFlowEulerContract):
    method = "heun"
