"""Audio files users can play and pictures they can look at: atomic WAV writing and spectrogram plots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono or [channels, samples] float audio as 16-bit PCM WAV, atomically (temp file, rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants [samples, channels]
    elif data.ndim != 1:
        raise ValueError(f"audio must be [samples] or [channels, samples], got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("audio contains NaN or infinite samples")
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_spectrogram(path: str | Path, audio: np.ndarray, sample_rate: int, title: str = "") -> Path:
    """Save a log-magnitude spectrogram PNG (matplotlib, Agg backend), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.specgram(np.asarray(audio, dtype=np.float64), NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_ylim(0, min(sample_rate / 2, 4000))
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
