"""Offline data sets: digits, procedural shapes, and user image folders (skips, size and mode errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genloom.image.data import SHAPES_CLASS_NAMES, load_dataset, load_image_folder, render_shapes
from genloom.image.errors import DatasetNotFoundError, ImageInputError, UnknownClassError


def test_digits_are_32x32_grey_with_disjoint_deterministic_splits() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape[1:] == (1, 32, 32) and test.images.shape[1:] == (1, 32, 32)
    assert len(train) + len(test) == 1797
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert set(test.labels.tolist()) == set(range(10))
    # no held-out image equals a training image (the split is by index, the digits data has no duplicates)
    flat_train = {tuple(x.flatten().tolist()) for x in train.images[:300]}
    assert not any(tuple(x.flatten().tolist()) in flat_train for x in test.images)
    again = load_dataset("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_shapes_classes_carry_their_colour_and_splits_differ() -> None:
    train = load_dataset("shapes", "train")
    test = load_dataset("shapes", "test")
    assert train.images.shape[1:] == (3, 32, 32)
    assert train.num_classes == 12 == len(SHAPES_CLASS_NAMES)
    assert not torch.equal(train.images[:100], test.images[:100])
    for label, name in enumerate(SHAPES_CLASS_NAMES):
        images = train.images[train.labels == label][:20]
        brightest = images.amax(dim=(2, 3)).mean(0)  # per-channel peak, averaged over images
        expected = {"red": 0, "green": 1, "blue": 2}[name.split()[0]]
        assert brightest.argmax().item() == expected, name


def test_shapes_render_is_seeded_and_shapes_differ_in_area() -> None:
    a = render_shapes("circle", "red", 4, seed=3)
    b = render_shapes("circle", "red", 4, seed=3)
    assert torch.equal(a, b)
    cross = render_shapes("cross", "red", 64, seed=0)[:, 0]
    square = render_shapes("square", "red", 64, seed=0)[:, 0]
    # same radii (same seed): the cross covers (20/9) r^2, the square (1.7 r)^2, a ratio of 0.77
    ratio = (cross > 0).float().mean() / (square > 0).float().mean()
    assert 0.65 < ratio < 0.85


def test_class_lookup_errors_name_the_valid_range() -> None:
    data = load_dataset("shapes", "test")
    assert data.class_index("green cross") == SHAPES_CLASS_NAMES.index("green cross")
    assert data.class_index("3") == 3
    with pytest.raises(UnknownClassError, match="0..11"):
        data.class_index(12)
    with pytest.raises(UnknownClassError, match="purple"):
        data.class_index("purple circle")


def _write(path, size=(32, 32), mode="RGB", colour=(200, 10, 10)):
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path)


def test_image_folder_skips_unreadable_files_and_counts_them(tmp_path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    _write(tmp_path / "cats" / "a.png")
    _write(tmp_path / "cats" / "b.png", mode="L")  # grey converted to RGB
    _write(tmp_path / "dogs" / "c.jpg", colour=(0, 0, 250))
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "dogs" / "notes.txt").write_text("hello")
    data = load_image_folder(tmp_path)
    assert data.class_names == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 1]
    assert len(data.skipped) == 2 and all("unreadable" in reason for _, reason in data.skipped)
    assert data.images.shape == (3, 3, 32, 32)
    red = data.images[0, :, 0, 0]
    assert red[0] > 0.5 and red[1] < -0.8  # (200, 10, 10) mapped to [-1, 1]
    np.testing.assert_allclose(data.images[1, :, 0, 0].numpy(), [128 / 127.5 - 1] * 3, atol=1e-6)


def test_image_folder_wrong_size_is_a_clear_error_or_resized(tmp_path) -> None:
    _write(tmp_path / "big.png", size=(64, 48))
    with pytest.raises(ImageInputError, match="64x48, expected 32x32"):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, resize=True, channels=1)
    assert data.images.shape == (1, 1, 32, 32)


def test_image_folder_unsupported_mode_and_missing_folder(tmp_path) -> None:
    Image.fromarray(np.zeros((32, 32), dtype=np.float32), mode="F").save(tmp_path / "float.tiff")
    with pytest.raises(ImageInputError, match="mode 'F'"):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="neither a built-in"):
        load_dataset(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError, match="no readable images"):
        load_image_folder(empty)
