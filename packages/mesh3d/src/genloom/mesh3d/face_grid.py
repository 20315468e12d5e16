"""MeshAnything V1's per-face coordinate grid, its decoding, and V1's token-id layout.

V1 (arXiv:2406.10163) represents a mesh as a list of faces, each face as 3 vertices x 3 coordinate bins:
the face grid (F, 3, 3) of ints in [0, 128). Its learned tokenizer (a residual-VQ autoencoder, 3 codes of
an 8192-entry codebook per vertex, so 9 tokens per face) maps this grid to tokens and its decoder
(`NoiseResistantDecoder`) predicts the grid back as 9 x 128 logits per face. That encoder was never
released and the decoder only exists as trained weights, so this module covers what is deterministic:
the grid itself, `undiscretize`, the decode clean-up of the official `main.py`, and the id layout that
maps generated ids to per-face code triples.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from genloom.mesh3d.cleanup import mesh_from_triangles
from genloom.mesh3d.errors import MeshInputError, TokenSequenceError
from genloom.mesh3d.preprocess import NUM_BINS, QuantizedMesh

V1_CODEBOOK_SIZE = 8192
V1_NUM_QUANTIZERS = 3  # residual-VQ codes per vertex
V1_TOKENS_PER_FACE = 3 * V1_NUM_QUANTIZERS
V1_VOCAB_SIZE = V1_CODEBOOK_SIZE + 3  # 0 bos, 1 eos, 2 pad, id - 3 is a codebook index
V1_MAX_FACES = 800  # n_max_triangles of the released V1 model


def face_grid(mesh: QuantizedMesh) -> np.ndarray:
    """(F, 3, 3) int64 coordinate bins: faces in canonical order, each face's vertices ascending."""
    return mesh.vertices_q[mesh.faces]


def undiscretize(
    bins: torch.Tensor | np.ndarray, *, low: float = -0.5, high: float = 0.5, num_discrete: int = NUM_BINS
) -> torch.Tensor:
    """Official `undiscretize`: bin k -> k / num_discrete * (high - low) + low, computed in float32."""
    t = torch.as_tensor(bins).float()
    return t / num_discrete * (high - low) + low


def decode_face_grid(
    grid: torch.Tensor | np.ndarray,
    *,
    face_mask: torch.Tensor | np.ndarray | None = None,
    num_bins: int = NUM_BINS,
) -> trimesh.Trimesh:
    """A predicted face grid (F, 3, 3) of bins -> mesh, with V1's clean-up (merge vertices, drop duplicate
    faces, fix normals; unlike V2 no degenerate-face or unreferenced-vertex step). Faces whose
    `face_mask` entry is False are dropped, as V1 does for faces with a padding id."""
    g = torch.as_tensor(grid)
    if g.ndim != 3 or tuple(g.shape[1:]) != (3, 3):
        raise MeshInputError(f"face grid must have shape (F, 3, 3), got {tuple(g.shape)}")
    if g.is_floating_point() or g.dtype == torch.bool:
        raise MeshInputError(f"face grid must hold integer bins, got dtype {g.dtype}")
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= num_bins):
        raise MeshInputError(
            f"face grid bins must lie in [0, {num_bins}), got [{int(g.min())}, {int(g.max())}]"
        )
    coords = undiscretize(g, num_discrete=num_bins)
    if face_mask is not None:
        mask = torch.as_tensor(face_mask, dtype=torch.bool)
        if tuple(mask.shape) != (g.shape[0],):
            raise MeshInputError(f"face_mask must have shape ({g.shape[0]},), got {tuple(mask.shape)}")
        coords = coords.masked_fill(~mask[:, None, None], float("nan"))
    kept = coords[~torch.isnan(coords[:, 0, 0])].numpy()
    if kept.shape[0] == 0:
        raise MeshInputError("face grid has no face to decode (all faces are masked)")
    return mesh_from_triangles(kept, drop_degenerate=False, drop_unreferenced=False)


def v1_token_count(num_faces: int) -> int:
    """Length of a V1 sequence: bos + 9 ids per face + eos."""
    return V1_TOKENS_PER_FACE * num_faces + 2


def v1_codes_from_generated(
    ids: torch.Tensor | np.ndarray, *, max_faces: int = V1_MAX_FACES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official V1 post-generation layout: pad with eos to 9 * max_faces + 2, drop the first and last id,
    turn bos/eos/pad into -1 and subtract 3 from the rest. Returns (codes (max_faces, 3, 3) int64 with -1
    for missing codes, face_mask (max_faces,) bool: True where all 9 codes of a face are valid)."""
    t = torch.as_tensor(ids).long().reshape(-1)
    length = V1_TOKENS_PER_FACE * max_faces + 2
    if t.numel() > length:
        raise TokenSequenceError(
            f"V1 sequences hold at most {length} ids ({max_faces} faces), got {t.numel()}"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= V1_VOCAB_SIZE):
        raise TokenSequenceError(
            f"V1 ids must lie in [0, {V1_VOCAB_SIZE}), got values in [{int(t.min())}, {int(t.max())}]"
        )
    padded = torch.ones(length, dtype=torch.long)
    padded[: t.numel()] = t
    body = padded[1:-1]
    codes = torch.where(body < 3, -1, body - 3).reshape(max_faces, 3, V1_NUM_QUANTIZERS)
    return codes, (codes != -1).reshape(max_faces, -1).all(dim=1)


__all__ = [
    "V1_CODEBOOK_SIZE",
    "V1_MAX_FACES",
    "V1_NUM_QUANTIZERS",
    "V1_TOKENS_PER_FACE",
    "V1_VOCAB_SIZE",
    "decode_face_grid",
    "face_grid",
    "undiscretize",
    "v1_codes_from_generated",
    "v1_token_count",
]
