"""Presets of genloom-image, registered through the `genloom.zoo` entry point."""

from genloom.core.zoo import Preset

PRESETS: list[Preset] = []
