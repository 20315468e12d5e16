"""ZipAR (He et al. 2024): training-free parallel decoding of a raster AR model across rows.

Row r + 1 starts once row r has `window` tokens, so at steady state every active row gains one token per
forward pass: token (r, c) is decoded in pass r * window + c and an h x w grid takes (h - 1) * window + w
passes (prefill included) instead of h * w. `window >= w` is plain raster decoding, token for token.

Runs on core's cached transformer with explicit cache slots and a per-query attention mask:
- the KV cache keeps the raster layout (slot k + i holds image token i, k = class-prefix length), and a slot's
  RoPE row is its raster position, so every token carries its own 2D position whatever order it came in;
- a query sees the class prefix, every decoded token that precedes it in raster order, and itself; tokens
  of later rows decoded in the same or earlier passes stay hidden (the model was trained raster-causal);
- the first token of row r is predicted, as the model always predicts it, from the query at the slot of
  token (r - 1, w - 1), which is not decoded yet: that query is fed the newest token of row r - 1 (column
  window - 1) as a stand-in. The stand-in is seen by its own query only, and the real token overwrites its
  slot later.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genloom.core.sampling.autoregressive import DecodeStats
from genloom.core.sampling.logits import SamplingParams, sample_from_logits
from genloom.image.models.class_prefix import ClassPrefixLM
from genloom.image.models.raster_ar import RasterAR

__all__ = ["ZipARQuery", "zipar_forward_passes", "zipar_sample", "zipar_schedule"]


@dataclass(frozen=True)
class ZipARQuery:
    """One input of a ZipAR forward pass: image token `source` fed at raster position `position` (its cache
    slot is prefix + position), predicting image token `target` (None: fed only to fill the cache)."""

    position: int
    source: int
    target: int | None

    @property
    def stand_in(self) -> bool:
        """Fed at another token's position: the stand-in that starts a row."""
        return self.position != self.source


def _effective_window(grid: tuple[int, int], window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f"window must be an int >= 1 (tokens of a row decoded before the next starts), got {window!r}"
        )
    return min(window, grid[1])


def zipar_forward_passes(grid: tuple[int, int], window: int) -> int:
    """Forward passes ZipAR needs for one h x w grid, the class-prefix prefill included: (h - 1) * window + w."""
    h, w = grid
    return (h - 1) * _effective_window(grid, window) + w


def zipar_schedule(grid: tuple[int, int], window: int) -> list[list[ZipARQuery]]:
    """The inputs of every forward pass after the prefill (which predicts token 0), in order."""
    h, w = grid
    win = _effective_window(grid, window)
    last = h * w - 1
    passes: list[list[ZipARQuery]] = [[] for _ in range(zipar_forward_passes(grid, window) - 1)]
    for r in range(h):
        for c in range(w):
            i = r * w + c
            if i == last:
                continue
            if c < w - 1:
                target: int | None = i + 1
            else:  # the end of a row predicts the next row's start only in plain raster order
                target = i + 1 if win == w else None
            passes[r * win + c].append(
                ZipARQuery(position=i, source=i, target=target)
            )  # decoded in r*win + c
        if r >= 1 and win < w:  # row r starts in pass r * win, from the stand-in at (r - 1, w - 1)
            passes[r * win - 1].append(
                ZipARQuery(position=r * w - 1, source=(r - 1) * w + win - 1, target=r * w)
            )
    return passes


def _attention_mask(queries: list[ZipARQuery], decoded: Tensor, prefix: int) -> Tensor:
    """[L, cache_len] bool: each query sees decoded (real) slots at or before its own, and itself."""
    slots = torch.arange(decoded.shape[0], device=decoded.device)
    own = torch.tensor([prefix + q.position for q in queries], device=decoded.device)
    return (decoded[None, :] & (slots[None, :] <= own[:, None])) | (slots[None, :] == own[:, None])


@torch.no_grad()
def zipar_sample(
    model: RasterAR,
    labels: Tensor,
    *,
    window: int,
    cfg_scale: float = 1.0,
    sampling: SamplingParams | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, DecodeStats]:
    """Token grids (B, h*w) of class `labels` (B,) by ZipAR decoding, with the forward-pass count.

    `sampling` (default: plain sampling at temperature 1; temperature 0 is greedy) and CFG (`cfg_scale`,
    1 = off; the null class in a doubled batch, guided before temperature / filtering as LlamaGen does)
    apply to every token. Each query draws its token in raster order within a pass, so with
    `window >= w` the same seed gives the same tokens as `RasterAR.generate`.
    """
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0 (1 = no guidance), got {cfg_scale}")
    grid = tuple(model.config.grid)
    schedule = zipar_schedule(grid, window)
    lm = ClassPrefixLM(model)
    labels = model.cls_embedding.check(labels)
    prompt = lm.class_prompt(labels)
    guided = cfg_scale != 1.0
    if guided:
        prompt = torch.cat([prompt, lm.class_prompt(torch.full_like(labels, model.cls_embedding.null_class))])
    batch, prefix = labels.shape[0], prompt.shape[1]
    device = prompt.device
    sampling = sampling or SamplingParams()
    cache_len = prefix + model.num_tokens - 1
    stats = DecodeStats()

    def pick(logits: Tensor) -> Tensor:
        logits = logits.float()
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + cfg_scale * (cond - uncond)
        return sample_from_logits(logits, sampling, generator)

    tokens = torch.zeros(batch, model.num_tokens, dtype=torch.long, device=device)
    decoded = torch.zeros(cache_len, dtype=torch.bool, device=device)
    decoded[:prefix] = True
    lm.setup_cache(prompt.shape[0], cache_len)
    try:
        logits = lm(prompt, input_pos=torch.arange(prefix, device=device))
        stats.forward_passes += 1
        tokens[:, 0] = pick(logits[:, -1])
        for queries in schedule:
            slots = torch.tensor([prefix + q.position for q in queries], device=device)
            real = slots[torch.tensor([not q.stand_in for q in queries], device=device)]
            decoded[real] = True
            feed = tokens[:, [q.source for q in queries]]
            feed = feed.repeat(2, 1) if guided else feed
            mask = _attention_mask(queries, decoded, prefix)
            logits = model.transformer(feed, input_pos=slots, mask=mask)
            stats.forward_passes += 1
            predicting = [n for n, q in enumerate(queries) if q.target is not None]
            for index in sorted(predicting, key=lambda n: queries[n].target):  # raster order: seeded draws
                tokens[:, queries[index].target] = pick(logits[:, index])
    finally:
        lm.remove_cache()
    stats.new_tokens = model.num_tokens
    return tokens, stats
