"""Adjacent Mesh Tokenization (MeshAnything V2, arXiv:2408.02555) and its decoding.

A mesh in canonical order (`preprocess.QuantizedMesh`) is walked as triangle strips: start at the first
unvisited face and emit its three vertices; then, while the last two emitted vertices have a common
neighbour that closes an unvisited face, emit that neighbour (the smallest index first). When no such
neighbour exists, emit a separator and start again. Each vertex is written as its three coordinate bins
(x, y, z), so a face that extends a strip costs 3 tokens instead of 9.

Token layout (vocabulary num_bins + 4 = 132): 0 bos, 1 eos, 2 pad, 3..130 coordinate bins 0..127,
131 the separator. `face_ids` gives every token its place in a strip (the extra position embedding of
the official model): 0 bos, 1 eos, 2 pad, 3 separator, 4/5/6 for the x/y/z of the first three vertices
after a start, 7/8/9 for later vertices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import trimesh

from genloom.core.errors import ConfigError
from genloom.mesh3d.cleanup import complete_triangles, mesh_from_triangles
from genloom.mesh3d.errors import MeshInputError, TokenSequenceError
from genloom.mesh3d.preprocess import NUM_BINS, QuantizedMesh, check_triangle_arrays, preprocess_mesh

BOS_ID = 0
EOS_ID = 1
PAD_ID = 2
NUM_SPECIAL = 3  # coordinate bin k has token id k + NUM_SPECIAL
SEPARATOR_FACE_ID = 3
FIRST_FACE_IDS = (4, 5, 6)  # x, y, z of the first three vertices of a strip
LATER_FACE_IDS = (7, 8, 9)  # x, y, z of every later vertex of a strip


def strip_walk(faces: np.ndarray, num_vertices: int) -> list[int]:
    """The Adjacent Mesh Tokenization walk over sorted faces: vertex indices, with -1 between strips.

    `faces` must be sorted (ascending inside each face, faces lexicographic) as `QuantizedMesh` keeps
    them. A face is closed by the smallest common neighbour (in the vertex adjacency graph) of the last
    two emitted vertices whose triangle is still unvisited. Cost is linear in faces times vertex degree.
    """
    faces = np.asarray(faces, dtype=np.int64)
    n = int(num_vertices)
    face_list = faces.tolist()
    face_of_corners = {tuple(face): index for index, face in enumerate(face_list)}
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [0, 2]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in edges.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)

    visited = np.zeros(faces.shape[0], dtype=bool)
    remaining = faces.shape[0]
    next_start = 0
    walk: list[int] = []
    while remaining > 0:
        if not walk or walk[-1] == -1:
            while visited[next_start]:
                next_start += 1
            visited[next_start] = True
            remaining -= 1
            walk.extend(face_list[next_start])
            continue
        u, w = walk[-2], walk[-1]
        chosen = -1
        for c in sorted(neighbours[u] & neighbours[w]):
            face = face_of_corners.get(tuple(sorted((u, w, c))))
            if face is not None and not visited[face]:
                chosen, visited[face] = c, True
                remaining -= 1
                break
        walk.append(chosen)
    return walk


def adjacent_tokenize(mesh: QuantizedMesh) -> tuple[np.ndarray, np.ndarray]:
    """Official `Dataset.tokenize`: (sequence, id_sequence) without bos/eos, both int64.

    sequence holds coordinate bins 0..num_bins-1 and the separator value num_bins.
    """
    walk = np.asarray(strip_walk(mesh.faces, mesh.num_vertices), dtype=np.int64)
    is_sep = walk == -1
    # coordinates: 3 per vertex, one separator value per -1
    per_item = np.where(is_sep[:, None], mesh.num_bins, mesh.vertices_q[np.where(is_sep, 0, walk)])
    keep = np.ones((walk.shape[0], 3), dtype=bool)
    keep[is_sep, 1:] = False
    sequence = per_item[keep]
    # strip position of each vertex: 0, 1, 2 for the first three after a start, then later
    strip_index = np.cumsum(is_sep)
    starts = np.searchsorted(strip_index, strip_index, side="left")
    position = np.arange(walk.shape[0]) - starts - (strip_index > 0)
    first = np.asarray(FIRST_FACE_IDS)[None, :]
    later = np.asarray(LATER_FACE_IDS)[None, :]
    ids = np.where((position < 3)[:, None], first, later)
    ids[is_sep] = SEPARATOR_FACE_ID
    return sequence.astype(np.int64), ids[keep].astype(np.int64)


def add_special_tokens(sequence: np.ndarray, id_sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official `SingleGPT.pad_id_and_attn` for one sample: bos + (sequence + 3) + eos, and its face ids."""
    tokens = np.concatenate([[BOS_ID], np.asarray(sequence, dtype=np.int64) + NUM_SPECIAL, [EOS_ID]])
    face_ids = np.concatenate([[BOS_ID], np.asarray(id_sequence, dtype=np.int64), [EOS_ID]])
    return tokens.astype(np.int64), face_ids.astype(np.int64)


def face_ids_from_tokens(tokens: np.ndarray, *, num_bins: int = NUM_BINS) -> np.ndarray:
    """Face ids of any token sequence (or prefix), as the official model rebuilds them while generating.

    Special tokens keep their own id, the separator gets 3, coordinates get 4/5/6 for the first nine
    coordinates after a start, separator or special token, and 7/8/9 afterwards.
    """
    t = np.asarray(tokens, dtype=np.int64)
    separator = num_bins + NUM_SPECIAL
    resets = (t < NUM_SPECIAL) | (t == separator)
    segment = np.cumsum(resets)
    segment_start = np.searchsorted(segment, segment, side="left")
    count = np.arange(t.shape[0]) - segment_start - (segment > 0)  # coordinates since the last reset
    ids = np.where(count < 9, 4 + count % 3, 7 + count % 3)
    ids = np.where(t == separator, SEPARATOR_FACE_ID, ids)
    return np.where(t < NUM_SPECIAL, t, ids).astype(np.int64)


def tokens_to_values(tokens: np.ndarray) -> np.ndarray:
    """Official post-generation mapping: drop the first token (bos), turn bos/eos/pad into -1 and
    subtract 3 from every other id. Decoding stops at the first -1."""
    t = np.asarray(tokens, dtype=np.int64)[1:]
    return np.where(t < NUM_SPECIAL, -1, t - NUM_SPECIAL)


def adjacent_detokenize(values: np.ndarray, *, num_bins: int = NUM_BINS) -> np.ndarray:
    """Official `adjacent_detokenize` for one sequence of values (coordinate bins, separator num_bins,
    -1 to stop): returns (F, 3, 3) float32 triangles, NaN where a face was left incomplete.

    After three complete vertices every further vertex closes a face with the previous two; a separator
    starts a new strip. A separator before three vertices or inside a vertex ends decoding.
    One deliberate difference: the official code pre-fills the first face with a placeholder triangle
    that leaks into the output when fewer than three vertices are decoded; here that face stays NaN.
    """
    stream = np.asarray(values)
    if stream.ndim != 1 or (stream.size and not np.issubdtype(stream.dtype, np.integer)):
        raise TokenSequenceError(
            f"values must be a 1-D integer sequence, got shape {stream.shape}, {stream.dtype}"
        )
    if stream.size and (stream.min() < -1 or stream.max() > num_bins):
        raise TokenSequenceError(
            f"values must lie in [-1, {num_bins}] (bins, {num_bins} = separator, -1 = stop), "
            f"got values in [{stream.min()}, {stream.max()}]"
        )
    rows: list[list[float]] = []
    count = 0  # coordinates since the start of the current strip
    for value in stream.astype(np.int64).tolist():
        if value == -1:
            break
        if value == num_bins:
            if count < 9 or count % 3 != 0:
                break
            count = 0
            continue
        if count % 3 == 0:
            if count >= 9:
                rows.extend([list(rows[-2]), list(rows[-1])])
            rows.append([float("nan")] * 3)
        rows[-1][count % 3] = value
        count += 1
    while len(rows) % 3:
        rows.append([float("nan")] * 3)
    bins = np.asarray(rows, dtype=np.float32).reshape(-1, 3, 3)
    return (bins / np.float32(num_bins) - np.float32(0.5)).astype(np.float32)


def _as_token_array(tokens: object, *, vocab_size: int) -> np.ndarray:
    if isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TokenSequenceError(f"tokens must be integers, got dtype {tokens.dtype}")
        array = tokens.detach().cpu().numpy()
    else:
        array = np.asarray(tokens)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TokenSequenceError(f"tokens must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise TokenSequenceError(f"tokens must be one sequence (1-D), got shape {array.shape}")
    if array.size == 0 or array[0] != BOS_ID:
        first = "nothing" if array.size == 0 else int(array[0])
        raise TokenSequenceError(f"tokens must start with bos ({BOS_ID}), got {first}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        raise TokenSequenceError(f"token ids must lie in [0, {vocab_size}), got values in [{low}, {high}]")
    return array.astype(np.int64)


class AdjacentMeshTokenizer:
    """MeshAnything V2 tokenizer: mesh -> LongTensor tokens -> mesh, bit-exact with the official code.

    `encode` runs the whole official preprocessing (clean-up, normalisation into [-0.5, 0.5], 128-bin
    quantisation, canonical sort) and the adjacent walk; `decode` runs the official detokenisation and
    the clean-up of `main.py`. The decoded mesh equals the quantised input as a set of triangles.
    """

    bos_id = BOS_ID
    eos_id = EOS_ID
    pad_id = PAD_ID

    def __init__(self, *, num_bins: int = NUM_BINS) -> None:
        if num_bins < 2:
            raise ConfigError(f"num_bins must be at least 2, got {num_bins}")
        self.num_bins = int(num_bins)

    @property
    def vocab_size(self) -> int:
        """bos, eos, pad, num_bins coordinate bins and the separator (132 for 128 bins)."""
        return self.num_bins + NUM_SPECIAL + 1

    @property
    def separator_id(self) -> int:
        return self.num_bins + NUM_SPECIAL

    def quantize(self, mesh: trimesh.Trimesh | QuantizedMesh) -> QuantizedMesh:
        """The canonical quantised form of `mesh` (a QuantizedMesh is checked and passed through)."""
        if isinstance(mesh, QuantizedMesh):
            if mesh.num_bins != self.num_bins:
                raise MeshInputError(
                    f"mesh is quantised into {mesh.num_bins} bins, tokenizer uses {self.num_bins}"
                )
            vertices_q, _ = check_triangle_arrays(mesh.vertices_q, mesh.faces, what="quantised mesh")
            if vertices_q.min() < 0 or vertices_q.max() >= self.num_bins or (vertices_q % 1).any():
                raise MeshInputError(
                    f"quantised mesh: vertices_q must be integer bins in [0, {self.num_bins})"
                )
            return mesh
        return preprocess_mesh(mesh, num_bins=self.num_bins)

    def encode_with_face_ids(
        self, mesh: trimesh.Trimesh | QuantizedMesh
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, face_ids), both 1-D int64 with bos and eos."""
        sequence, id_sequence = adjacent_tokenize(self.quantize(mesh))
        tokens, face_ids = add_special_tokens(sequence, id_sequence)
        return torch.from_numpy(tokens), torch.from_numpy(face_ids)

    def encode(self, mesh: trimesh.Trimesh | QuantizedMesh) -> torch.Tensor:
        """1-D int64 tokens: bos, the adjacent walk's coordinates and separators, eos."""
        return self.encode_with_face_ids(mesh)[0]

    def face_ids(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Face ids of a token sequence or prefix (see the module docstring)."""
        array = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64)
        if array.ndim != 1:
            raise TokenSequenceError(f"tokens must be one sequence (1-D), got shape {array.shape}")
        return torch.from_numpy(face_ids_from_tokens(array, num_bins=self.num_bins))

    def decode_triangles(self, tokens: torch.Tensor | Sequence[int]) -> np.ndarray:
        """Complete decoded faces (F, 3, 3) float32, in decoding order, before clean-up."""
        array = _as_token_array(tokens, vocab_size=self.vocab_size)
        return complete_triangles(adjacent_detokenize(tokens_to_values(array), num_bins=self.num_bins))

    def decode(self, tokens: torch.Tensor | Sequence[int]) -> trimesh.Trimesh:
        """Tokens -> mesh with the official clean-up (merge, drop degenerate/duplicate faces, fix normals)."""
        triangles = self.decode_triangles(tokens)
        if triangles.shape[0] == 0:
            raise TokenSequenceError("tokens decode to no complete triangle (a strip needs 9 coordinates)")
        return mesh_from_triangles(triangles)


def sequence_ratio(sequence_length: int, num_faces: int) -> float:
    """Length of the adjacent sequence (without bos/eos) over the 9 values per face of a plain face list;
    the official training set rejects samples with a ratio of 0.70 or more."""
    return sequence_length / (9 * num_faces)


__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "AdjacentMeshTokenizer",
    "adjacent_detokenize",
    "adjacent_tokenize",
    "add_special_tokens",
    "face_ids_from_tokens",
    "sequence_ratio",
    "strip_walk",
    "tokens_to_values",
]
