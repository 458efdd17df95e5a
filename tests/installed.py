"""Installing a plugin distribution for a test: what an installed package is to ``importlib.metadata``
(a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``) in a folder the test puts on ``sys.path``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["install_entry_points"]


def install_entry_points(folder: Path, name: str, groups: dict[str, dict[str, str]]) -> None:
    """A minimal installed distribution ``name`` in ``folder``: its metadata and entry points by group."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for group, entries in groups.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
