"""`genloom mesh3d` commands: turn a mesh file into MeshAnything V2 tokens (JSON) and back.

    genloom mesh3d tokenize IN.obj -o tokens.json
    genloom mesh3d detokenize tokens.json -o OUT.obj

Bad input ends with one line `error: <message>` on stderr and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from genloom.core.errors import GenloomError
from genloom.core.io import atomic_write_json
from genloom.mesh3d.adjacent_tokenizer import AdjacentMeshTokenizer
from genloom.mesh3d.errors import TokenSequenceError
from genloom.mesh3d.face_grid import v1_token_count
from genloom.mesh3d.io import load_mesh, save_mesh

TOKENS_FORMAT = "genloom.mesh3d.adjacent-tokens"
TOKENS_FORMAT_VERSION = 1

app = typer.Typer(
    help="genloom-mesh3d: mesh tokenisation (MeshAnything V2 adjacent tokens).", no_args_is_help=True
)


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=2)


def tokens_document(tokenizer: AdjacentMeshTokenizer, mesh_path: Path) -> dict[str, Any]:
    """The JSON document `tokenize` writes: tokens, face ids and enough layout to decode them."""
    quantized = tokenizer.quantize(load_mesh(mesh_path))
    tokens, face_ids = tokenizer.encode_with_face_ids(quantized)
    return {
        "format": TOKENS_FORMAT,
        "version": TOKENS_FORMAT_VERSION,
        "tokenizer": "meshanything-v2-adjacent",
        "num_bins": tokenizer.num_bins,
        "vocab_size": tokenizer.vocab_size,
        "special_tokens": {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id},
        "separator": tokenizer.separator_id,
        "source": mesh_path.name,
        "num_faces": quantized.num_faces,
        "num_vertices": quantized.num_vertices,
        "v1_num_tokens": v1_token_count(quantized.num_faces),
        "tokens": tokens.tolist(),
        "face_ids": face_ids.tolist(),
    }


def read_tokens_document(path: Path) -> tuple[list[int], int]:
    """(tokens, num_bins) from a file written by `tokenize`; TokenSequenceError names what is wrong."""
    if not path.is_file():
        raise TokenSequenceError(f"tokens file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TokenSequenceError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != TOKENS_FORMAT:
        raise TokenSequenceError(
            f"{path} is not a tokens file of `genloom mesh3d tokenize` (format {TOKENS_FORMAT!r})"
        )
    tokens, num_bins = document.get("tokens"), document.get("num_bins")
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tokens
    ):
        raise TokenSequenceError(f"{path}: 'tokens' must be a list of integers")
    if not isinstance(num_bins, int) or num_bins < 2:
        raise TokenSequenceError(f"{path}: 'num_bins' must be an integer >= 2, got {num_bins!r}")
    return tokens, num_bins


@app.command()
def tokenize(
    mesh_path: Path = typer.Argument(..., help="Input mesh (.obj, .ply, .glb, .gltf, .stl, .off)."),
    output: Path = typer.Option(..., "-o", "--output", help="Tokens JSON file to write."),
) -> None:
    """Mesh -> MeshAnything V2 adjacent tokens (official preprocessing, 128 bins), written as JSON."""
    try:
        document = tokens_document(AdjacentMeshTokenizer(), mesh_path)
        atomic_write_json(output, document)
    except GenloomError as error:
        raise _fail(error) from None
    typer.echo(
        f"{mesh_path.name}: {document['num_faces']} faces -> {len(document['tokens'])} tokens "
        f"(V1 would need {document['v1_num_tokens']}) -> {output}"
    )


@app.command()
def detokenize(
    tokens_path: Path = typer.Argument(..., help="Tokens JSON file written by `genloom mesh3d tokenize`."),
    output: Path = typer.Option(..., "-o", "--output", help="Mesh to write (.obj, .glb, .ply, .stl)."),
) -> None:
    """MeshAnything V2 tokens (JSON) -> mesh, with the official decode clean-up."""
    try:
        tokens, num_bins = read_tokens_document(tokens_path)
        mesh = AdjacentMeshTokenizer(num_bins=num_bins).decode(tokens)
        save_mesh(mesh, output)
    except GenloomError as error:
        raise _fail(error) from None
    typer.echo(f"{len(tokens)} tokens -> {len(mesh.faces)} faces, {len(mesh.vertices)} vertices -> {output}")
