"""The convolutional encoder / decoder shared by the image tokenizers (taming-transformers style).

LlamaGen's VQ-16, VAR's multi-scale VQVAE and MAR's KL-16 all use this design: a ResNet tower with
GroupNorm(32) + SiLU, 2x downsampling per level (asymmetric pad then stride-2 conv), spatial
self-attention at chosen levels and in the middle, and the mirror-image decoder with nearest-neighbour
upsampling and one extra ResNet block per level. One configurable implementation serves all three; the
converters in `genloom.image.convert` map each official naming onto it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups and eps 1e-6, as in all three official tokenizers (fewer groups, the largest
    divisor of 32 that divides `channels`, for the narrow test / preset widths)."""
    return nn.GroupNorm(num_groups=math.gcd(32, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv twice with a residual; a 1x1 `nin_shortcut` when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all pixels of a feature map (1x1 q, k, v and output convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (proj(y).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(c), as the official blocks use
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv (halves H and W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResNet block, optional self-attention, ResNet block (the bottleneck of encoder and decoder)."""

    def __init__(self, channels: int, *, attention: bool, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout=dropout)
        self.attn_1 = SpatialSelfAttention(channels) if attention else None
        self.block_2 = ResnetBlock(channels, channels, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        return self.block_2(x)


class Level(nn.Module):
    """One resolution level: ResNet blocks, each followed by attention when the level has it, then a resampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        n_blocks: int,
        attention: bool,
        resample: nn.Module | None,
        dropout: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout=dropout)
            for i in range(n_blocks)
        )
        self.attns = (
            nn.ModuleList(SpatialSelfAttention(out_channels) for _ in range(n_blocks)) if attention else None
        )
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.attns is not None:
                x = self.attns[i](x)
        return x if self.resample is None else self.resample(x)


@dataclass
class ConvNetConfig:
    """Shape of the encoder / decoder pair.

    ch_mult: channel multiplier per level; the downsampling factor is 2 ** (len(ch_mult) - 1).
    attn_levels: levels (0 = full resolution) whose ResNet blocks are followed by self-attention.
    z_channels: channels at the bottleneck (the encoder emits 2 * z_channels when `double_z`).
    """

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: Sequence[int] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_levels: Sequence[int] = field(default_factory=lambda: [4])
    mid_attention: bool = True
    z_channels: int = 256
    double_z: bool = False
    dropout: float = 0.0

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ch_mult"], data["attn_levels"] = list(self.ch_mult), list(self.attn_levels)
        return data


def nested_config_to_dict(config: Any) -> dict[str, Any]:
    """asdict() of a tokenizer config whose `net` field is a ConvNetConfig, with JSON-friendly lists."""
    data = asdict(config)
    data["net"] = config.net.to_dict()
    return data


def nested_config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Inverse of `nested_config_to_dict` (ignores the `family` key of saved configs)."""
    data = {k: v for k, v in data.items() if k != "family"}
    return cls(net=ConvNetConfig(**data.pop("net")), **data)


class ConvEncoder(nn.Module):
    """image (B, in_channels, H, W) -> features (B, z_channels [x2], H / f, W / f)."""

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        cfg = config
        n = len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        self.levels = nn.ModuleList(
            Level(
                cfg.ch * in_mult[i],
                cfg.ch * cfg.ch_mult[i],
                n_blocks=cfg.num_res_blocks,
                attention=i in cfg.attn_levels,
                resample=Downsample(cfg.ch * cfg.ch_mult[i]) if i != n - 1 else None,
                dropout=cfg.dropout,
            )
            for i in range(n)
        )
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = MidBlock(top, attention=cfg.mid_attention, dropout=cfg.dropout)
        self.norm_out = group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.z_channels * (2 if cfg.double_z else 1), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class ConvDecoder(nn.Module):
    """features (B, z_channels, h, w) -> image (B, out_channels, h * f, w * f); levels run from deepest up."""

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        cfg = config
        n = len(cfg.ch_mult)
        top = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = MidBlock(top, attention=cfg.mid_attention, dropout=cfg.dropout)
        # levels[i] works at the resolution of encoder level i; its input is the output of level i + 1.
        in_channels = [cfg.ch * cfg.ch_mult[min(i + 1, n - 1)] for i in range(n)]
        self.levels = nn.ModuleList(
            Level(
                in_channels[i],
                cfg.ch * cfg.ch_mult[i],
                n_blocks=cfg.num_res_blocks + 1,
                attention=i in cfg.attn_levels,
                resample=Upsample(cfg.ch * cfg.ch_mult[i]) if i != 0 else None,
                dropout=cfg.dropout,
            )
            for i in range(n)
        )
        self.norm_out = group_norm(cfg.ch * cfg.ch_mult[0])
        self.conv_out = nn.Conv2d(cfg.ch * cfg.ch_mult[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.levels):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))
