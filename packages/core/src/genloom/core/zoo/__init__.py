"""Model zoo: named presets, save/load of pretrained folders, weight sources."""

from genloom.core.zoo.preset import Preset, WeightSource

__all__ = ["Preset", "WeightSource"]
