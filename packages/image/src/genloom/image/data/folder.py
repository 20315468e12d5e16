"""A folder of the user's own images as a class-conditional data set.

Layout: `root/<class name>/<image>` gives one class per sub-folder (sorted by name); image files directly
in `root` form a single class. Unreadable files are skipped and reported in `ImageDataset.skipped`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from genloom.image.data.base import ImageDataset
from genloom.image.errors import DatasetNotFoundError, ImageInputError

# Modes PIL converts to L / RGB without losing meaning; others (16-bit, float) need the user's own scaling.
CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def load_image_file(path: Path, *, image_size: int, channels: int, resize: bool) -> torch.Tensor:
    """Read one image as (channels, image_size, image_size) in [-1, 1]; raise ImageInputError on a bad image.

    Raises OSError / UnidentifiedImageError when the file is not a readable image at all.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode not in CONVERTIBLE_MODES:
            raise ImageInputError(
                f"{path}: image mode {img.mode!r} is not supported; expected one of {sorted(CONVERTIBLE_MODES)} "
                "(8-bit grey, palette or RGB)"
            )
        img = img.convert("RGB" if channels == 3 else "L")
        if img.size != (image_size, image_size):
            if not resize:
                raise ImageInputError(
                    f"{path}: image is {img.size[0]}x{img.size[1]}, expected {image_size}x{image_size} "
                    "(pass resize=True / --resize to centre-crop and resize)"
                )
            side = min(img.size)
            left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize(
                (image_size, image_size), Image.Resampling.BICUBIC
            )
        array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1)


def load_image_folder(
    root: str | Path, *, image_size: int = 32, channels: int = 3, resize: bool = False
) -> ImageDataset:
    """Load every readable image under `root` (see module docstring for the layout)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a directory")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = (
        [(d.name, _image_files(d)) for d in class_dirs] if class_dirs else [(root.name, _image_files(root))]
    )
    images, labels, skipped = [], [], []
    for label, (_, files) in enumerate(groups):
        for path in files:
            try:
                images.append(load_image_file(path, image_size=image_size, channels=channels, resize=resize))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                if isinstance(err, ImageInputError):
                    raise
                skipped.append((str(path), f"unreadable: {type(err).__name__}: {err}"))
                continue
            labels.append(label)
    if not images:
        raise ImageInputError(
            f"no readable images in {root} ({len(skipped)} unreadable files skipped); expected image files "
            "in class sub-folders or directly in the folder"
        )
    return ImageDataset(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=[name for name, _ in groups],
        name=root.name,
        skipped=skipped,
    )
