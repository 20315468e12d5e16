"""The offline melody source renders the notes it says it renders, and files are written safely."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genloom.audio.audio_io import write_wav
from genloom.audio.demo import run_demo
from genloom.audio.melodies import estimate_notes, random_melody


def test_notes_are_recovered_from_the_audio() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        melody = random_melody(rng, n_notes=10)
        assert np.array_equal(
            estimate_notes(melody.audio, melody.sample_rate, melody.note_seconds), melody.notes
        )


def test_wav_round_trip_and_bad_input(tmp_path: Path) -> None:
    melody = random_melody(np.random.default_rng(2), n_notes=4)
    path = write_wav(tmp_path / "m.wav", melody.audio, melody.sample_rate)
    data, rate = sf.read(path)
    assert rate == melody.sample_rate and len(data) == len(melody.audio)
    assert np.abs(data - melody.audio).max() < 1e-3  # 16-bit quantisation
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_wav(tmp_path / "missing" / "m.wav", melody.audio, 16000)
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), 16000)
    with pytest.raises(ValueError, match="n_notes"):
        random_melody(np.random.default_rng(0), n_notes=0)


def test_demo_writes_playable_audio(tmp_path: Path) -> None:
    items = run_demo(tmp_path)
    assert {item.kind for item in items} == {"audio", "image"}
    for item in items:
        assert item.path.is_file() and item.path.stat().st_size > 1000
