"""Register the workspace packages' entry points (presets, CLI apps, demos) for a PYTHONPATH-only setup.

On a machine without `uv` or the `uv_build` backend (the GPU machine: packages/*/src on PYTHONPATH) the
preset registry finds nothing, because entry points come from installed distributions. This writes a
minimal `.dist-info` per package into SITE (a folder on sys.path), which is all `importlib.metadata` reads.

    python3 scripts/register_entry_points.py /tmp/site && export PYTHONPATH=/tmp/site:...
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def register(site: Path, packages: Path) -> list[str]:
    """One `<name>-<version>.dist-info` (METADATA + entry_points.txt) per packages/*/pyproject.toml."""
    names = []
    for pyproject in sorted(packages.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        name, version = project["name"], project.get("version", "0")
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        groups = dict(project.get("entry-points", {}))
        if project.get("scripts"):
            groups["console_scripts"] = project["scripts"]
        lines = [
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
            for group, entries in groups.items()
        ]
        (info / "entry_points.txt").write_text("\n".join(lines))
        names.append(name)
    return names


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: register_entry_points.py SITE_DIR")
    root = Path(__file__).resolve().parent.parent
    print("registered:", ", ".join(register(Path(sys.argv[1]), root / "packages")))
