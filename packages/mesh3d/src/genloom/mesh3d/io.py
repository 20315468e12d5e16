"""Reading and writing triangle meshes (OBJ, PLY, GLB/GLTF, STL, OFF) through trimesh, with clear errors.

Reading goes through `trimesh.load(path, force="mesh")` with trimesh's default processing, which is what
the official MeshAnything data path does (scenes are concatenated, polygons are fan-triangulated).
Writing is atomic: the file is written beside its target and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from genloom.core.io import atomic_write_bytes
from genloom.mesh3d.errors import MeshInputError
from genloom.mesh3d.preprocess import check_triangle_arrays

READ_FORMATS = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
WRITE_FORMATS = (".obj", ".ply", ".glb", ".stl")


def load_mesh(path: str | os.PathLike[str]) -> trimesh.Trimesh:
    """Load a triangle mesh; raise MeshInputError for a missing file, an unknown format, a file that is
    not a mesh, or a mesh without faces."""
    path = Path(path)
    if not path.exists():
        raise MeshInputError(f"mesh file {path} does not exist")
    if not path.is_file():
        raise MeshInputError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in READ_FORMATS:
        raise MeshInputError(f"cannot read {path}: expected one of {', '.join(READ_FORMATS)}, got {suffix!r}")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as error:  # trimesh raises many types for malformed files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MeshInputError(f"cannot read {path} as a {suffix[1:].upper()} mesh: {message}") from error
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshInputError(f"{path} is not a triangle mesh (trimesh read a {type(mesh).__name__})")
    if len(mesh.faces) == 0:
        raise MeshInputError(
            f"{path} holds no faces ({len(mesh.vertices)} vertices): it is empty, or only points or lines"
        )
    check_triangle_arrays(mesh.vertices, mesh.faces, what=str(path))
    return mesh


def mesh_from_arrays(
    vertices: np.ndarray, faces: np.ndarray | list[list[int]], *, triangulate: bool = True
) -> trimesh.Trimesh:
    """Build a trimesh from vertices (V, 3) and faces: triangles (F, 3), or polygons (an (F, k) array or a
    list of index lists) that are fan-triangulated when `triangulate` is True and refused otherwise."""
    if isinstance(faces, np.ndarray):
        if faces.ndim != 2:
            raise MeshInputError(f"faces must have shape (F, k), got {faces.shape}")
        if faces.size and not np.issubdtype(faces.dtype, np.integer):
            raise MeshInputError(f"faces must be integer vertex indices, got dtype {faces.dtype}")
    face_lists = [list(face) for face in (faces.tolist() if isinstance(faces, np.ndarray) else faces)]
    sizes = {len(face) for face in face_lists}
    if sizes and min(sizes) < 3:
        raise MeshInputError(f"every face needs at least 3 vertices, got a face with {min(sizes)}")
    if sizes - {3}:
        if not triangulate:
            raise MeshInputError(
                f"faces must be triangles, got faces with {sorted(sizes - {3})} vertices "
                "(pass triangulate=True to fan-triangulate them)"
            )
        face_lists = [[face[0], face[i], face[i + 1]] for face in face_lists for i in range(1, len(face) - 1)]
    triangles = np.asarray(face_lists) if face_lists else np.zeros((0, 3), dtype=np.int64)
    v, f = check_triangle_arrays(vertices, triangles)
    return trimesh.Trimesh(vertices=v, faces=f, process=False)


def save_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike[str]) -> Path:
    """Write `mesh` atomically as OBJ, PLY, GLB or STL (chosen by the suffix) and return the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise MeshInputError(
            f"cannot write {path}: expected one of {', '.join(WRITE_FORMATS)}, got {suffix!r}"
        )
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise MeshInputError(f"refusing to write {path}: expected a trimesh.Trimesh with faces")
    data = mesh.export(file_type=suffix[1:])
    return atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


__all__ = ["READ_FORMATS", "WRITE_FORMATS", "load_mesh", "mesh_from_arrays", "save_mesh"]
