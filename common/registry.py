"""Name-keyed registries: challenge tasks (from entry points) and helpful look-ups."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import TypeVar

from eyegc.common.errors import EyegcError
from eyegc.common.plugin import TaskPlugin

__all__ = ["ENTRY_POINT_GROUP", "available_tasks", "get_task", "look_up_option", "register_task"]

ENTRY_POINT_GROUP = "eyegc.tasks"
T = TypeVar("T")

_BUILTIN_TASKS: dict[str, str] = {
    # Read when the package metadata is missing (running from a source tree without installing).
    "drac22-task1": "eyegc.challenges.drac22.plugin:drac22_task1",
    "drive-vessels": "eyegc.challenges.drive.plugin:drive_vessels",
    "drive-vessels-rgb": "eyegc.challenges.drive.plugin:drive_vessels_rgb",
    "goals-layers": "eyegc.challenges.goals.plugin:goals_layers",
    "goals-glaucoma": "eyegc.challenges.goals.plugin:goals_glaucoma",
    "idrid-lesions": "eyegc.challenges.idrid.plugin:idrid_lesions",
    "idrid-lesions-od": "eyegc.challenges.idrid.plugin:idrid_lesions_od",
    "idrid-grading": "eyegc.challenges.idrid.plugin:idrid_grading",
}
_registered: dict[str, Callable[[], TaskPlugin]] = {}
_loaded: dict[str, TaskPlugin] = {}


def look_up_option(name: str, options: Mapping[str, T] | Iterable[str], what: str = "option") -> T | str:
    """Return ``options[name]`` (or ``name`` if ``options`` is a collection of names).

    Raises:
        EyegcError: naming the valid choices and the closest match, MONAI ``look_up_option`` style.
    """
    names = list(options.keys()) if isinstance(options, Mapping) else list(options)
    if name in names:
        return options[name] if isinstance(options, Mapping) else name
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise EyegcError(f"unknown {what} {name!r}; choose one of: {', '.join(names)}.{hint}")


def register_task(name: str, factory: Callable[[], TaskPlugin]) -> None:
    """Register a task plugin factory under ``name`` (for plugins not installed as entry points)."""
    _registered[name] = factory
    _loaded.pop(name, None)


def _entry_point_factories() -> dict[str, Callable[[], TaskPlugin]]:
    factories: dict[str, Callable[[], TaskPlugin]] = {}
    for name, target in _BUILTIN_TASKS.items():
        factories[name] = _lazy(target)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        factories[ep.name] = ep.load
    factories.update(_registered)
    return factories


def _lazy(target: str) -> Callable[[], TaskPlugin]:
    def load() -> TaskPlugin:
        import importlib

        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    return load


def available_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(_entry_point_factories())


def get_task(name: str) -> TaskPlugin:
    """The plugin registered as ``name`` (``"drac22-task1"``), loaded once."""
    if name not in _loaded:
        factory = look_up_option(name, _entry_point_factories(), what="task")
        plugin = factory()
        # An entry point may name the plugin object or a zero-argument factory returning it.
        if callable(plugin) and not isinstance(plugin, TaskPlugin):
            plugin = plugin()
        if not isinstance(plugin, TaskPlugin):
            raise EyegcError(f"the entry point for {name!r} does not provide a TaskPlugin")
        _loaded[name] = plugin
    return _loaded[name]
