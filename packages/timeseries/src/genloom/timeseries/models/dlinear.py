"""DLinear (Zeng et al., AAAI 2023): split the lookback into trend (moving average) and seasonal parts
and map each to the horizon with one Linear over time, shared across channels or one per channel."""

from __future__ import annotations

import torch
from torch import nn

from genloom.timeseries.models.config import TSLibConfig
from genloom.timeseries.models.layers import SeriesDecomposition


class DLinear(nn.Module):
    """Keys as the official `models/DLinear.py`: Linear_Seasonal / Linear_Trend (indexed when individual)."""

    def __init__(self, config: TSLibConfig):
        super().__init__()
        self.config = config
        self.decompsition = SeriesDecomposition(config.moving_avg)  # official attribute spelling
        self.individual, self.channels = config.individual, config.enc_in
        if self.individual:
            self.Linear_Seasonal = nn.ModuleList(
                [nn.Linear(config.seq_len, config.pred_len) for _ in range(self.channels)]
            )
            self.Linear_Trend = nn.ModuleList(
                [nn.Linear(config.seq_len, config.pred_len) for _ in range(self.channels)]
            )
        else:
            self.Linear_Seasonal = nn.Linear(config.seq_len, config.pred_len)
            self.Linear_Trend = nn.Linear(config.seq_len, config.pred_len)
        for linear in [*self._linears(self.Linear_Seasonal), *self._linears(self.Linear_Trend)]:
            nn.init.constant_(linear.weight, 1.0 / config.seq_len)  # the official init: an average

    @staticmethod
    def _linears(module: nn.Module) -> list[nn.Linear]:
        return list(module) if isinstance(module, nn.ModuleList) else [module]

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None) -> torch.Tensor:
        seasonal, trend = self.decompsition(x_enc)
        seasonal, trend = seasonal.permute(0, 2, 1), trend.permute(0, 2, 1)
        if self.individual:
            out = torch.stack(
                [
                    self.Linear_Seasonal[i](seasonal[:, i]) + self.Linear_Trend[i](trend[:, i])
                    for i in range(self.channels)
                ],
                dim=1,
            )
        else:
            out = self.Linear_Seasonal(seasonal) + self.Linear_Trend(trend)
        return out.permute(0, 2, 1)[:, -self.config.pred_len :]
