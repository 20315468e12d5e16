"""The contract every genloom tokenizer keeps, checked once per tokenizer configuration.

`QuantizerContract` and `TextTokenizerContract` hold the checks; each `Test*` class below only says how
to build its tokenizer (diffusers' `SchedulerCommonTest` pattern). Behaviour specific to one kind is
tested in `test_tokenizers_<kind>.py`.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from genloom.core.tokenizers import (
    FSQ,
    LFQ,
    BinarySphericalQuantizer,
    BPETokenizer,
    ByteTokenizer,
    MultiScaleResidualVQ,
    Quantizer,
    ResidualVQ,
    TextTokenizer,
    TokenIndexError,
    TokenizerInputError,
    VectorQuantizer,
)


class QuantizerContract:
    """Checks shared by all quantizers. Subclasses set `input_shape`, `channel_dim` and `make`.

    requantize: how ids are recovered from decoded codes exactly: "encode" (quantizing the codes again
        gives the same ids), "codes_to_indices" (only the exact inverse does, e.g. FSQ's tanh bound
        moves grid points) or None (not invertible, e.g. multi-scale or projected codes).
    identity_grad: the straight-through gradient of the codes w.r.t. the input is exactly the identity.
    """

    input_shape: tuple[int, ...]
    channel_dim: int = -1
    requantize: str | None = "encode"
    identity_grad: bool = True

    def make(self) -> Quantizer:
        raise NotImplementedError

    def build(self, seed: int = 0) -> Quantizer:
        torch.manual_seed(seed)
        return self.make().eval()

    def sample(self, seed: int = 1) -> torch.Tensor:
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(seed))

    def random_indices(self, q: Quantizer, seed: int = 2) -> torch.Tensor:
        shape = q(self.sample()).indices.shape
        return torch.randint(q.codebook_size, shape, generator=torch.Generator().manual_seed(seed))

    def test_forward_shapes_and_types(self):
        q = self.build()
        z = self.sample()
        out = q(z)
        assert out.codes.shape == z.shape and out.codes.is_floating_point()
        assert out.indices.dtype == torch.long
        assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        for name, value in out.metrics.items():
            assert value.ndim == 0 and torch.isfinite(value), name

    def test_codes_equal_decoded_indices(self):
        q = self.build()
        out = q(self.sample())
        torch.testing.assert_close(out.codes, q.indices_to_codes(out.indices), atol=1e-5, rtol=1e-5)

    def test_indices_codes_roundtrip(self):
        q = self.build()
        indices = self.random_indices(q)
        codes = q.indices_to_codes(indices)
        assert codes.shape[self.channel_dim] == self.input_shape[self.channel_dim]
        if self.requantize == "encode":
            assert torch.equal(q.encode(codes), indices)
        if self.requantize in ("encode", "codes_to_indices") and hasattr(q, "codes_to_indices"):
            assert torch.equal(q.codes_to_indices(codes), indices)

    def test_straight_through_gradient_reaches_input(self):
        q = self.build().train()
        z = self.sample().requires_grad_(True)
        weight = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
        (q(z).codes * weight).sum().backward()
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        if self.identity_grad:
            torch.testing.assert_close(z.grad, weight)

    def test_encode_changes_no_state(self):
        q = self.build().train()
        before = {k: v.clone() for k, v in q.state_dict().items()}
        q.encode(self.sample())
        assert q.training
        after = q.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)

    def test_vocab_size_and_decode_alias(self):
        q = self.build()
        assert q.vocab_size == q.codebook_size > 1
        indices = self.random_indices(q)
        assert torch.equal(q.decode(indices), q.indices_to_codes(indices))

    def test_rejects_wrong_channel_count(self):
        q = self.build()
        shape = list(self.input_shape)
        shape[self.channel_dim] += 1
        with pytest.raises(TokenizerInputError, match="channels"):
            q(torch.randn(shape))

    def test_rejects_bad_indices(self):
        q = self.build()
        indices = self.random_indices(q)
        too_big = indices.clone()
        too_big.view(-1)[0] = q.codebook_size
        with pytest.raises(TokenIndexError, match="must lie in"):
            q.indices_to_codes(too_big)
        with pytest.raises(TokenIndexError, match="integer"):
            q.indices_to_codes(indices.float())

    def test_state_dict_roundtrip_through_safetensors(self, tmp_path):
        q = self.build(seed=0)
        q.train()(self.sample())  # move running statistics away from their initial values
        q.eval()
        path = tmp_path / "quantizer.safetensors"
        save_file({k: v.contiguous() for k, v in q.state_dict().items()}, str(path))
        other = self.build(seed=123)
        other.load_state_dict(load_file(str(path)), strict=True)
        z = self.sample(seed=7)
        assert torch.equal(other(z).indices, q(z).indices)
        torch.testing.assert_close(other(z).codes, q(z).codes)

    @pytest.mark.gpu
    def test_cuda_matches_cpu(self):
        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")
        q = self.build()
        z = self.sample()
        on_cpu = q(z)
        on_gpu = q.cuda()(z.cuda())
        assert torch.equal(on_gpu.indices.cpu(), on_cpu.indices)
        torch.testing.assert_close(on_gpu.codes.cpu(), on_cpu.codes, atol=1e-4, rtol=1e-4)
        indices = self.random_indices(q.cpu())
        decoded = q.cuda().indices_to_codes(indices.cuda())
        torch.testing.assert_close(decoded.cpu(), q.cpu().indices_to_codes(indices), atol=1e-4, rtol=1e-4)


class TestVectorQuantizerSequence(QuantizerContract):
    input_shape = (2, 5, 8)

    def make(self):
        q = VectorQuantizer(dim=8, codebook_size=16)
        torch.nn.init.normal_(q.embedding.weight)
        return q


class TestVectorQuantizerImageEMA(QuantizerContract):
    input_shape = (2, 6, 4, 4)
    channel_dim = 1

    def make(self):
        q = VectorQuantizer(dim=6, codebook_size=32, channel_dim=1, use_ema=True, dead_code_after=1)
        q.embedding.weight.data.normal_()
        q.ema_embed_sum.copy_(q.embedding.weight)
        return q


class TestVectorQuantizerCosineProjected(QuantizerContract):
    input_shape = (3, 7, 12)
    requantize = "codes_to_indices"
    identity_grad = False

    def make(self):
        return VectorQuantizer(dim=12, codebook_size=24, codebook_dim=4, l2_normalize=True)


class TestResidualVQ(QuantizerContract):
    input_shape = (2, 8, 3, 3)
    channel_dim = 1

    def make(self):
        q = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, channel_dim=1)
        for k in range(3):  # residual geometry of a trained RVQ: every stage much finer than the last
            q.stage(k).embedding.weight.data.normal_().mul_(0.02**k)
        return q


class TestResidualVQSharedCodebook(QuantizerContract):
    input_shape = (4, 6, 5)
    requantize = None

    def make(self):
        q = ResidualVQ(dim=5, num_quantizers=4, codebook_size=8, shared_codebook=True, quantize_dropout=True)
        q.stage(0).embedding.weight.data.normal_()
        return q


class TestFSQ(QuantizerContract):
    input_shape = (2, 9, 4)
    requantize = "codes_to_indices"
    identity_grad = False

    def make(self):
        return FSQ(levels=[8, 5, 5, 5])


class TestFSQProjectedImage(QuantizerContract):
    input_shape = (2, 16, 3, 3)
    channel_dim = 1
    requantize = None
    identity_grad = False

    def make(self):
        return FSQ(levels=[4, 4, 3], dim=16, channel_dim=1)


class TestLFQ(QuantizerContract):
    input_shape = (2, 6, 4, 4)
    channel_dim = 1

    def make(self):
        return LFQ(codebook_dim=6, channel_dim=1)


class TestBinarySphericalQuantizer(QuantizerContract):
    input_shape = (3, 5, 8)
    identity_grad = False

    def make(self):
        return BinarySphericalQuantizer(codebook_dim=8)


class TestMultiScaleResidualVQ(QuantizerContract):
    input_shape = (2, 4, 4, 4)
    channel_dim = 1
    requantize = None

    def make(self):
        q = MultiScaleResidualVQ(dim=4, codebook_size=32, patch_nums=(1, 2, 4), share_quant_resi=2)
        q.embedding.weight.data.normal_()
        return q


# ----------------------------------------------------------------------------------------------------


class TextTokenizerContract:
    """Checks shared by all text tokenizers. Subclasses set `make` and may extend `texts`."""

    texts = ["A man rides a horse.", "Zwei Hunde spielen im Schnee.", "a dog  runs", "x"]

    def make(self) -> TextTokenizer:
        raise NotImplementedError

    def test_roundtrip(self):
        tok = self.make()
        for text in self.texts:
            ids = tok.encode(text)
            assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
            assert tok.decode(ids) == text

    def test_bos_eos_and_special_ids(self):
        tok = self.make()
        specials = [tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id]
        assert len(set(specials)) == 4 and set(specials) <= tok.special_ids
        ids = tok.encode(self.texts[0], add_bos=True, add_eos=True)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert ids[1:-1] == tok.encode(self.texts[0])
        assert tok.decode(ids) == self.texts[0]
        assert tok.decode(ids, skip_special_tokens=False) != self.texts[0]

    def test_batch_helpers_match_single_calls(self):
        tok = self.make()
        batch = tok.encode_batch(self.texts, add_eos=True)
        assert batch == [tok.encode(t, add_eos=True) for t in self.texts]
        ids, mask = tok.pad(batch)
        assert ids.shape == mask.shape == (len(self.texts), max(len(b) for b in batch))
        assert mask.sum(1).tolist() == [len(b) for b in batch]
        assert (ids[~mask] == tok.pad_id).all()
        assert tok.decode_batch(ids) == self.texts
        left, left_mask = tok.pad(batch, padding_side="left", max_length=3)
        assert left[0].tolist() == batch[0][-3:] and left_mask.shape == (len(self.texts), 3)

    def test_rejects_bad_input(self):
        tok = self.make()
        with pytest.raises(TokenIndexError, match="must lie in"):
            tok.decode([0, tok.vocab_size])
        with pytest.raises(TokenizerInputError, match="expects a str"):
            tok.encode(123)  # type: ignore[arg-type]
        with pytest.raises(TokenizerInputError, match="single str"):
            tok.encode_batch("not a list")


class TestByteTokenizerContract(TextTokenizerContract):
    def make(self):
        return ByteTokenizer()


class TestBPETokenizerContract(TextTokenizerContract):
    def make(self):
        if "tok" not in _BPE_CACHE:  # train once for the whole class (training is the slow part)
            corpus = [t.lower() for t in self.texts] * 5 + self.texts * 5
            _BPE_CACHE["tok"] = BPETokenizer.train(corpus, vocab_size=330, min_frequency=1)
        return _BPE_CACHE["tok"]


_BPE_CACHE: dict[str, BPETokenizer] = {}
