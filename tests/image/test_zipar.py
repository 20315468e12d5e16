"""ZipAR decoding: its dependency order (checked against an uncached replay), pass count, raster limit."""

from __future__ import annotations

import pytest
import torch

import genloom.image.zipar as zipar
from genloom.core.sampling.logits import SamplingParams
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.zipar import zipar_forward_passes, zipar_sample, zipar_schedule

GRID = (4, 5)
GREEDY = SamplingParams(temperature=0)


def _model(seed: int = 0) -> RasterAR:
    torch.manual_seed(seed)
    tcfg = llamagen_transformer_config(
        dim=64, n_layers=2, n_heads=4, vocab_size=32, grid=GRID, mlp_multiple_of=32
    )
    model = RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=4, grid=GRID))
    return model.eval()


def _replay_argmax_mismatches(
    model: RasterAR, labels: torch.Tensor, tokens: torch.Tensor, window: int
) -> int:
    """Replay ZipAR's order without a cache: every input is one event with its pass, raster slot and content;
    an event sees itself and every real (non stand-in) event of an earlier or the same pass at a slot not after
    its own. Returns how many decoded tokens differ from the argmax of their predicting event's logits."""
    h, w = GRID
    win = min(window, w)
    decoded_in = {r * w + c: r * win + c for r in range(h) for c in range(w)}
    events = [dict(slot=0, content=None, pass_=0, real=True, target=0)]  # the class prefix
    for i in range(h * w - 1):
        target = i + 1 if (i + 1) % w or win == w else None
        events.append(dict(slot=1 + i, content=i, pass_=decoded_in[i] + 1, real=True, target=target))
    if win < w:
        for r in range(1, h):
            source = (r - 1) * w + win - 1
            events.append(dict(slot=r * w, content=source, pass_=r * win, real=False, target=r * w))
    n = len(events)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for q, eq in enumerate(events):
        for k, ek in enumerate(events):
            mask[q, k] = q == k or (ek["real"] and ek["pass_"] <= eq["pass_"] and ek["slot"] <= eq["slot"])
    embed = [
        model.cls_embedding(labels)
        if e["content"] is None
        else model.transformer.embed(tokens[:, e["content"], None])[:, 0]
        for e in events
    ]
    with torch.no_grad():
        logits = model.transformer(
            embeddings=torch.stack(embed, dim=1),
            input_pos=torch.tensor([e["slot"] for e in events]),
            mask=mask,
        )
    wrong = 0
    for q, e in enumerate(events):
        if e["target"] is not None:
            wrong += int((logits[:, q].argmax(-1) != tokens[:, e["target"]]).sum())
    return wrong


@pytest.mark.parametrize("window", [1, 2, 3])
def test_greedy_zipar_picks_the_argmax_given_its_dependency_order(window: int) -> None:
    model = _model()
    labels = torch.tensor([0, 1, 2, 3])
    tokens, stats = zipar_sample(model, labels, window=window, sampling=GREEDY)
    assert tokens.shape == (4, 20)
    assert _replay_argmax_mismatches(model, labels, tokens, window) == 0
    # parallel rows must change something, or the replay above would not tell orders apart
    assert not torch.equal(tokens, model.generate(labels, sampling=GREEDY))
    assert stats.forward_passes == zipar_forward_passes(GRID, window) == 3 * window + 5


def test_the_replay_catches_a_wrong_attention_mask(monkeypatch) -> None:
    model = _model()
    labels = torch.tensor([0, 1, 2, 3])

    def causal_by_slot(queries, decoded, prefix):  # noqa: ANN001, ANN202  (sees stand-ins and unfilled slots)
        slots = torch.arange(decoded.shape[0])
        own = torch.tensor([prefix + q.position for q in queries])
        return slots[None, :] <= own[:, None]

    monkeypatch.setattr(zipar, "_attention_mask", causal_by_slot)
    tokens, _ = zipar_sample(model, labels, window=2, sampling=GREEDY)
    assert _replay_argmax_mismatches(model, labels, tokens, window=2) > 0


@pytest.mark.parametrize("window", [5, 9])
def test_window_at_least_the_width_is_plain_raster_decoding(window: int) -> None:
    model = _model(seed=1)
    labels = torch.tensor([3, 0, 2])
    tokens, stats = zipar_sample(model, labels, window=window, sampling=GREEDY)
    assert torch.equal(tokens, model.generate(labels, sampling=GREEDY))
    assert stats.forward_passes == 20
    params = SamplingParams(top_k=8)
    sampled, _ = zipar_sample(
        model,
        labels,
        window=window,
        cfg_scale=2.0,
        sampling=params,
        generator=torch.Generator().manual_seed(4),
    )
    plain = model.generate(labels, cfg_scale=2.0, sampling=params, generator=torch.Generator().manual_seed(4))
    assert torch.equal(sampled, plain)


def test_schedule_predicts_every_token_once_and_rows_overlap() -> None:
    schedule = zipar_schedule(GRID, 2)
    targets = sorted(q.target for queries in schedule for q in queries if q.target is not None)
    assert targets == list(range(1, 20))
    assert max(len(queries) for queries in schedule) == 3  # rows 0..2 (window 2) busy at once
    stand_ins = [q for queries in schedule for q in queries if q.stand_in]
    assert [(q.position, q.source, q.target) for q in stand_ins] == [(4, 1, 5), (9, 6, 10), (14, 11, 15)]


def test_bad_window_and_cfg_are_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        zipar_sample(model, torch.tensor([0]), window=0)
    with pytest.raises(ValueError, match="cfg_scale must be >= 0"):
        zipar_sample(model, torch.tensor([0]), window=2, cfg_scale=-1.0)
