"""Mesh file reading and atomic writing, with the errors a user gets for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from genloom.core.errors import GenloomError
from genloom.mesh3d.cleanup import triangle_set
from genloom.mesh3d.errors import MeshInputError
from genloom.mesh3d.io import load_mesh, mesh_from_arrays, save_mesh


@pytest.mark.parametrize("suffix", [".obj", ".glb", ".ply", ".stl"])
def test_save_then_load_keeps_the_triangles(tmp_path: Path, suffix: str) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=1)
    path = save_mesh(mesh, tmp_path / f"sphere{suffix}")
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
    loaded = load_mesh(path)
    assert triangle_set(loaded.vertices, loaded.faces, decimals=6) == triangle_set(
        mesh.vertices, mesh.faces, decimals=6
    )


def test_save_is_atomic_and_checks_its_target(tmp_path: Path) -> None:
    target = tmp_path / "keep.obj"
    target.write_text("old content")
    with pytest.raises(MeshInputError, match="expected one of"):
        save_mesh(trimesh.creation.box(), tmp_path / "box.xyz")
    with pytest.raises(MeshInputError, match="with faces"):
        save_mesh(trimesh.Trimesh(), target)
    assert target.read_text() == "old content"
    with pytest.raises(GenloomError, match="does not exist"):
        save_mesh(trimesh.creation.box(), tmp_path / "missing" / "box.obj")


def test_polygons_in_files_are_triangulated(tmp_path: Path) -> None:
    path = tmp_path / "pentagon.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv -0.5 0.5 0\nf 1 2 3 4 5\n")
    mesh = load_mesh(path)
    assert mesh.faces.shape == (3, 3)


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(MeshInputError, match="does not exist"):
        load_mesh(tmp_path / "nope.obj")
    with pytest.raises(MeshInputError, match="not a file"):
        load_mesh(tmp_path)
    (tmp_path / "mesh.txt").write_text("v 0 0 0\n")
    with pytest.raises(MeshInputError, match="expected one of"):
        load_mesh(tmp_path / "mesh.txt")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\n")
    with pytest.raises(MeshInputError, match="no faces"):
        load_mesh(tmp_path / "points.obj")
    (tmp_path / "empty.obj").write_text("")
    with pytest.raises(MeshInputError, match="no faces"):
        load_mesh(tmp_path / "empty.obj")
    (tmp_path / "junk.glb").write_bytes(b"definitely not a glb")
    with pytest.raises(MeshInputError, match="cannot read .*junk.glb as a GLB mesh"):
        load_mesh(tmp_path / "junk.glb")


def test_mesh_from_arrays_triangulates_or_refuses_polygons() -> None:
    square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)
    mesh = mesh_from_arrays(square, np.array([[0, 1, 2, 3]]))
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    mixed = mesh_from_arrays(np.vstack([square, [[2, 0, 0]]]), [[0, 1, 2, 3], [1, 4, 2]])
    assert len(mixed.faces) == 3
    with pytest.raises(MeshInputError, match=r"faces must be triangles, got faces with \[4\]"):
        mesh_from_arrays(square, np.array([[0, 1, 2, 3]]), triangulate=False)
    with pytest.raises(MeshInputError, match="at least 3"):
        mesh_from_arrays(square, [[0, 1]])
    with pytest.raises(MeshInputError, match=r"\[0, 4\)"):
        mesh_from_arrays(square, [[0, 1, 4]])
    with pytest.raises(MeshInputError, match="NaN"):
        mesh_from_arrays(np.where(square == 1, np.nan, square), [[0, 1, 2]])
    with pytest.raises(MeshInputError, match=r"\(V, 3\)"):
        mesh_from_arrays(square[:, :2], [[0, 1, 2]])
    with pytest.raises(MeshInputError, match="empty"):
        mesh_from_arrays(square, np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(MeshInputError, match="integer"):
        mesh_from_arrays(square, np.array([[0.0, 1.0, 2.0]]))
