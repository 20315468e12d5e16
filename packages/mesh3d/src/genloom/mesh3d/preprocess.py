"""Mesh preprocessing of MeshAnything V1/V2: clean-up, normalisation, 128-bin quantisation, canonical order.

The steps reproduce the official data path (buaacyw/MeshAnythingV2 `data_process.py::merge_and_scale` and
`meshanything_train/loop_set_256.py::Dataset`, test path without augmentation) so that token sequences are
identical to the official ones:

1. `merge_and_scale`: merge duplicate vertices, drop degenerate and duplicate faces and unreferenced
   vertices (trimesh, as the official code does; the vertices keep their original scale).
2. `normalize_vertices`: centre on the bounding-box centre and scale the largest extent to 1, so the
   mesh lies in [-0.5, 0.5]^3.
3. `sort_vertices_and_faces`: quantise into 128 bins (numpy round-half-even), merge vertices that fall in
   the same cell, drop faces that collapse, sort vertices z-major (then y, then x) and faces
   lexicographically, each face's indices ascending. The result does not depend on the input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from genloom.mesh3d.errors import MeshInputError

NUM_BINS = 128  # MeshAnything V1/V2 quantise each coordinate into 128 bins over [-0.5, 0.5)


@dataclass(frozen=True)
class QuantizedMesh:
    """A mesh in canonical MeshAnything order: integer vertices and sorted triangles.

    vertices_q: (V, 3) int64 bin indices in [0, num_bins), sorted z-major (z, then y, then x ascending).
    faces: (F, 3) int64 vertex indices, ascending inside each face, faces in lexicographic order.
    """

    vertices_q: np.ndarray
    faces: np.ndarray
    num_bins: int = NUM_BINS

    @property
    def vertices(self) -> np.ndarray:
        """Bin indices mapped back to coordinates, `k / num_bins - 0.5` (float64, exact)."""
        return dequantize_vertices(self.vertices_q, num_bins=self.num_bins)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.vertices_q.shape[0])

    def to_trimesh(self) -> trimesh.Trimesh:
        """The quantised mesh as a trimesh (no processing, so indices and order are kept)."""
        return trimesh.Trimesh(vertices=self.vertices, faces=self.faces, process=False)


def check_triangle_arrays(
    vertices: object, faces: object, *, what: str = "mesh"
) -> tuple[np.ndarray, np.ndarray]:
    """Return (vertices float64 (V, 3), faces int64 (F, 3)) or raise MeshInputError naming the problem."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshInputError(f"{what}: vertices must have shape (V, 3), got {v.shape}")
    if not np.issubdtype(v.dtype, np.number):
        raise MeshInputError(f"{what}: vertices must be numbers, got dtype {v.dtype}")
    v = v.astype(np.float64, copy=False)
    if not np.isfinite(v).all():
        raise MeshInputError(f"{what}: vertices contain NaN or infinite values")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshInputError(f"{what}: faces must be triangles with shape (F, 3), got {f.shape}")
    if f.shape[0] == 0 or v.shape[0] == 0:
        raise MeshInputError(f"{what} is empty: {v.shape[0]} vertices, {f.shape[0]} faces")
    if not np.issubdtype(f.dtype, np.integer):
        raise MeshInputError(f"{what}: faces must be integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64, copy=False)
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise MeshInputError(
            f"{what}: face indices must lie in [0, {v.shape[0]}), got values in [{f.min()}, {f.max()}]"
        )
    return v, f


def merge_and_scale(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Official `merge_and_scale` clean-up on a copy of `mesh`: merge vertices, drop degenerate and
    duplicate faces, drop unreferenced vertices. Like the official code it does not rescale; the
    normalisation happens in `normalize_vertices`.
    """
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshInputError(f"expected a trimesh.Trimesh, got {type(mesh).__name__}")
    check_triangle_arrays(mesh.vertices, mesh.faces)
    merged = mesh.copy()
    merged.merge_vertices()
    merged.update_faces(merged.nondegenerate_faces())
    merged.update_faces(merged.unique_faces())
    merged.remove_unreferenced_vertices()
    if len(merged.faces) == 0:
        raise MeshInputError(f"mesh has no valid faces: all {len(mesh.faces)} faces are degenerate")
    return merged


def _recentre(vertices: np.ndarray) -> np.ndarray:
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    return vertices - (low + high)[None, :] / 2


def _rescale(vertices: np.ndarray) -> np.ndarray:
    extent = (vertices.max(axis=0) - vertices.min(axis=0)).max()
    if not extent > 0:
        raise MeshInputError("mesh has zero extent: all its vertices are at one point")
    return vertices / extent


def normalize_vertices(vertices: np.ndarray) -> np.ndarray:
    """Centre on the bounding-box centre and scale the largest extent to 1, then clip to [-0.5, 0.5].

    The three centring passes of the official test path (scale, centre, centre and scale) are kept in
    the same order so the float64 results are bit-identical.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise MeshInputError(f"vertices must have shape (V, 3) with V > 0, got {v.shape}")
    if not np.isfinite(v).all():
        raise MeshInputError("vertices contain NaN or infinite values")
    v = _rescale(_recentre(v))
    v = _recentre(v)
    v = _rescale(_recentre(v))
    return v.clip(-0.5, 0.5)


def quantize_vertices(vertices: np.ndarray, *, num_bins: int = NUM_BINS) -> np.ndarray:
    """Map coordinates in [-0.5, 0.5] to bins `clip(round((v + 0.5) * n - 0.5), 0, n - 1)` (int64).

    numpy rounds half to even; the bins are evenly spread so both ends get half a bin.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        raise MeshInputError("vertices contain NaN or infinite values")
    if v.size and (v.min() < -0.5 or v.max() > 0.5):
        raise MeshInputError(
            f"vertices must lie in [-0.5, 0.5] before quantisation (normalize_vertices does that), "
            f"got values in [{v.min():.6g}, {v.max():.6g}]"
        )
    scaled = (v + 0.5) * num_bins
    scaled -= 0.5
    return np.clip(scaled.round(), 0, num_bins - 1).astype(np.int64)


def dequantize_vertices(vertices_q: np.ndarray, *, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bins back to coordinates `k / num_bins - 0.5` (float64; exact for power-of-two num_bins)."""
    return np.asarray(vertices_q, dtype=np.float64) / num_bins - 0.5


def canonicalize_quantized(
    vertices_q: np.ndarray, faces: np.ndarray, *, num_bins: int = NUM_BINS
) -> QuantizedMesh:
    """Clean and sort an integer mesh: the part of `sort_vertices_and_faces` after quantisation.

    Vertices in the same cell are merged, faces with zero area (repeated or collinear corners) and
    duplicate faces are dropped, unreferenced vertices removed, then vertices are sorted z-major and
    faces lexicographically with ascending indices inside each face.
    """
    q = np.asarray(vertices_q, dtype=np.int64)
    f = np.asarray(faces, dtype=np.int64)
    # unique rows of (z, y, x) come out sorted z-major, the order of np.lexsort(vertices.T)
    cells_zyx, inverse = np.unique(q[:, ::-1], axis=0, return_inverse=True)
    f = inverse.reshape(-1)[f]
    corners = cells_zyx[f]  # (F, 3, 3), zyx order; the area test does not care about axis order
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    f = f[(normals != 0).any(axis=1)]
    if f.shape[0] == 0:
        raise MeshInputError(
            f"mesh collapses to no faces after quantisation into {num_bins} bins (it is too small or flat)"
        )
    f = np.unique(np.sort(f, axis=1), axis=0)
    used = np.unique(f)
    new_index = np.full(cells_zyx.shape[0], -1, dtype=np.int64)
    new_index[used] = np.arange(used.shape[0])
    return QuantizedMesh(
        vertices_q=np.ascontiguousarray(cells_zyx[used][:, ::-1]), faces=new_index[f], num_bins=num_bins
    )


def sort_vertices_and_faces(
    vertices: np.ndarray, faces: np.ndarray, *, num_bins: int = NUM_BINS
) -> QuantizedMesh:
    """Official `Dataset.sort_vertices_and_faces`: quantise vertices in [-0.5, 0.5], clean and sort."""
    v, f = check_triangle_arrays(vertices, faces)
    return canonicalize_quantized(quantize_vertices(v, num_bins=num_bins), f, num_bins=num_bins)


def preprocess_mesh(mesh: trimesh.Trimesh, *, num_bins: int = NUM_BINS) -> QuantizedMesh:
    """The whole official path from a loaded mesh to its canonical quantised form."""
    merged = merge_and_scale(mesh)
    return sort_vertices_and_faces(normalize_vertices(merged.vertices), merged.faces, num_bins=num_bins)


__all__ = [
    "NUM_BINS",
    "QuantizedMesh",
    "canonicalize_quantized",
    "check_triangle_arrays",
    "dequantize_vertices",
    "merge_and_scale",
    "normalize_vertices",
    "preprocess_mesh",
    "quantize_vertices",
    "sort_vertices_and_faces",
]
