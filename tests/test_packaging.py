"""The built wheel installs only under the ``fedward`` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


SOURCES = ("pyproject.toml", "README.md", "common", "server", "client", "simulation", "cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(source),
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    (path,) = list(out.glob("fedward-*.whl"))
    return path


def test_only_fedward_at_the_top_level(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"fedward"}
    for generic in ("server", "client", "common", "simulation", "cli", "tests", "benchmarks"):
        assert generic not in top


def test_the_rooms_and_data_files_are_inside(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p for room in SOURCES[2:] for p in (REPO / room).rglob("*.py") if "__pycache__" not in p.parts]
    assert len(sources) > 50
    for source in sources:  # every module of every room, so a sub-package missing in pyproject.toml fails here
        assert f"fedward/{source.relative_to(REPO).as_posix()}" in names, source
    assert "fedward/common/data/medmnist_catalog.json" in names
    for asset in ("dashboard.js", "dashboard.css"):  # the dashboard serves them itself (no CDN)
        assert f"fedward/server/registry/dashboard/static/{asset}" in names
    assert not any(n.startswith("fedward/tests") for n in names)


def test_console_script(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
    assert "fedward = fedward.cli.main:main" in archive.read(entry_points).decode()
