"""Safe file I/O: atomic writes, checked safetensors reads, and pickle-free torch checkpoint loading.

Every file genloom writes goes to a temporary file in the same folder and is renamed into place, so a
crash never leaves a half-written checkpoint under the final name. Every pickled checkpoint genloom reads
goes through `torch.load(weights_only=True)` with an explicit allow-list of data-only types: a pickle that
would import or call anything else is refused before any of it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloom.core.errors import CheckpointError, OutputPathError, UnsafeCheckpointError

if TYPE_CHECKING:  # torch is imported where it is used, so the CLI starts without it
    import torch

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------------------


def ensure_parent_dir(path: PathLike) -> Path:
    """Return `path` as a Path, or raise OutputPathError when the folder it would be written into is missing."""
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: the folder {parent} does not exist (create it first)")
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    path = ensure_parent_dir(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    mode = 0o666 & ~_current_umask()  # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp
        os.chmod(tmp, mode)  # again after the write: some writers (safetensors) recreate the file
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write `obj` as JSON (sorted keys for stable diffs) to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def atomic_save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: PathLike, *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save a flat name -> tensor dict as safetensors atomically (tensors are moved to CPU, made contiguous)."""
    from safetensors.torch import save_file

    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


def sha256_file(path: PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# checked reads
# ----------------------------------------------------------------------------------------------------------


def read_json(path: PathLike, *, what: str = "JSON file") -> Any:
    """Read a JSON file, raising CheckpointError with the file name on a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from None


def safetensors_shapes(path: PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """Read only the header of a safetensors file: name -> (shape, dtype string).

    Checks that the header parses and that the file is long enough for every tensor it declares, so a
    truncated download is reported here with its size instead of later as a deep safetensors error.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: {size} bytes, shorter than its header")
        header_len = int.from_bytes(raw_len, "little")
        if header_len > size - 8 or header_len > 100_000_000:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file: header says {header_len} bytes, "
                f"file has {size} bytes"
            )
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path} is not a safetensors file: its header is not JSON") from None
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shapes[name] = (tuple(int(d) for d in info["shape"]), str(info["dtype"]))
            data_end = max(data_end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(f"{path} has a malformed safetensors header entry for {name!r}") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise CheckpointError(f"{path} is truncated: expected {expected} bytes, file has {size} bytes")
    return shapes


def load_safetensors(path: PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file into a dict, with a one-line CheckpointError for missing/truncated files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors_shapes(path)  # validates header and length first
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: {first_line}") from None


# ----------------------------------------------------------------------------------------------------------
# pickled torch checkpoints, safely
# ----------------------------------------------------------------------------------------------------------


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:  # numpy is optional for reading torch files
        return []
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    found: list[Any] = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in getattr(dtypes, "__all__", [])]
    return found


def official_checkpoint_globals() -> list[Any]:
    """Data-only types that official training scripts commonly pickle beside their tensors.

    argparse.Namespace (saved training args) and numpy scalars, arrays and dtypes (saved metrics,
    RNG states). Unpickling them builds plain data; none of them imports or calls user code.
    """
    return [argparse.Namespace, *_numpy_globals()]


_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(
    path: PathLike,
    *,
    extra_globals: Iterable[Any] = (),
    map_location: str | torch.device = "cpu",
) -> Any:
    """Load a pickled torch checkpoint with `weights_only=True` and an explicit allow-list.

    The allow-list is `official_checkpoint_globals()` plus `extra_globals` (classes a converter trusts).
    A file whose pickle references anything else is refused with UnsafeCheckpointError before any of it
    runs; a missing or corrupt file raises CheckpointError.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    allowed = official_checkpoint_globals() + list(extra_globals)
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path, str(exc))
        culprit = (
            f"references {', '.join(names)}" if names else "uses pickle features outside the data-only subset"
        )
        raise UnsafeCheckpointError(
            f"refused to load {path}: its pickle {culprit}, which is not on the allow-list of data-only "
            f"types (nothing was executed); pass extra_globals only if you trust this file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from None


def _unsafe_globals(path: Path, message: str) -> list[str]:
    """Names of the globals a checkpoint would import, from the zip header or torch's error message."""
    import torch

    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: fall back to the name torch reported
        names = []
    allowed = {f"{obj.__module__}.{obj.__qualname__}" for obj in official_checkpoint_globals()}
    names = [name for name in names if name not in allowed]
    if not names:
        names = _GLOBAL_IN_MESSAGE.findall(message)
    return names


__all__ = [
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "ensure_parent_dir",
    "load_safetensors",
    "official_checkpoint_globals",
    "read_json",
    "safe_torch_load",
    "safetensors_shapes",
    "sha256_file",
]
