"""Demo of genloom-mesh3d: the MeshAnything V2 tokenizer round trip on trimesh primitives.

Each primitive is tokenised with the official preprocessing (128 bins) and Adjacent Mesh Tokenization,
decoded back with the official clean-up, and written as OBJ and GLB, plus one PNG preview. No model is
involved yet: this shows what the tokenizer does, not generation by a trained model.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import trimesh

from genloom.core.demo import DemoItem
from genloom.core.io import atomic_write_bytes
from genloom.mesh3d.adjacent_tokenizer import AdjacentMeshTokenizer
from genloom.mesh3d.cleanup import triangle_set
from genloom.mesh3d.face_grid import v1_token_count
from genloom.mesh3d.io import save_mesh

DEMO_PRIMITIVES: dict[str, Callable[[], trimesh.Trimesh]] = {
    "box": lambda: trimesh.creation.box(extents=(1.0, 0.6, 0.4)),
    "icosphere": lambda: trimesh.creation.icosphere(subdivisions=1),
    "torus": lambda: trimesh.creation.torus(
        major_radius=1.0, minor_radius=0.35, major_sections=16, minor_sections=8
    ),
    "capsule": lambda: trimesh.creation.capsule(height=1.0, radius=0.4, count=(8, 8)),
    "cone": lambda: trimesh.creation.cone(radius=0.5, height=1.0, sections=16),
}


def render_preview(meshes: dict[str, trimesh.Trimesh], titles: dict[str, str]) -> bytes:
    """PNG bytes of one shaded 3D panel per mesh (matplotlib Agg, Poly3DCollection)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    except ImportError as error:  # matplotlib is an optional extra of this package
        raise ImportError("the mesh3d demo preview needs matplotlib: pip install matplotlib") from error

    light = np.array([0.4, -0.5, 0.75])
    light /= np.linalg.norm(light)
    figure = plt.figure(figsize=(3.2 * len(meshes), 3.6), dpi=100)
    for index, (name, mesh) in enumerate(meshes.items()):
        axes = figure.add_subplot(1, len(meshes), index + 1, projection="3d")
        shade = 0.35 + 0.65 * np.abs(mesh.face_normals @ light)
        colours = np.clip(shade[:, None] * np.array([[0.95, 0.62, 0.2]]), 0, 1)
        collection = Poly3DCollection(mesh.triangles, facecolors=colours, edgecolors=(0.15, 0.1, 0.05, 0.6))
        collection.set_linewidth(0.4)
        axes.add_collection3d(collection)
        for set_limits in (axes.set_xlim, axes.set_ylim, axes.set_zlim):
            set_limits(-0.5, 0.5)
        axes.set_box_aspect((1, 1, 1), zoom=1.15)
        axes.view_init(elev=22, azim=-60)
        axes.set_axis_off()
        axes.set_title(titles[name], fontsize=8)
    figure.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.86, wspace=0.0)
    figure.suptitle("MeshAnything V2 tokenizer round trip (decoded meshes; no trained model)", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def run_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    """Tokenise and decode a few primitives; write OBJ/GLB meshes and a PNG preview under out_dir.

    `device` is accepted for the demo contract; the tokenizer runs on the CPU.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AdjacentMeshTokenizer()
    items: list[DemoItem] = []
    decoded_meshes: dict[str, trimesh.Trimesh] = {}
    titles: dict[str, str] = {}
    for name, build in DEMO_PRIMITIVES.items():
        quantized = tokenizer.quantize(build())
        tokens = tokenizer.encode(quantized)
        decoded = tokenizer.decode(tokens)
        exact = triangle_set(decoded.vertices, decoded.faces) == triangle_set(
            quantized.vertices, quantized.faces
        )
        obj_path = save_mesh(decoded, out_dir / f"{name}.obj")
        save_mesh(decoded, out_dir / f"{name}.glb")
        faces, n_tokens, n_v1 = quantized.num_faces, int(tokens.numel()), v1_token_count(quantized.num_faces)
        caption = (
            f"tokenizer round trip, not generation by a trained model: {faces} faces -> {n_tokens} tokens "
            f"(V1 would need {n_v1}, ratio {n_tokens / n_v1:.2f}); decoded mesh "
            f"{'equals' if exact else 'DIFFERS FROM'} the 128-bin quantised input as a triangle set. "
            f"{name}.glb beside it is the same mesh as GLB."
        )
        items.append(
            DemoItem(
                title=f"{name}: decoded from {n_tokens} tokens", path=obj_path, kind="mesh", caption=caption
            )
        )
        decoded_meshes[name] = decoded
        titles[name] = f"{name}: {faces} faces, {n_tokens} tokens (V1: {n_v1})"
    preview = atomic_write_bytes(
        out_dir / "mesh_tokenizer_round_trip.png", render_preview(decoded_meshes, titles)
    )
    items.append(
        DemoItem(
            title="MeshAnything V2 tokenizer round trip",
            path=preview,
            kind="image",
            caption="Primitives after 128-bin quantisation, Adjacent Mesh Tokenization and decoding "
            "(official clean-up). A tokenizer demo: no trained mesh model is shipped yet.",
        )
    )
    return items
