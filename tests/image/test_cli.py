"""`genloom image` commands and the demo write real files and fail clearly on bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genloom.image.cli import app
from genloom.image.demo import run_demo
from genloom.image.models.raster_ar import RasterAR, RasterARConfig, llamagen_transformer_config
from genloom.image.pipeline import ImagePipeline
from genloom.image.tokenizers import ConvNetConfig, VQAutoencoder, VQAutoencoderConfig

runner = CliRunner()


@pytest.fixture
def preset_folder(tmp_path):
    """An (untrained) digits pipeline saved as a preset folder: enough to exercise the file paths."""
    net = ConvNetConfig(
        in_channels=1,
        out_channels=1,
        ch=16,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_levels=[],
        z_channels=8,
    )
    tok = VQAutoencoder(VQAutoencoderConfig(net=net, codebook_size=16, codebook_dim=4))
    tcfg = llamagen_transformer_config(
        dim=32, n_layers=1, n_heads=2, vocab_size=16, grid=(8, 8), mlp_multiple_of=32
    )
    gen = RasterAR(RasterARConfig(transformer=tcfg.to_dict(), num_classes=10, grid=(8, 8)))
    folder = tmp_path / "preset"
    ImagePipeline(tok, gen, class_names=[str(i) for i in range(10)], info={"top_k": 8}).save(folder)
    return folder


def test_sample_writes_a_png_grid_and_rejects_bad_class_and_cfg(preset_folder, tmp_path) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["sample", "--model", str(preset_folder), "--class", "3", "--n", "4", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size[0] > 64 and img.mode in ("RGB", "L")
    bad = runner.invoke(app, ["sample", "--model", str(preset_folder), "--class", "12", "-o", str(out)])
    assert bad.exit_code == 2 and "0..9" in bad.output
    bad = runner.invoke(app, ["sample", "--model", str(preset_folder), "--cfg", "-1", "-o", str(out)])
    assert bad.exit_code == 2 and "must be >= 0" in bad.output
    bad = runner.invoke(app, ["sample", "--model", str(tmp_path / "missing"), "-o", str(out)])
    assert bad.exit_code == 2 and "neither a shipped preset" in bad.output


def test_wrong_family_checkpoint_and_unknown_family_are_clear_errors(preset_folder, tmp_path) -> None:
    result = runner.invoke(
        app, ["reconstruct", "--tokenizer", str(preset_folder / "model"), "-o", str(tmp_path / "r.png")]
    )
    assert result.exit_code == 2 and "not a tokenizer folder" in result.output
    result = runner.invoke(app, ["train", "--family", "diffusion", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--family 'diffusion'" in result.output


def test_reconstruct_reports_error_for_a_tokenizer_folder(preset_folder, tmp_path) -> None:
    out = tmp_path / "recon.png"
    result = runner.invoke(
        app,
        ["reconstruct", "--tokenizer", str(preset_folder), "--data", "digits", "--n", "4", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and out.is_file()


def test_pipeline_load_roundtrip_samples_in_range(preset_folder) -> None:
    pipeline = ImagePipeline.load(preset_folder)
    images = pipeline.sample(torch.tensor([0, 9]), cfg_scale=2.0, seed=1)
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1
    again = ImagePipeline.load(preset_folder).sample(torch.tensor([0, 9]), cfg_scale=2.0, seed=1)
    assert torch.equal(images, again)


def test_demo_writes_data_grids(tmp_path) -> None:
    items = run_demo(tmp_path)
    assert {item.path.name for item in items} >= {"image_data_digits.png", "image_data_shapes.png"}
    assert all(item.path.is_file() and item.kind == "image" for item in items)


def test_train_tokenizer_on_a_user_folder_counts_skipped_files(tmp_path) -> None:
    folder = tmp_path / "mine"
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), colour).save(folder / name / f"{i}.png")
    (folder / "red" / "broken.png").write_bytes(b"\x89PNG but not really")
    out = tmp_path / "tok"
    args = ["train-tokenizer", "--data", str(folder), "--out", str(out), "--steps", "2", "--kind", "vq"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable files" in result.output and "codebook usage" in result.output
    assert VQAutoencoder.from_pretrained(out).config.net.in_channels == 3
    bad = runner.invoke(app, ["train-tokenizer", "--data", str(folder), "--out", str(out), "--kind", "fsq"])
    assert bad.exit_code == 2 and "expected one of ['vq', 'multiscale', 'kl']" in bad.output


def test_sample_out_dir_writes_each_image_resumes_and_shards_over_processes(tmp_path) -> None:
    import os
    import socket
    import subprocess
    import sys

    args = ["sample", "--model", "ar-digits", "--samples", "10", "--chunk", "4"]
    one = tmp_path / "one"
    result = runner.invoke(app, [*args, "--out-dir", str(one), "-o", str(one / "grid.png")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in one.glob("sample-*.png"))
    assert names == [f"sample-{i:06d}.png" for i in range(10)] and (one / "grid.png").is_file()
    first = {name: (one / name).read_bytes() for name in names}
    assert len(set(first.values())) == 10  # ten different digits
    # an interrupted run: chunk 1 (images 4-7) never finished; a rerun makes that chunk alone, the same images
    (one / "chunks" / "item-00000001.json").unlink()
    for i in range(4, 8):
        (one / f"sample-{i:06d}.png").unlink()
    untouched = (one / "sample-000000.png").stat().st_mtime_ns
    assert runner.invoke(app, [*args, "--out-dir", str(one), "-o", str(one / "grid.png")]).exit_code == 0
    assert {name: (one / name).read_bytes() for name in names} == first
    assert (one / "sample-000000.png").stat().st_mtime_ns == untouched
    # two processes (torchrun, gloo): every image identical to the one-process run's
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(port), "-m", "genloom.core.cli", "image", *args,
               "--out-dir", str(two), "-o", str(two / "grid.png")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "(2 process(es))" in run.stdout
    assert {name: (two / name).read_bytes() for name in names} == first
