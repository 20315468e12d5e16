"""Rotary position embeddings (RoPE) in 1D, 2D and 3D, as explicit cos/sin tables indexed by position id.

A table row is one position; its `head_dim / 2` columns are the rotation angles of the head's channel pairs.
`apply_rope(x, cos, sin, layout)` rotates pair `j` by angle column `j`, where the pairs are
- "interleaved": channels (2j, 2j+1) (LlamaGen, Meta Llama, EVA, Flux: complex-number layout),
- "half": channels (j, j + head_dim/2) (GPT-NeoX, Hugging Face Llama, Qwen2-VL: rotate-half layout).

Multi-axis tables give each axis a contiguous range of pair columns (2D: rows first, then columns; 3D:
time, rows, columns), each axis using the 1D frequencies of its own sub-dimension. This is exactly
LlamaGen's `precompute_freqs_cis_2d`. Because the tables are plain tensors, a caller can build any layout:
a grid after prefix tokens that get a zero rotation (cos = sin = 0: q and k become zero, LlamaGen's class
token) or no rotation (cos = 1, sin = 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genloom.core.errors import ConfigError, InputError

__all__ = [
    "rope_frequencies",
    "rope_1d",
    "rope_2d",
    "rope_3d",
    "rope_from_coords",
    "add_prefix",
    "apply_rope",
]


def rope_frequencies(dim: int, theta: float = 10000.0) -> Tensor:
    """The `dim / 2` angular frequencies `theta ** (-2j / dim)` of a 1D rotary embedding over `dim` channels."""
    if dim % 2 or dim < 0:
        raise ConfigError(f"a rotary sub-dimension must be even and >= 0, got {dim}")
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu")[: dim // 2] / dim))


def _even_split(head_dim: int, n_axes: int) -> list[int]:
    pairs = head_dim // 2
    base, extra = divmod(pairs, n_axes)
    return [2 * (base + (1 if axis < extra else 0)) for axis in range(n_axes)]


def rope_from_coords(
    coords: Tensor, head_dim: int, *, theta: float = 10000.0, axis_dims: list[int] | None = None
) -> tuple[Tensor, Tensor]:
    """cos/sin tables [N, head_dim/2] (float32) for integer or real coordinates `coords` [N, n_axes].

    Axis `a` owns `axis_dims[a]` channels (pair columns in axis order); None splits head_dim as evenly as
    possible (earlier axes get the spare pair).
    """
    if coords.dim() == 1:
        coords = coords[:, None]
    n_axes = coords.shape[1]
    if head_dim % 2:
        raise ConfigError(f"RoPE needs an even head_dim, got {head_dim}")
    dims = _even_split(head_dim, n_axes) if axis_dims is None else list(axis_dims)
    if len(dims) != n_axes or sum(dims) != head_dim:
        raise ConfigError(f"axis_dims {dims} must have {n_axes} entries summing to head_dim={head_dim}")
    angles = [
        coords[:, axis, None].double() * rope_frequencies(d, theta).to(coords.device)[None, :]
        for axis, d in enumerate(dims)
    ]
    angle = torch.cat(angles, dim=1)
    return angle.cos().float(), angle.sin().float()


def add_prefix(cos: Tensor, sin: Tensor, prefix: int, rotation: str = "zero") -> tuple[Tensor, Tensor]:
    """Prepend `prefix` rows: "zero" (cos = sin = 0, LlamaGen's class tokens) or "identity" (no rotation)."""
    if rotation not in ("zero", "identity"):
        raise ConfigError(f"prefix rotation must be 'zero' or 'identity', got {rotation!r}")
    if prefix == 0:
        return cos, sin
    prefix_cos = cos.new_full((prefix, cos.shape[1]), 0.0 if rotation == "zero" else 1.0)
    prefix_sin = sin.new_zeros((prefix, sin.shape[1]))
    return torch.cat([prefix_cos, cos]), torch.cat([prefix_sin, sin])


def _grid_coords(sizes: list[int]) -> Tensor:
    axes = [torch.arange(n, device="cpu") for n in sizes]  # explicit: tables stay real under a meta build
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


def rope_1d(n_positions: int, head_dim: int, *, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Standard 1D RoPE: row p rotates pair j by `p * theta ** (-2j / head_dim)`. Returns cos, sin [n, head_dim/2]."""
    return rope_from_coords(torch.arange(n_positions, device="cpu"), head_dim, theta=theta)


def rope_2d(
    height: int,
    width: int,
    head_dim: int,
    *,
    theta: float = 10000.0,
    axis_dims: list[int] | None = None,
    prefix: int = 0,
    prefix_rotation: str = "zero",
) -> tuple[Tensor, Tensor]:
    """2D RoPE over a row-major `height x width` grid: the first pair columns rotate with the row index,
    the rest with the column index. `prefix` rows come first (see `add_prefix`)."""
    cos, sin = rope_from_coords(_grid_coords([height, width]), head_dim, theta=theta, axis_dims=axis_dims)
    return add_prefix(cos, sin, prefix, prefix_rotation)


def rope_3d(
    frames: int,
    height: int,
    width: int,
    head_dim: int,
    *,
    theta: float = 10000.0,
    axis_dims: list[int] | None = None,
    prefix: int = 0,
    prefix_rotation: str = "zero",
) -> tuple[Tensor, Tensor]:
    """3D RoPE over a (time, row, column)-major grid; pair columns go to time, rows, columns in order."""
    cos, sin = rope_from_coords(
        _grid_coords([frames, height, width]), head_dim, theta=theta, axis_dims=axis_dims
    )
    return add_prefix(cos, sin, prefix, prefix_rotation)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, layout: str = "interleaved") -> Tensor:
    """Rotate the channel pairs of `x` [..., D] by the angles whose cos/sin are given ([..., D/2], broadcast
    against `x.shape[:-1]`; for x [B, H, L, D] pass [L, D/2] or [B, 1, L, D/2]). Computed in at least float32."""
    half = x.shape[-1] // 2
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise InputError(f"RoPE tables have {cos.shape[-1]} pair columns but x has head_dim {x.shape[-1]}")
    compute = torch.promote_types(x.dtype, torch.float32)  # float32 for bf16/fp16/fp32, float64 stays
    xf = x.to(compute)
    cos, sin = cos.to(compute), sin.to(compute)
    if layout == "interleaved":
        pairs = xf.unflatten(-1, (half, 2))
        first, second = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([first * cos - second * sin, second * cos + first * sin], dim=-1).flatten(-2)
    elif layout == "half":
        first, second = xf[..., :half], xf[..., half:]
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
    else:
        raise ConfigError(f"rope layout must be 'interleaved' or 'half', got {layout!r}")
    return rotated.type_as(x)


def rope_tables_for(config) -> tuple[Tensor, Tensor] | None:  # noqa: ANN001 - TransformerConfig (avoid cycle)
    """The default tables of a `TransformerConfig` (None when rope == "none")."""
    if config.rope == "none":
        return None
    if config.rope == "1d":
        cos, sin = rope_from_coords(
            torch.arange(config.max_seq_len - config.rope_prefix, device="cpu"),
            config.head_size,
            theta=config.rope_theta,
        )
        return add_prefix(cos, sin, config.rope_prefix, config.rope_prefix_rotation)
    grid = list(config.rope_grid)
    cos, sin = rope_from_coords(
        _grid_coords(grid), config.head_size, theta=config.rope_theta, axis_dims=config.rope_axis_dims
    )
    return add_prefix(cos, sin, config.rope_prefix, config.rope_prefix_rotation)
