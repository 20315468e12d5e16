"""MeshAnything V1 face grid, undiscretize, decode clean-up and id layout, without the parity fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from genloom.mesh3d.cleanup import mesh_from_triangles, triangle_set
from genloom.mesh3d.errors import MeshInputError, TokenSequenceError
from genloom.mesh3d.face_grid import (
    V1_VOCAB_SIZE,
    decode_face_grid,
    face_grid,
    undiscretize,
    v1_codes_from_generated,
    v1_token_count,
)
from genloom.mesh3d.preprocess import preprocess_mesh


def test_face_grid_round_trip_on_a_capsule() -> None:
    quantized = preprocess_mesh(trimesh.creation.capsule(height=1.0, radius=0.4, count=(8, 8)))
    grid = face_grid(quantized)
    assert grid.shape == (quantized.num_faces, 3, 3) and grid.dtype == np.int64
    np.testing.assert_array_equal(grid[5, 1], quantized.vertices_q[quantized.faces[5, 1]])
    decoded = decode_face_grid(torch.from_numpy(grid))
    assert triangle_set(decoded.vertices, decoded.faces) == triangle_set(quantized.vertices, quantized.faces)
    assert v1_token_count(quantized.num_faces) == 9 * quantized.num_faces + 2


def test_undiscretize_is_float32_bin_start() -> None:
    values = undiscretize(torch.tensor([0, 1, 64, 127]))
    assert values.dtype == torch.float32
    assert values.tolist() == [-0.5, -0.5 + 1 / 128, 0.0, 0.5 - 1 / 128]


def test_v1_cleanup_keeps_degenerate_faces_that_v2_drops() -> None:
    good = [[0, 0, 0], [10, 0, 0], [0, 10, 0]]
    collinear = [[0, 0, 0], [10, 0, 0], [20, 0, 0]]
    grid = np.array([good, collinear, good])  # the repeated face is dropped by both
    v1 = decode_face_grid(grid)
    assert len(v1.faces) == 2
    v2_style = mesh_from_triangles(undiscretize(grid).numpy())
    assert len(v2_style.faces) == 1


def test_face_mask_drops_faces() -> None:
    grid = np.array([[[0, 0, 0], [10, 0, 0], [0, 10, 0]], [[0, 0, 5], [10, 0, 5], [0, 10, 5]]])
    decoded = decode_face_grid(grid, face_mask=np.array([False, True]))
    assert len(decoded.faces) == 1 and np.allclose(decoded.vertices[:, 2], 5 / 128 - 0.5)
    with pytest.raises(MeshInputError, match="all faces are masked"):
        decode_face_grid(grid, face_mask=np.array([False, False]))
    with pytest.raises(MeshInputError, match="face_mask"):
        decode_face_grid(grid, face_mask=np.array([True]))


def test_decode_face_grid_rejects_bad_grids() -> None:
    with pytest.raises(MeshInputError, match=r"\(F, 3, 3\)"):
        decode_face_grid(np.zeros((4, 9), dtype=np.int64))
    with pytest.raises(MeshInputError, match="integer"):
        decode_face_grid(np.zeros((1, 3, 3)))
    with pytest.raises(MeshInputError, match=r"\[0, 128\)"):
        decode_face_grid(np.full((1, 3, 3), 128))


def test_v1_generated_ids_layout() -> None:
    # bos, one full face (9 codes), a face cut by eos after 4 codes, then padding
    face = list(range(3, 12))
    codes, mask = v1_codes_from_generated(torch.tensor([0, *face, 20, 21, 22, 23, 1]), max_faces=4)
    assert codes.shape == (4, 3, 3) and mask.tolist() == [True, False, False, False]
    assert codes[0].reshape(-1).tolist() == list(range(0, 9))
    assert codes[1].reshape(-1).tolist() == [17, 18, 19, 20, -1, -1, -1, -1, -1]
    with pytest.raises(TokenSequenceError, match="at most"):
        v1_codes_from_generated(torch.zeros(9 * 4 + 3, dtype=torch.long), max_faces=4)
    with pytest.raises(TokenSequenceError, match=str(V1_VOCAB_SIZE)):
        v1_codes_from_generated(torch.tensor([0, V1_VOCAB_SIZE]))
