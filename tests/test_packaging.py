"""Both install modes give the one ``eyegc`` namespace: common/ and challenges/ under it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import eyegc.challenges.drac22.plugin
import eyegc.common.cli

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_the_source_folders() -> None:
    assert Path(eyegc.common.cli.__file__).resolve() == ROOT / "common" / "cli.py"
    assert Path(eyegc.challenges.drac22.plugin.__file__).resolve() == ROOT / "challenges" / "drac22" / "plugin.py"


def test_wheel_holds_the_namespace_and_imports_from_it(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("eyegc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eyegc/common/cli.py" in names and "eyegc/challenges/drac22/plugin.py" in names
    assert "eyegc/__init__.py" not in names  # an implicit namespace package
    assert not [n for n in names if n.startswith(("common/", "challenges/", "tests/"))]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "eyegc = eyegc.common.cli:main" in entry_points and "drac22-task1 = " in entry_points
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import eyegc.common.cli as c, eyegc.challenges.drac22.plugin as p; print(c.__file__); print(p.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [
        str(site / "eyegc" / "common" / "cli.py"),
        str(site / "eyegc" / "challenges" / "drac22" / "plugin.py"),
    ]


def test_builtin_task_fallback_lists_every_entry_point() -> None:
    # Read when the installed metadata is missing or stale: a task added to pyproject.toml only
    # would vanish from a source-tree run.
    import tomllib
    from eyegc.common.registry import _BUILTIN_TASKS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["eyegc.tasks"]
    assert declared == _BUILTIN_TASKS
