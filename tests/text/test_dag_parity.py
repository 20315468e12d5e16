"""DA-Transformer parity: our DAG links, loss, gradients, alignment and decoders vs the official code."""

from pathlib import Path

import pytest
import torch

from genloom.text.dag import (
    DagLinkHead,
    dag_best_alignment,
    dag_log_likelihood,
    dag_lookahead_decode,
    dag_match,
    dag_viterbi_decode,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CASES = SHARED / "parity" / "dat" / "cases.safetensors"

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(not CASES.exists(), reason="../shared/parity/dat is absent"),
]


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(CASES))


def _close(ours: torch.Tensor, ref: torch.Tensor, atol: float = 1e-5) -> None:
    assert torch.equal(torch.isneginf(ours), torch.isneginf(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(ours[finite], ref[finite], atol=atol, rtol=1e-5)


def test_links_match_official(case):
    head = DagLinkHead(dim=16, num_heads=4)
    head.load_state_dict({k.removeprefix("inputs."): v for k, v in case.items() if "_linear." in k})
    with torch.no_grad():
        links = head(case["inputs.features"], case["inputs.output_length"])
    for key in ("links", "links.eval", "links.maxlen_minus1"):
        _close(links, case[key])
    # the official "cuda format" is the same matrix, shifted: [b, i, j] = log P(i -> i + j + 1)
    idx = torch.arange(20)
    target = (idx.view(-1, 1) + idx[:19].view(1, -1) + 1).clamp(max=19)
    shifted = links.gather(2, target.expand(3, -1, -1)).masked_fill(
        (idx.view(-1, 1) + idx[:19].view(1, -1) + 1) >= 20, float("-inf")
    )
    _close(shifted, case["links.cuda_format"])


def test_loss_and_gradients_match_official(case):
    logits = case["inputs.token_logits"].clone().requires_grad_()
    links = case["links"].clone().requires_grad_()
    match = dag_match(logits, case["inputs.targets"])
    match.retain_grad()
    _close(match.detach(), case["match"])
    target_length = case["inputs.target_length"]
    logprob = dag_log_likelihood(match, links, case["inputs.output_length"], target_length)
    _close(logprob.detach(), case["loss.logprob"])
    criterion = -(logprob / target_length).mean()
    _close(criterion.detach().view(1), case["loss.criterion"])
    criterion.backward()
    for name, grad in (("token_logits", logits.grad), ("links", links.grad), ("match", match.grad)):
        assert not grad.isnan().any()
        torch.testing.assert_close(grad, case[f"grad.{name}"], atol=1e-5, rtol=1e-5)


def test_best_alignment_matches_official(case):
    path, max_logprob = dag_best_alignment(
        case["match"], case["links"], case["inputs.output_length"], case["inputs.target_length"]
    )
    assert torch.equal(path, case["align.path"])
    _close(max_logprob, case["align.max_logprob"])


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("greedy", {"beta": None}),
        ("lookahead", {"beta": 1.0}),
        ("lookahead_beta0.5", {"beta": 0.5}),
    ],
)
def test_lookahead_decoding_matches_official(case, key, kwargs):
    tokens, _ = dag_lookahead_decode(
        case["links.eval"], case["decode.logits_normalized"], case["inputs.output_length"], **kwargs
    )
    assert torch.equal(tokens, case[f"decode.{key}.tokens"])


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("viterbi", {}),
        ("jointviterbi", {"joint": True}),
        ("viterbi_vb0.5", {"length_beta": 0.5}),
    ],
)
def test_viterbi_decoding_matches_official(case, key, kwargs):
    links = case["links.eval"].clone()
    tokens, _ = dag_viterbi_decode(
        links, case["decode.logits_normalized"], case["inputs.output_length"], upsample_scale=4.0, **kwargs
    )
    assert torch.equal(tokens, case[f"decode.{key}.tokens"])
    assert torch.equal(
        links, case["links.eval"]
    )  # unlike the official function, ours does not write into links
