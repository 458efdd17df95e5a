"""Both install modes give the one ``eyegc`` namespace: common/ and challenges/ under it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import eyegc.challenges.drac22.plugin
import eyegc.common.cli
import pytest
from installed import install_entry_points

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
    # the page eyegc serve hands to the browser (package data, not Python)
    assert {f"eyegc/common/serve/static/{n}" for n in ("index.html", "app.js", "style.css")} <= set(names)
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


def test_tasks_and_plugin_verbs_come_from_the_entry_points_alone() -> None:
    # A challenge registers in one place, its entry point: no second list in common/ to keep equal.
    import tomllib
    from eyegc.common import registry
    from eyegc.common.cli import build_parser

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert sorted(declared["eyegc.tasks"]) == registry.available_tasks()
    assert not hasattr(registry, "_BUILTIN_TASKS")
    # GOALS' own verb reaches the CLI through the eyegc.cli group; the core CLI does not name it.
    assert "thickness-model" not in (ROOT / "common" / "cli.py").read_text()
    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "thickness-model" in verbs and set(declared["eyegc.cli"]) == {"goals-thickness-model"}


def test_a_plugin_verb_that_cannot_load_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eyegc.common.cli import main

    install_entry_points(tmp_path, "eyegc_broken", {"eyegc.cli": {"broken-verb": "eyegc_missing_module:add"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the eyegc.cli entry point 'broken-verb'" in err[0] and "eyegc_missing_module" in err[0]


def test_every_declared_dependency_is_imported() -> None:
    # A dependency nobody imports only costs install time and image size (grand-challenge-metrics was one).
    import ast
    from importlib.metadata import packages_distributions

    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower() for r in project["dependencies"]}
    for extra in ("gcapi", "paddle"):
        declared |= {Requirement(r).name.lower() for r in project["optional-dependencies"][extra]}
    imported: set[str] = set()
    for path in [*(ROOT / "common").rglob("*.py"), *(ROOT / "challenges").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    providers = packages_distributions()
    used = {dist.lower() for name in imported for dist in providers.get(name, [])}
    assert sorted(declared - used) == []


def test_a_bundle_of_a_backend_not_here_or_broken_is_one_line(
    drac22_run: Path,
    drac22_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from eyegc.common import registry
    from eyegc.common.bundle import CONFIG_NAME, read_config, save_signed_config
    from eyegc.common.cli import main

    install_entry_points(tmp_path / "site", "eyegc_broken", {"eyegc.backends": {"broken": "eyegc_missing_module:B"}})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(registry, "_backends", {})
    from eyegc.common.registry import get_task

    images = get_task("drac22-task1").list_cases(drac22_data, "test")[0].image.parent
    for backend, expected in (
        ("tensorflow", "no training backend 'tensorflow' here (there are: broken, nnunet, paddle, torch): install"),
        ("broken", "the eyegc.backends entry point 'broken' (eyegc_missing_module:B) cannot be loaded"),
    ):
        run = tmp_path / backend
        shutil.copytree(drac22_run, run)
        save_signed_config(run, read_config(run).model_copy(update={"backend": backend}))
        args = ["predict", "drac22-task1", "--model", str(run), "--images", str(images), "--out", str(tmp_path / "o")]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"eyegc: error: {run / CONFIG_NAME}: ") and expected in err[0]


def test_a_plugin_verb_that_fails_to_add_itself_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eyegc.common.cli import main

    (tmp_path / "clashing_verb.py").write_text("def add(add_parser):\n    add_parser('train')\n")
    install_entry_points(tmp_path, "eyegc_clash", {"eyegc.cli": {"clash": "clashing_verb:add"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the eyegc.cli entry point 'clash' could not add its verbs" in err[0]
