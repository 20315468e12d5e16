"""Demo of genloom-video: writes real outputs from the shipped presets."""

from pathlib import Path

from genloom.core.demo import DemoItem


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Write this package's demo outputs under out_dir."""
    raise NotImplementedError("genloom-video has no demo yet")
