"""Where a preset's weights come from: a package folder, a checked download, or a converted checkpoint.

`resolve_preset_dir(preset)` returns a local preset folder (STYLE.md #7: `preset.json`, `model/config.json`,
`model/model.safetensors`, optional `tokenizer/`) or None for a "random" preset:

- "package": `importlib.resources.files(package) / path`, shipped inside the wheel;
- "url": downloaded once into `GENLOOM_HOME` (default `~/.cache/genloom`) with urllib, to a temp file,
  checked against sha256, then renamed. A `.safetensors` file becomes `model/model.safetensors` beside a
  `config.json` written from the preset; a `.zip`/`.tar(.gz)` is unpacked (paths checked) as the folder;
- "converter": a local official checkpoint (`path`, or a `url` + sha256 download) is turned into a
  preset folder by the preset's "module:function" converter, called as `fn(checkpoint, out_dir, preset=...)`.

`GENLOOM_OFFLINE=1` forbids any network access: a missing file is reported with the path to place it at.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

from genloom.core.errors import CheckpointError, ConfigError
from genloom.core.io import atomic_write_json, sha256_file
from genloom.core.zoo.preset import Preset
from genloom.core.zoo.registry import import_object

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def genloom_home() -> Path:
    """The cache folder for downloads and converted presets: `$GENLOOM_HOME` or `~/.cache/genloom`."""
    return Path(os.environ.get("GENLOOM_HOME") or Path.home() / ".cache" / "genloom").expanduser()


def is_offline() -> bool:
    """True when `GENLOOM_OFFLINE` is set to 1/true/yes: never touch the network."""
    return os.environ.get("GENLOOM_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _is_local_url(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme == "file"


def _default_filename(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise ConfigError(f"cannot tell a file name from URL {url!r}; set WeightSource.filename")
    return name


def download_file(url: str, dest: Path, *, sha256: str, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` atomically: stream to a temp file, verify sha256, then rename.

    An existing `dest` with the right hash is reused. A hash mismatch deletes the temp file and raises
    CheckpointError naming both hashes. In offline mode only `file://` URLs are read.
    """
    dest = Path(dest)
    if not sha256:
        raise ConfigError(f"refusing to download {url}: the weight source has no sha256 to check it against")
    sha256 = sha256.lower()
    if dest.is_file():
        if sha256_file(dest) == sha256:
            return dest
        raise CheckpointError(
            f"{dest} exists but its sha256 is {sha256_file(dest)}, expected {sha256}; delete it to download again"
        )
    if is_offline() and not _is_local_url(url):
        raise CheckpointError(
            f"GENLOOM_OFFLINE=1 and {dest} is missing: download {url} yourself and place it at {dest} "
            f"(sha256 {sha256})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise CheckpointError(
                f"download of {url} has sha256 {got}, expected {sha256}; the file was discarded"
            )
        os.replace(tmp_name, dest)
    except OSError as exc:  # URLError is an OSError
        raise CheckpointError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return dest


def _check_member_path(root: Path, name: str) -> None:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise CheckpointError(f"archive member {name!r} would be written outside its folder; refused")


def _extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into `dest` atomically, refusing links and paths that leave `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_member_path(tmp, name)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _check_member_path(tmp, member.name)
                    if not (member.isfile() or member.isdir()):
                        raise CheckpointError(f"archive member {member.name!r} is not a plain file; refused")
                tf.extractall(tmp, filter="data")
        # an archive holding one top-level folder is that folder
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        os.replace(root, dest)
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise CheckpointError(f"cannot unpack {archive}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_preset_json(folder: Path, preset: Preset) -> Path:
    """Write the preset's identity (name, family, modality, description, card) as `folder/preset.json`."""
    info = {
        "name": preset.name,
        "family": preset.family,
        "modality": preset.modality,
        "description": preset.description,
        "card": dict(preset.card),
    }
    return atomic_write_json(folder / "preset.json", info)


def _package_folder(preset: Preset) -> Path:
    src = preset.source
    if not src.package or not src.path:
        raise ConfigError(f"preset {preset.name!r}: a 'package' weight source needs package and path")
    try:
        traversable = resources.files(src.package).joinpath(src.path)
    except ModuleNotFoundError:
        raise ConfigError(f"preset {preset.name!r}: package {src.package!r} is not installed") from None
    if not traversable.is_dir():
        raise CheckpointError(
            f"preset {preset.name!r}: folder {src.path!r} is missing from package {src.package!r} "
            f"(the package was installed without its weights)"
        )
    if isinstance(traversable, Path):
        return traversable
    # a zipped install: copy the folder out once into the cache
    dest = genloom_home() / "packages" / src.package / src.path
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".pkg.", dir=_mkdir(dest.parent)))
        _copy_traversable(traversable, tmp)
        os.replace(tmp, dest)
    return dest


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _copy_traversable(node, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.is_dir():
            _copy_traversable(child, dest / child.name)
        else:
            (dest / child.name).write_bytes(child.read_bytes())


def preset_cache_dir(preset: Preset) -> Path:
    """The folder under GENLOOM_HOME where a downloaded or converted preset lives."""
    return genloom_home() / "presets" / preset.name


def _url_folder(preset: Preset) -> Path:
    src = preset.source
    if not src.url:
        raise ConfigError(f"preset {preset.name!r}: a 'url' weight source needs a url")
    folder = preset_cache_dir(preset)
    filename = src.filename or _default_filename(src.url)
    if filename.endswith(".safetensors"):
        weights = folder / "model" / "model.safetensors"
        if not weights.is_file():
            download_file(src.url, weights, sha256=src.sha256 or "")
        if not (folder / "model" / "config.json").is_file():
            atomic_write_json(folder / "model" / "config.json", {"family": preset.family, **preset.config})
        if not (folder / "preset.json").is_file():
            write_preset_json(folder, preset)
        return folder
    if filename.endswith(_ARCHIVE_SUFFIXES):
        if folder.is_dir():
            return folder
        archive = download_file(src.url, genloom_home() / "downloads" / filename, sha256=src.sha256 or "")
        _extract_archive(archive, folder)
        return folder
    raise ConfigError(
        f"preset {preset.name!r}: cannot use downloaded file {filename!r}; expected .safetensors, .zip or .tar(.gz)"
    )


def official_checkpoint_path(preset: Preset) -> Path:
    """Where the official checkpoint of a converter preset is read from (or downloaded to)."""
    src = preset.source
    if src.path:
        path = Path(src.path).expanduser()
        return path if path.is_absolute() else genloom_home() / "checkpoints" / path
    if src.url:
        return genloom_home() / "checkpoints" / (src.filename or _default_filename(src.url))
    if src.filename:
        return genloom_home() / "checkpoints" / src.filename
    raise ConfigError(f"preset {preset.name!r}: a 'converter' source needs a path, filename or url")


def _converter_folder(preset: Preset, checkpoint: Path | None) -> Path:
    src = preset.source
    if not src.converter:
        raise ConfigError(f"preset {preset.name!r}: a 'converter' weight source needs a converter")
    folder = preset_cache_dir(preset)
    if checkpoint is None and folder.is_dir():
        return folder
    if checkpoint is None:
        checkpoint = official_checkpoint_path(preset)
        if not checkpoint.is_file():
            if src.url:
                download_file(src.url, checkpoint, sha256=src.sha256 or "")
            else:
                raise CheckpointError(
                    f"preset {preset.name!r} is converted from an official checkpoint: place it at {checkpoint}"
                )
    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.is_file():
        raise CheckpointError(f"official checkpoint {checkpoint} does not exist")
    convert = import_object(src.converter)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        convert(checkpoint, tmp, preset=preset)
        if not (tmp / "preset.json").is_file():
            write_preset_json(tmp, preset)
        if folder.is_dir():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_preset_dir(preset: Preset, *, checkpoint: str | os.PathLike[str] | None = None) -> Path | None:
    """A local preset folder for `preset` (downloading or converting as needed), or None for "random".

    `checkpoint` forces a converter preset to (re)convert from that local official checkpoint.
    """
    kind = preset.source.kind
    if kind == "package":
        return _package_folder(preset)
    if kind == "url":
        return _url_folder(preset)
    if kind == "converter":
        return _converter_folder(preset, Path(checkpoint) if checkpoint is not None else None)
    if kind == "random":
        return None
    raise ConfigError(f"preset {preset.name!r} has an unknown weight source kind {kind!r}")


def local_preset_dir(preset: Preset) -> Path | None:
    """The preset's folder if it is already on this machine (shipped or cached); never downloads."""
    kind = preset.source.kind
    if kind == "package":
        try:
            return _package_folder(preset)
        except (ConfigError, CheckpointError):
            return None
    if kind in ("url", "converter"):
        folder = preset_cache_dir(preset)
        return folder if folder.is_dir() else None
    return None


def describe_source(preset: Preset) -> str:
    """A short human description of where a preset's weights are (for `genloom zoo list`)."""
    src = preset.source
    if src.kind == "package":
        return f"package {src.package}/{src.path}"
    if src.kind == "random":
        return "random init (no weights)"
    cached = preset_cache_dir(preset).is_dir()
    if src.kind == "url":
        return f"{'cached' if cached else 'download'}: {src.url}"
    if src.kind == "converter":
        return f"{'converted (cached)' if cached else 'convert'}: {official_checkpoint_path(preset)}"
    return src.kind


__all__ = [
    "describe_source",
    "download_file",
    "genloom_home",
    "is_offline",
    "local_preset_dir",
    "official_checkpoint_path",
    "preset_cache_dir",
    "resolve_preset_dir",
    "write_preset_json",
]
