"""Decode clean-up of MeshAnything: a soup of decoded triangles -> a trimesh, as the official `main.py` does.

Decoders of both versions produce independent triangles (F, 3, 3) with NaN rows for missing faces. The
official inference scripts keep the complete rows, build a trimesh from the soup, merge shared corners,
drop duplicate faces and re-orient the winding (`fix_normals`). V2 also drops degenerate faces and
unreferenced vertices; V1 does not. trimesh's ordering of the result can change between versions, so it is
the triangle set, not the order, that is stable.
"""

from __future__ import annotations

import numpy as np
import trimesh

from genloom.mesh3d.errors import MeshInputError


def complete_triangles(triangles: np.ndarray) -> np.ndarray:
    """Keep the rows of a (F, 3, 3) array that have no NaN (the official `valid_mask`)."""
    tri = np.asarray(triangles)
    if tri.ndim != 3 or tri.shape[1:] != (3, 3):
        raise MeshInputError(f"triangles must have shape (F, 3, 3), got {tri.shape}")
    return tri[~np.isnan(tri.reshape(-1, 9)).any(axis=1)]


def mesh_from_triangles(
    triangles: np.ndarray,
    *,
    drop_degenerate: bool = True,
    drop_unreferenced: bool = True,
    fix_normals: bool = True,
) -> trimesh.Trimesh:
    """Official decode clean-up of a triangle soup (rows with NaN are dropped first).

    V2 (`MeshAnythingV2/main.py`) uses the defaults; V1 (`MeshAnything/main.py`) passes
    `drop_degenerate=False, drop_unreferenced=False`.
    """
    tri = complete_triangles(triangles)
    vertices = tri.reshape(-1, 3).astype(np.float64)
    faces = np.arange(vertices.shape[0], dtype=np.int64).reshape(-1, 3)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces)  # default processing, as the official call
    mesh.merge_vertices()
    if drop_degenerate:
        mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    if drop_unreferenced:
        mesh.remove_unreferenced_vertices()
    if fix_normals and len(mesh.faces):
        try:
            mesh.fix_normals()
        except ImportError as error:  # trimesh needs scipy or networkx for the face graph
            raise ImportError(
                f"the decode clean-up (trimesh fix_normals) needs scipy or networkx: pip install scipy ({error})"
            ) from error
    return mesh


def triangle_set(vertices: np.ndarray, faces: np.ndarray, *, decimals: int = 9) -> set[frozenset]:
    """The set of triangles of a mesh, each a set of rounded corner tuples: independent of vertex order,
    face order and winding. Used to compare meshes whose processing order differs."""
    corners = np.round(np.asarray(vertices, dtype=np.float64)[np.asarray(faces)], decimals) + 0.0
    return {frozenset(map(tuple, tri.tolist())) for tri in corners}


__all__ = ["complete_triangles", "mesh_from_triangles", "triangle_set"]
