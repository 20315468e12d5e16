"""Parity with the official MeshAnything V1/V2 data path, on the fixtures in ../shared/parity.

Every field the fixtures' READMEs list as exact is compared exactly (order included); the fields that
depend on trimesh's internal ordering (merged and decoded meshes) are compared as triangle sets, as the
READMEs allow for trimesh versions other than 4.2.3.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from genloom.mesh3d.adjacent_tokenizer import AdjacentMeshTokenizer, adjacent_tokenize, sequence_ratio
from genloom.mesh3d.cleanup import triangle_set
from genloom.mesh3d.face_grid import decode_face_grid, face_grid, v1_token_count
from genloom.mesh3d.io import load_mesh
from genloom.mesh3d.preprocess import merge_and_scale, preprocess_mesh

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
V2_DIR = SHARED / "parity" / "meshanything_v2"
V1_DIR = SHARED / "parity" / "meshanything"
CASES = [
    "annulus",
    "box",
    "box_rot_scaled",
    "capsule",
    "cone",
    "cylinder",
    "fandisk",
    "icosphere1",
    "suzanne",
    "torus",
    "woody",
]

pytestmark = pytest.mark.parity


def _fixture(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    with np.load(folder / "cases.npz") as arrays:
        data = {name: arrays[name] for name in arrays.files}
    return data, json.loads((folder / "cases_meta.json").read_text())


@pytest.fixture(scope="module")
def v2() -> tuple[dict[str, np.ndarray], dict]:
    return _fixture(V2_DIR)


@pytest.fixture(scope="module")
def v1() -> tuple[dict[str, np.ndarray], dict]:
    return _fixture(V1_DIR)


def test_fixtures_hold_exactly_the_known_cases(v2, v1) -> None:
    for arrays, meta in (v2, v1):
        assert sorted({name.split("__")[0] for name in arrays}) == CASES
        assert sorted(meta) == CASES


def _check_shared_preprocessing(arrays: dict[str, np.ndarray], case: str, folder: Path):
    """input_*, merged_* and sorted_* fields, common to both fixture folders; returns the quantised mesh."""
    mesh = load_mesh(folder / "inputs" / f"{case}.obj")
    np.testing.assert_array_equal(mesh.vertices, arrays[f"{case}__input_vertices"])
    np.testing.assert_array_equal(mesh.faces, arrays[f"{case}__input_faces"])

    merged = merge_and_scale(mesh)
    ref_v, ref_f = arrays[f"{case}__merged_vertices"], arrays[f"{case}__merged_faces"]
    assert merged.vertices.shape == ref_v.shape and merged.faces.shape == ref_f.shape
    assert triangle_set(merged.vertices, merged.faces, decimals=15) == triangle_set(ref_v, ref_f, decimals=15)

    quantized = preprocess_mesh(mesh)
    np.testing.assert_array_equal(quantized.vertices_q, arrays[f"{case}__sorted_vertices_q"])
    np.testing.assert_array_equal(quantized.faces, arrays[f"{case}__sorted_faces"])
    np.testing.assert_array_equal(quantized.vertices, arrays[f"{case}__sorted_vertices"])  # exact k/128 - 0.5
    return quantized


@pytest.mark.parametrize("case", CASES)
def test_v2_tokens_and_decoding_match_official(v2, case: str) -> None:
    arrays, meta = v2
    quantized = _check_shared_preprocessing(arrays, case, V2_DIR)
    tokenizer = AdjacentMeshTokenizer()

    sequence, id_sequence = adjacent_tokenize(quantized)
    np.testing.assert_array_equal(sequence, arrays[f"{case}__sequence"])
    np.testing.assert_array_equal(id_sequence, arrays[f"{case}__id_sequence"])

    tokens, face_ids = tokenizer.encode_with_face_ids(load_mesh(V2_DIR / "inputs" / f"{case}.obj"))
    np.testing.assert_array_equal(tokens.numpy(), arrays[f"{case}__tokens"])
    np.testing.assert_array_equal(face_ids.numpy(), arrays[f"{case}__face_ids"])
    # the face ids the official model rebuilds on the fly while generating are the training ones
    np.testing.assert_array_equal(tokenizer.face_ids(tokens).numpy(), arrays[f"{case}__face_ids"])

    triangles = tokenizer.decode_triangles(tokens)
    reference = arrays[f"{case}__decoded_triangles"]
    assert triangles.dtype == np.float32 and triangles.shape == reference.shape
    np.testing.assert_allclose(triangles, reference, rtol=0, atol=1e-6)

    decoded = tokenizer.decode(tokens)
    ref_v, ref_f = arrays[f"{case}__decoded_vertices"], arrays[f"{case}__decoded_faces"]
    assert decoded.vertices.shape == ref_v.shape and decoded.faces.shape == ref_f.shape
    assert triangle_set(decoded.vertices, decoded.faces) == triangle_set(ref_v, ref_f)
    assert np.allclose(np.sort(decoded.vertices, axis=0), np.sort(ref_v, axis=0), atol=1e-6)

    info = meta[case]
    assert (
        quantized.num_faces == info["n_faces_sorted"] and quantized.num_vertices == info["n_vertices_sorted"]
    )
    assert len(sequence) == info["v2_seq_len"] and tokens.numel() == info["v2_tokens_len"]
    assert v1_token_count(quantized.num_faces) == info["v1_tokens_len"]
    assert sequence_ratio(len(sequence), quantized.num_faces) == pytest.approx(info["ratio"], abs=1e-12)
    assert (sequence_ratio(len(sequence), quantized.num_faces) >= 0.70) == info["rejected_by_max_seq_ratio"]
    assert triangles.shape[0] == info["n_decoded_triangles"]
    roundtrip = triangle_set(decoded.vertices, decoded.faces) == triangle_set(
        quantized.vertices, quantized.faces
    )
    assert roundtrip == info["decode_roundtrip_faces_equal"]


@pytest.mark.parametrize("case", CASES)
def test_v1_face_grid_and_decoding_match_official(v1, case: str) -> None:
    arrays, meta = v1
    quantized = _check_shared_preprocessing(arrays, case, V1_DIR)
    grid = face_grid(quantized)
    np.testing.assert_array_equal(grid, arrays[f"{case}__face_grid"])

    decoded = decode_face_grid(grid)
    ref_v, ref_f = arrays[f"{case}__decoded_vertices"], arrays[f"{case}__decoded_faces"]
    assert decoded.vertices.shape == ref_v.shape and decoded.faces.shape == ref_f.shape
    assert triangle_set(decoded.vertices, decoded.faces) == triangle_set(ref_v, ref_f)

    info = meta[case]
    assert quantized.num_faces == info["n_faces"]
    assert v1_token_count(quantized.num_faces) == info["v1_tokens_len"]
    n_v2 = AdjacentMeshTokenizer().encode(quantized).numel()
    assert n_v2 == info["v2_tokens_len"]
    assert n_v2 / v1_token_count(quantized.num_faces) == pytest.approx(info["v2_over_v1"], abs=1e-12)


@pytest.mark.parametrize("case", ["suzanne", "fandisk", "woody"])
def test_real_meshes_tokenize_well_under_a_second(case: str) -> None:
    if not V2_DIR.is_dir():
        pytest.skip(f"{V2_DIR} is absent")
    mesh = load_mesh(V2_DIR / "inputs" / f"{case}.obj")
    tokenizer = AdjacentMeshTokenizer()
    start = time.perf_counter()
    tokens = tokenizer.encode(mesh)
    elapsed = time.perf_counter() - start
    assert tokens.numel() > 2000
    assert elapsed < 0.5, f"{case}: encode took {elapsed:.3f} s"
