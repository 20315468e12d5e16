"""Offline image data sets: digits (scikit-learn, 32x32), procedural shapes, and the user's image folders."""

from __future__ import annotations

from pathlib import Path

from genloom.image.data.base import ImageDataset, stratified_split
from genloom.image.data.digits import load_digits_dataset
from genloom.image.data.folder import load_image_folder
from genloom.image.data.shapes import SHAPES_CLASS_NAMES, load_shapes_dataset, render_shapes
from genloom.image.errors import DatasetNotFoundError

BUILTIN_DATASETS = ("digits", "shapes")


def load_dataset(name_or_path: str | Path, split: str = "train", **folder_kwargs) -> ImageDataset:
    """A built-in data set by name ("digits", "shapes") or an image folder by path.

    `folder_kwargs` (image_size, channels, resize) apply to folders only; a folder has no held-out split,
    so `split` is ignored for it.
    """
    if str(name_or_path) == "digits":
        return load_digits_dataset(split)
    if str(name_or_path) == "shapes":
        return load_shapes_dataset(split)
    path = Path(name_or_path)
    if not path.exists():
        raise DatasetNotFoundError(
            f"data set {str(name_or_path)!r} is neither a built-in data set {list(BUILTIN_DATASETS)} "
            "nor an existing image folder"
        )
    return load_image_folder(path, **folder_kwargs)


__all__ = [
    "BUILTIN_DATASETS",
    "SHAPES_CLASS_NAMES",
    "ImageDataset",
    "load_dataset",
    "load_digits_dataset",
    "load_image_folder",
    "load_shapes_dataset",
    "render_shapes",
    "stratified_split",
]
