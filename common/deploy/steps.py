"""What every deployment step shares: one-line errors, progress lines, commands, the source checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


class SubmitError(Exception):
    """A failed step: printed as one line, exit status 1."""


def say(message: str = "") -> None:
    print(message, flush=True)


def step(title: str) -> None:
    say(f"\n== {title}")


def run_command(
    cmd: Sequence[str], what: str, timeout: float | None = None, **kwargs: Any
) -> subprocess.CompletedProcess:
    """Run a command, capturing output; a failure raises SubmitError with its last lines."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SubmitError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def safe_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tag.removesuffix(":latest")).strip("-")


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy across filesystems) every file of ``src`` into ``dst``."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def tar_model(bundles_dir: Path, target: Path) -> None:
    """``tar -czf target -C bundles .``: extracts to /opt/ml/model/NN-name/bundle.json, ..."""
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for path in sorted(bundles_dir.rglob("*")):
            archive.add(path, arcname=f"./{path.relative_to(bundles_dir)}", recursive=False)
    os.replace(partial, target)


#: Set by ``submit.sh`` to the checkout it lives in.
SOURCE_VARIABLE = "EYEGC_SOURCE"


def source_root() -> Path:
    """The eyegc source checkout the image is built from (its wheel, Dockerfiles, constraints).

    ``$EYEGC_SOURCE`` (``submit.sh`` sets it), else the folder an editable install
    (``pip install -e .``) records in its ``direct_url.json``.

    Raises:
        SubmitError: neither names a checkout that holds ``containers/Dockerfile``.
    """
    candidates = [os.environ.get(SOURCE_VARIABLE, "")]
    try:
        direct = json.loads(distribution("eyegc").read_text("direct_url.json") or "{}")
    except (PackageNotFoundError, json.JSONDecodeError):
        direct = {}
    if direct.get("dir_info", {}).get("editable") and str(direct.get("url", "")).startswith("file://"):
        candidates.append(unquote(urlparse(direct["url"]).path))
    for candidate in candidates:
        if candidate and (Path(candidate) / "containers" / "Dockerfile").is_file():
            return Path(candidate).resolve()
    raise SubmitError(
        "the image is built from the eyegc source checkout: run ./submit.sh there, or install eyegc from it "
        f"with pip install -e . (or set {SOURCE_VARIABLE})"
    )
