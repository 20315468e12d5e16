"""Presets of genloom-timeseries, registered through the `genloom.zoo` entry point."""

from genloom.core.zoo import Preset

PRESETS: list[Preset] = []
