"""Synthesised melodies: an offline audio data source whose content (the notes) is known exactly.

Each clip is a sequence of notes from a scale, rendered as harmonic tones with an ADSR-like envelope.
Because the notes are known, a model trained on these clips can be judged by recovering them
(`estimate_notes`), with no download and no human listening.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

A4_HZ = 440.0
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    """Equal-tempered frequency of a MIDI note number."""
    return A4_HZ * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


@dataclass(frozen=True)
class Melody:
    """A rendered clip and the notes (MIDI numbers) it was rendered from."""

    audio: np.ndarray  # float32 [samples], in [-1, 1]
    sample_rate: int
    notes: np.ndarray  # int64 [n_notes]
    note_seconds: float


def random_melody(
    rng: np.random.Generator,
    *,
    n_notes: int = 8,
    note_seconds: float = 0.25,
    sample_rate: int = 16_000,
    tonic_midi: int = 60,
    harmonics: int = 3,
) -> Melody:
    """Render `n_notes` notes drawn from a major scale over two octaves starting at `tonic_midi`."""
    if n_notes < 1 or note_seconds <= 0 or sample_rate < 1000:
        raise ValueError(
            f"need n_notes >= 1, note_seconds > 0, sample_rate >= 1000; got {n_notes}, {note_seconds}, {sample_rate}"
        )
    degrees = np.array([d + 12 * o for o in (0, 1) for d in MAJOR_SCALE])
    notes = tonic_midi + rng.choice(degrees, size=n_notes)
    per_note = int(round(note_seconds * sample_rate))
    t = np.arange(per_note) / sample_rate
    attack, release = int(0.01 * sample_rate), int(0.05 * sample_rate)
    envelope = np.ones(per_note)
    envelope[:attack] = np.linspace(0.0, 1.0, attack)
    envelope[-release:] = np.linspace(1.0, 0.0, release)
    chunks = []
    for midi in notes:
        f0 = float(midi_to_hz(midi))
        tone = sum((0.6**k) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(harmonics))
        chunks.append(tone * envelope)
    audio = np.concatenate(chunks)
    audio = (0.8 * audio / np.max(np.abs(audio))).astype(np.float32)
    return Melody(
        audio=audio, sample_rate=sample_rate, notes=notes.astype(np.int64), note_seconds=note_seconds
    )


def estimate_notes(audio: np.ndarray, sample_rate: int, note_seconds: float) -> np.ndarray:
    """Recover one MIDI note per segment from the strongest spectral peak (Hann window, zero padding)."""
    per_note = int(round(note_seconds * sample_rate))
    n_notes = len(audio) // per_note
    if n_notes == 0:
        raise ValueError(f"audio of {len(audio)} samples is shorter than one note ({per_note} samples)")
    segments = audio[: n_notes * per_note].reshape(n_notes, per_note) * np.hanning(per_note)
    n_fft = 1 << int(np.ceil(np.log2(per_note * 4)))
    spectrum = np.abs(np.fft.rfft(segments, n=n_fft, axis=1))
    peak_hz = np.argmax(spectrum, axis=1) * sample_rate / n_fft
    return np.round(69 + 12 * np.log2(np.maximum(peak_hz, 1e-6) / A4_HZ)).astype(np.int64)
