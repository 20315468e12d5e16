"""The demo runner: per-package folders, NotImplementedError as "no demo yet", failures isolated, index.html."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from PIL import Image

from genloom.core.demo import DemoItem, run_demos
from genloom.core.errors import OutputPathError, UnknownPresetError


def _alpha_demo(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    assert device == "cpu"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(out_dir / "digit.png")
    with wave.open(str(out_dir / "tone.wav"), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * 800)
    Image.new("L", (4, 4)).save(out_dir / "clip.gif")
    (out_dir / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (out_dir / "story.txt").write_text("once upon a time <b>bold</b>\n")
    (out_dir / "series.csv").write_text("t,value\n" + "".join(f"{i},{i * i}\n" for i in range(40)))
    (out_dir / "shape.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return [
        DemoItem("a digit", Path("digit.png"), "image", caption="sampled <script>alert(1)</script>"),
        DemoItem("a tone", out_dir / "tone.wav", "audio"),
        DemoItem("a gif", Path("clip.gif"), "video"),
        DemoItem("an mp4", Path("clip.mp4"), "video"),
        DemoItem("a story", Path("story.txt"), "text"),
        DemoItem("a forecast", Path("series.csv"), "csv"),
        DemoItem("a mesh", Path("shape.obj"), "mesh"),
    ]


def _not_yet(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    raise NotImplementedError("genloom-beta has no demo yet")


def _explodes(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    (out_dir / "partial.txt").write_text("x")
    raise RuntimeError("decoder exploded\nsecond line of detail")


def _lies(out_dir: Path, *, device: str = "cpu") -> list[DemoItem]:
    return [DemoItem("ghost", Path("never-written.png"), "image")]


DEMOS = {
    "alpha": _alpha_demo,
    "beta": _not_yet,
    "broken": ImportError("No module named 'genloom.broken.demo'"),
    "delta": _lies,
    "gamma": _explodes,
}


def test_run_demos_statuses_and_index(tmp_path):
    out = tmp_path / "demo"
    results = run_demos(out, demos=DEMOS)
    status = {r.package: r.status for r in results}
    assert status == {
        "alpha": "ok",
        "beta": "no demo yet",
        "broken": "failed",
        "delta": "failed",
        "gamma": "failed",
    }
    by_name = {r.package: r for r in results}
    assert by_name["gamma"].message == "RuntimeError: decoder exploded"
    assert "second line of detail" in by_name["gamma"].traceback_file.read_text()
    assert "never-written.png" in by_name["delta"].message
    assert by_name["broken"].message.startswith("ImportError: No module named")
    assert not (out / "beta").exists()  # no empty folder for a package without a demo
    assert all(item.path.is_file() and item.path.parent == out / "alpha" for item in by_name["alpha"].items)

    page = (out / "index.html").read_text()
    assert '<img src="alpha/digit.png"' in page
    assert '<audio controls preload="none" src="alpha/tone.wav">' in page
    assert '<img src="alpha/clip.gif"' in page  # a GIF video is shown as an image
    assert '<source src="alpha/clip.mp4" type="video/mp4">' in page
    assert "once upon a time &lt;b&gt;bold&lt;/b&gt;" in page
    assert "t,value\n0,0\n" in page and "13,169" in page and "14,196" not in page  # CSV: first lines only
    assert '<a href="alpha/shape.obj" download>' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "This package has no demo yet." in page
    assert '<a href="gamma/demo-error.txt">traceback</a>' in page
    assert page.index('id="alpha"') < page.index('id="beta"') < page.index('id="gamma"')


def test_only_selects_packages_and_rejects_unknown_names(tmp_path):
    results = run_demos(tmp_path / "demo", demos=DEMOS, only=["beta", "alpha", "beta"])
    assert [r.package for r in results] == ["beta", "alpha"]
    with pytest.raises(UnknownPresetError, match="unknown demo package 'alpah'; did you mean: alpha"):
        run_demos(tmp_path / "demo2", demos=DEMOS, only=["alpah"])


def test_out_folder_parent_must_exist(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        run_demos(tmp_path / "missing" / "demo", demos=DEMOS)
