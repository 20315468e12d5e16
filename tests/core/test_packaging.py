"""The workspace builds seven wheels; core installs alone, and a modality adds itself beside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEMBERS = ["core", "text", "image", "audio", "video", "mesh3d", "timeseries"]
HEAVY_MODALITY_DEPS = {"torchaudio", "trimesh", "encodec", "torchvision", "pandas", "sacrebleu"}


def _requires(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    names = set()
    for line in lines:
        if line.startswith("Requires-Dist:"):
            spec = line.split(":", 1)[1].strip()
            names.add(spec.split(";")[0].split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip())
    return names


def test_no_package_owns_the_genloom_namespace() -> None:
    for member in MEMBERS:
        src = REPO / "packages" / member / "src" / "genloom"
        assert not (src / "__init__.py").exists(), f"{src} must stay a PEP 420 namespace"
        assert (src / member / "__init__.py").exists()


def test_members_declare_only_their_own_dependencies() -> None:
    core = tomllib.loads((REPO / "packages/core/pyproject.toml").read_text())["project"]["dependencies"]
    core_names = {d.split(">")[0].split("<")[0].split("=")[0].strip() for d in core}
    assert not core_names & HEAVY_MODALITY_DEPS, f"core must not depend on {core_names & HEAVY_MODALITY_DEPS}"
    for member in MEMBERS[1:]:
        deps = tomllib.loads((REPO / f"packages/{member}/pyproject.toml").read_text())["project"][
            "dependencies"
        ]
        assert "genloom-core" in deps


@pytest.mark.slow
def test_wheels_install_one_modality_at_a_time(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    dist = tmp_path / "dist"
    subprocess.run([uv, "build", "--all-packages", "--wheel", "-o", str(dist), "-q"], cwd=REPO, check=True)
    wheels = sorted(dist.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == sorted(f"genloom_{m}" for m in MEMBERS)
    core_wheel = next(w for w in wheels if w.name.startswith("genloom_core-"))
    assert not _requires(core_wheel) & HEAVY_MODALITY_DEPS

    # A fresh venv that sees this environment's third-party packages (torch, ...) through a .pth line,
    # but none of the editable genloom installs (a .pth line adds a path without processing its .pth files).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    def can_import(module: str) -> bool:
        probe = f"import {module}; import genloom; assert all('{REPO}' not in p for p in genloom.__path__)"
        return subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0

    def install(wheel: Path) -> None:
        subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", str(py), str(wheel)], check=True)

    assert not can_import("genloom.core")
    install(core_wheel)
    assert can_import("genloom.core")
    assert not can_import("genloom.image")
    install(next(w for w in wheels if w.name.startswith("genloom_image-")))
    assert can_import("genloom.image")
    assert can_import("genloom.core")


def test_entry_points_registered_for_a_pythonpath_only_machine(tmp_path: Path) -> None:
    # scripts/register_entry_points.py: the GPU machine runs packages/*/src from PYTHONPATH (no install);
    # its dist-info folders must give importlib.metadata every member's entry points
    import importlib.metadata as metadata

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "register_entry_points.py"), str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "genloom-text" in result.stdout
    found = {
        (ep.group, ep.name, ep.value)
        for dist in metadata.distributions(path=[str(tmp_path)])
        for ep in dist.entry_points
    }
    for member in MEMBERS:
        project = tomllib.loads((REPO / "packages" / member / "pyproject.toml").read_text())["project"]
        for group, entries in project.get("entry-points", {}).items():
            assert {(group, name, value) for name, value in entries.items()} <= found
    assert ("console_scripts", "genloom", "genloom.core.cli:main") in found
