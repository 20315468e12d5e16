"""Demo of genloom-audio.

No trained audio preset ships yet, so the demo writes the package's offline training data (a synthesised
melody and its spectrogram) and says so; trained TTS / music presets replace it when they land.
"""

from pathlib import Path

import numpy as np

from genloom.audio.audio_io import save_spectrogram, write_wav
from genloom.audio.melodies import random_melody
from genloom.core.demo import DemoItem


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Write a synthesised melody (WAV) and its spectrogram (PNG) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    melody = random_melody(np.random.default_rng(0), n_notes=12)
    wav = write_wav(out_dir / "melody.wav", melody.audio, melody.sample_rate)
    png = save_spectrogram(out_dir / "melody_spectrogram.png", melody.audio, melody.sample_rate, "melody")
    notes = " ".join(str(n) for n in melody.notes)
    caption = f"offline training data, not model output (no trained audio preset yet); MIDI notes: {notes}"
    return [
        DemoItem("synthesised melody", wav, "audio", caption),
        DemoItem("its spectrogram", png, "image", caption),
    ]
