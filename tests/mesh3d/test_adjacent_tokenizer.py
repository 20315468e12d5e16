"""MeshAnything V2 tokenizer without the parity fixtures: round trips on trimesh primitives, the token
layout, the official decoding rules, and errors on bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import trimesh

from genloom.mesh3d.adjacent_tokenizer import (
    AdjacentMeshTokenizer,
    adjacent_detokenize,
    face_ids_from_tokens,
    strip_walk,
)
from genloom.mesh3d.cleanup import triangle_set
from genloom.mesh3d.errors import MeshInputError, TokenSequenceError
from genloom.mesh3d.preprocess import (
    QuantizedMesh,
    canonicalize_quantized,
    normalize_vertices,
    quantize_vertices,
    sort_vertices_and_faces,
)

PRIMITIVES = {
    "box": lambda: trimesh.creation.box(extents=(1.0, 0.6, 0.4)),
    "icosphere": lambda: trimesh.creation.icosphere(subdivisions=2),
    "torus": lambda: trimesh.creation.torus(
        major_radius=1.0, minor_radius=0.3, major_sections=20, minor_sections=10
    ),
    "capsule": lambda: trimesh.creation.capsule(height=1.0, radius=0.4, count=(8, 8)),
    "cone": lambda: trimesh.creation.cone(radius=0.5, height=1.0, sections=16),
    "cylinder": lambda: trimesh.creation.cylinder(radius=0.3, height=1.0, sections=12),
    "annulus": lambda: trimesh.creation.annulus(r_min=0.2, r_max=0.5, height=0.3, sections=16),
}


@pytest.fixture(scope="module")
def tokenizer() -> AdjacentMeshTokenizer:
    return AdjacentMeshTokenizer()


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_decode_of_encode_is_the_quantised_mesh(tokenizer: AdjacentMeshTokenizer, name: str) -> None:
    mesh = PRIMITIVES[name]()
    quantized = tokenizer.quantize(mesh)
    tokens = tokenizer.encode(mesh)
    assert tokens.dtype == torch.long and tokens.ndim == 1
    assert tokens[0] == tokenizer.bos_id and tokens[-1] == tokenizer.eos_id
    assert 3 <= int(tokens[1:-1].min()) and int(tokens[1:-1].max()) < tokenizer.vocab_size
    # adjacency saves tokens: strictly fewer than the 9 per face of a plain face list
    assert tokens.numel() < 9 * quantized.num_faces + 2
    decoded = tokenizer.decode(tokens)
    assert len(decoded.faces) == quantized.num_faces
    assert triangle_set(decoded.vertices, decoded.faces) == triangle_set(quantized.vertices, quantized.faces)
    # the triangles come back in strip order and cover every face exactly once
    triangles = tokenizer.decode_triangles(tokens)
    assert triangles.shape == (quantized.num_faces, 3, 3)


def test_vocabulary_layout(tokenizer: AdjacentMeshTokenizer) -> None:
    assert tokenizer.vocab_size == 132 and tokenizer.separator_id == 131
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 1, 2)
    assert AdjacentMeshTokenizer(num_bins=64).vocab_size == 68


def test_box_tokens_by_hand(tokenizer: AdjacentMeshTokenizer) -> None:
    """A unit cube quantises to bins 0 and 127; its first strip starts at the lexicographically first face."""
    quantized = tokenizer.quantize(trimesh.creation.box())
    expected_vertices = np.array([[x, y, z] for z in (0, 127) for y in (0, 127) for x in (0, 127)])
    np.testing.assert_array_equal(quantized.vertices_q, expected_vertices)  # z-major sort
    assert quantized.faces.tolist() == sorted(quantized.faces.tolist())
    assert (np.diff(quantized.faces, axis=1) > 0).all()
    tokens = tokenizer.encode(quantized)
    first_face = quantized.faces[0]
    np.testing.assert_array_equal(tokens[1:10].numpy(), (quantized.vertices_q[first_face] + 3).reshape(-1))
    assert tokens.numel() == 65  # 12 faces: 110 tokens for V1, 65 here


def test_encoding_is_canonical(tokenizer: AdjacentMeshTokenizer) -> None:
    """Vertex order, face order, winding and uniform scaling by a power of two do not change the tokens."""
    mesh = PRIMITIVES["torus"]()
    reference = tokenizer.encode(mesh)
    rng = np.random.default_rng(0)
    vertex_perm = rng.permutation(len(mesh.vertices))
    inverse = np.argsort(vertex_perm)
    faces = inverse[mesh.faces][rng.permutation(len(mesh.faces))]
    faces = np.roll(faces, 1, axis=1)  # same winding, different first corner
    shuffled = trimesh.Trimesh(vertices=mesh.vertices[vertex_perm] * 4.0, faces=faces[:, ::-1], process=False)
    assert torch.equal(tokenizer.encode(shuffled), reference)


def test_strip_walk_extends_strips_through_common_neighbours() -> None:
    # a strip: each face shares the last two emitted vertices with the next one
    assert strip_walk(np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]]), 5) == [0, 1, 2, 3, 4]
    # a fan around vertex 0 is not a strip: the walk restarts at each face
    fan = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    assert strip_walk(fan, 5) == [0, 1, 2, -1, 0, 2, 3, -1, 0, 3, 4]
    # the smallest common neighbour that closes an unvisited face wins
    assert strip_walk(np.array([[0, 1, 2], [1, 2, 3], [1, 2, 4]]), 5) == [0, 1, 2, 3, -1, 1, 2, 4]
    # two triangles that share only a vertex need a separator
    faces = np.array([[0, 1, 2], [2, 3, 4]])
    assert strip_walk(faces, 5) == [0, 1, 2, -1, 2, 3, 4]


def test_walk_is_not_quadratic(tokenizer: AdjacentMeshTokenizer) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
    quantized = tokenizer.quantize(mesh)
    start = time.perf_counter()
    tokens = tokenizer.encode(quantized)
    elapsed = time.perf_counter() - start
    assert quantized.num_faces > 4000 and elapsed < 2.0, f"{quantized.num_faces} faces took {elapsed:.2f} s"
    triangles = tokenizer.decode_triangles(tokens)
    assert triangles.shape == (quantized.num_faces, 3, 3)


def test_face_ids_follow_the_strip_positions() -> None:
    c = 3 + 10  # any coordinate token
    tokens = np.array([0] + [c] * 12 + [131] + [c] * 9 + [1])
    expected = [0] + [4, 5, 6] * 3 + [7, 8, 9] + [3] + [4, 5, 6] * 3 + [1]
    assert face_ids_from_tokens(tokens).tolist() == expected
    # a prefix gets the prefix of the face ids (the model rebuilds them while generating)
    assert face_ids_from_tokens(tokens[:11]).tolist() == expected[:11]


def test_detokenize_follows_the_official_rules() -> None:
    v = [[0, 0, 0], [127, 0, 0], [0, 127, 0], [0, 0, 127], [64, 64, 64]]
    flat = lambda *idx: [c for i in idx for c in v[i]]  # noqa: E731
    coords = lambda *idx: np.asarray([v[i] for i in idx], dtype=np.float32) / 128 - 0.5  # noqa: E731

    # a strip of 4 vertices gives 2 faces: (0,1,2) and (1,2,3)
    tri = adjacent_detokenize(np.array(flat(0, 1, 2, 3) + [-1]))
    np.testing.assert_array_equal(tri, np.stack([coords(0, 1, 2), coords(1, 2, 3)]))
    # a separator starts a new strip
    tri = adjacent_detokenize(np.array(flat(0, 1, 2) + [128] + flat(2, 3, 4)))
    np.testing.assert_array_equal(tri, np.stack([coords(0, 1, 2), coords(2, 3, 4)]))
    # a separator before 9 coordinates ends decoding: nothing complete
    tri = adjacent_detokenize(np.array(flat(0, 1) + [128] + flat(2, 3, 4)))
    assert tri.shape == (1, 3, 3) and np.isnan(tri[0, 2]).all()
    # a separator inside a vertex ends decoding; the unfinished face is NaN and dropped later
    tri = adjacent_detokenize(np.array(flat(0, 1, 2) + [5, 6, 128] + flat(2, 3, 4)))
    assert tri.shape == (2, 3, 3) and not np.isnan(tri[0]).any() and np.isnan(tri[1]).any()
    with pytest.raises(TokenSequenceError, match=r"\[-1, 128\]"):
        adjacent_detokenize(np.array([0, 1, 129]))
    # fewer than three vertices decode to no face (the official placeholder triangle is not emitted)
    tri = adjacent_detokenize(np.array(flat(0, 1) + [-1]))
    assert np.isnan(tri).any(axis=(1, 2)).all()


def test_decode_stops_at_the_first_special_token(tokenizer: AdjacentMeshTokenizer) -> None:
    tokens = tokenizer.encode(PRIMITIVES["box"]())
    body = tokens[1:-1]
    # a pad (or eos) in the middle ends the mesh there; what follows is ignored
    cut = torch.cat([tokens[:1], body[:12], torch.tensor([2]), body[12:], tokens[-1:]])
    assert tokenizer.decode_triangles(cut).shape[0] == 2
    assert len(tokenizer.decode(cut).faces) == 2


def test_decode_rejects_bad_sequences(tokenizer: AdjacentMeshTokenizer) -> None:
    good = tokenizer.encode(PRIMITIVES["box"]())
    with pytest.raises(TokenSequenceError, match="start with bos"):
        tokenizer.decode(good[1:])
    with pytest.raises(TokenSequenceError, match=r"\[0, 132\)"):
        tokenizer.decode(torch.cat([good[:-1], torch.tensor([132, 1])]))
    with pytest.raises(TokenSequenceError, match="integers"):
        tokenizer.decode(good.float())
    with pytest.raises(TokenSequenceError, match="1-D"):
        tokenizer.decode(good[None])
    with pytest.raises(TokenSequenceError, match="no complete triangle"):
        tokenizer.decode([0, 3, 4, 5, 1])
    with pytest.raises(TokenSequenceError):
        tokenizer.decode([])
    assert isinstance(TokenSequenceError("x"), ValueError)


def test_encode_rejects_bad_meshes(tokenizer: AdjacentMeshTokenizer) -> None:
    with pytest.raises(MeshInputError, match="trimesh.Trimesh"):
        tokenizer.encode(np.zeros((3, 3)))  # type: ignore[arg-type]
    point = trimesh.Trimesh(vertices=np.ones((3, 3)), faces=[[0, 1, 2]], process=False)
    with pytest.raises(MeshInputError, match="degenerate"):
        tokenizer.encode(point)
    flat = trimesh.Trimesh(vertices=[[0, 0, 0], [0, 0, 0], [1, 0, 0]], faces=[[0, 1, 2]], process=False)
    with pytest.raises(MeshInputError, match="degenerate"):
        tokenizer.encode(flat)
    # a needle: its apex falls into the bin row of its base (63.5 and 63.51 both round to 64)
    with pytest.raises(MeshInputError, match="collapses"):
        sort_vertices_and_faces(np.array([[0, 0, 0], [0.1, 0, 0], [0.05, 1e-4, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(MeshInputError, match="zero extent"):
        normalize_vertices(np.ones((4, 3)))
    with pytest.raises(MeshInputError, match=r"integer bins in \[0, 128\)"):
        tokenizer.encode(QuantizedMesh(vertices_q=np.full((3, 3), 128), faces=np.array([[0, 1, 2]])))
    with pytest.raises(MeshInputError, match="bins"):
        tokenizer.encode(
            QuantizedMesh(vertices_q=np.zeros((3, 3), dtype=np.int64), faces=np.zeros((1, 3)), num_bins=64)
        )


def test_quantisation_rounds_half_to_even_and_clips() -> None:
    # (v + 0.5) * 128 - 0.5 is k + 0.5 for v = (k + 1) / 128 - 0.5: numpy rounds those to even k
    v = np.array([[-0.5, 0.5, 0.0], [1 / 128 - 0.5, 3 / 128 - 0.5, 0.5 - 1 / 256]])
    np.testing.assert_array_equal(quantize_vertices(v), [[0, 127, 64], [0, 2, 127]])
    with pytest.raises(MeshInputError, match=r"\[-0.5, 0.5\]"):
        quantize_vertices(np.array([[0.0, 0.0, 0.6]]))


def test_canonicalize_merges_cells_and_drops_collapsed_faces() -> None:
    vertices_q = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0], [5, 0, 0], [10, 0, 0], [0, 5, 0]])
    faces = np.array([[0, 1, 2], [3, 2, 0], [0, 1, 4], [2, 1, 0]])  # dup (after merge), collinear, dup
    quantized = canonicalize_quantized(vertices_q, faces)
    np.testing.assert_array_equal(quantized.vertices_q, [[0, 0, 0], [5, 0, 0], [0, 5, 0]])
    np.testing.assert_array_equal(quantized.faces, [[0, 1, 2]])
