"""Codebook patterns: invariants everywhere, and audiocraft's own outputs where ../shared is present."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from genloom.core.layout import DelayPattern, ParallelPattern, UnrolledPattern

PROVIDERS = {
    "delay_default": lambda: DelayPattern(4),
    "delay_custom": lambda: DelayPattern(4, delays=[0, 1, 2, 3]),
    "delay_flatten1_empty1": lambda: DelayPattern(4, flatten_first=1, empty_initial=1),
    "parallel": lambda: ParallelPattern(4),
    "parallel_magnet": lambda: ParallelPattern(4, empty_initial=-1),
    "unrolled": lambda: UnrolledPattern(4),
}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_build_then_revert_returns_the_codes(name: str) -> None:
    pattern = PROVIDERS[name]().get_pattern(10)
    codes = torch.randint(0, 32, (3, 4, 10))
    seq = pattern.build_sequence(codes, special_token=32)
    back = pattern.revert_sequence(seq.values, special_token=32)
    assert back.mask.all()
    assert torch.equal(back.values, codes)
    # every code appears exactly once in the interleaved sequence
    assert int(seq.mask.sum()) == 4 * 10


def test_delay_pattern_shifts_codebook_q_by_q_steps() -> None:
    pattern = DelayPattern(3).get_pattern(4)
    codes = torch.arange(1, 5).repeat(3, 1).unsqueeze(0)  # each codebook holds 1,2,3,4
    seq = pattern.build_sequence(codes, special_token=0).values[0]
    expected = torch.tensor([[0, 1, 2, 3, 4, 0, 0], [0, 0, 1, 2, 3, 4, 0], [0, 0, 0, 1, 2, 3, 4]])
    assert torch.equal(seq, expected)
    assert pattern.max_delay == 2


def test_bad_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        DelayPattern(3, delays=[2, 1, 0])
    with pytest.raises(ValueError, match="share one delay"):
        UnrolledPattern(3, flattening=[0, 1, 1], delays=[0, 1, 2])
    with pytest.raises(ValueError, match="codebooks"):
        DelayPattern(4).get_pattern(5).build_sequence(torch.zeros(1, 3, 5, dtype=torch.long), 0)


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_matches_audiocraft(name: str, parity_dir) -> None:
    ref = load_file(str(parity_dir("audiocraft") / "patterns.safetensors"))
    codes = ref["patterns.codes"]
    pattern = PROVIDERS[name]().get_pattern(codes.shape[-1])
    assert torch.equal(pattern.step_timesteps, ref[f"{name}.layout"])
    meta = [
        pattern.num_sequence_steps,
        pattern.max_delay,
        pattern.num_valid_steps,
        pattern.first_step_with_timestep(0),
    ]
    assert meta == ref[f"{name}.meta"].tolist()
    for kind, valid_only in (("all", False), ("valid", True)):
        key = f"{name}.{kind}"
        seq = pattern.build_sequence(codes, special_token=32, valid_only=valid_only)
        assert torch.equal(seq.values, ref[f"{key}.seq"])
        assert torch.equal(seq.indexes, ref[f"{key}.seq_indexes"])
        assert torch.equal(seq.mask, ref[f"{key}.seq_mask"])
        rev = pattern.revert_sequence(seq.values, special_token=32, valid_only=valid_only)
        assert torch.equal(rev.values, ref[f"{key}.rev"])
        assert torch.equal(rev.indexes, ref[f"{key}.rev_indexes"])
        assert torch.equal(rev.mask, ref[f"{key}.rev_mask"])
        logits = pattern.revert_logits(ref[f"{key}.logits_in"], float("nan"), valid_only=valid_only)
        assert torch.equal(logits.indexes, ref[f"{key}.rev_logits_indexes"])
        assert torch.equal(logits.mask, ref[f"{key}.rev_logits_mask"])
        torch.testing.assert_close(logits.values, ref[f"{key}.rev_logits"], rtol=0, atol=0, equal_nan=True)
