"""genloom mesh3d: mesh tokenisation (MeshAnything V1/V2 data path) with parity to the official code."""

from genloom.mesh3d.adjacent_tokenizer import (
    AdjacentMeshTokenizer,
    adjacent_detokenize,
    adjacent_tokenize,
    face_ids_from_tokens,
)
from genloom.mesh3d.cleanup import mesh_from_triangles, triangle_set
from genloom.mesh3d.errors import MeshInputError, TokenSequenceError
from genloom.mesh3d.face_grid import decode_face_grid, face_grid, undiscretize, v1_token_count
from genloom.mesh3d.io import load_mesh, mesh_from_arrays, save_mesh
from genloom.mesh3d.preprocess import (
    QuantizedMesh,
    merge_and_scale,
    normalize_vertices,
    preprocess_mesh,
    quantize_vertices,
    sort_vertices_and_faces,
)

__version__ = "0.1.0"

__all__ = [
    "AdjacentMeshTokenizer",
    "MeshInputError",
    "QuantizedMesh",
    "TokenSequenceError",
    "adjacent_detokenize",
    "adjacent_tokenize",
    "decode_face_grid",
    "face_grid",
    "face_ids_from_tokens",
    "load_mesh",
    "merge_and_scale",
    "mesh_from_arrays",
    "mesh_from_triangles",
    "normalize_vertices",
    "preprocess_mesh",
    "quantize_vertices",
    "save_mesh",
    "sort_vertices_and_faces",
    "triangle_set",
    "undiscretize",
    "v1_token_count",
]
