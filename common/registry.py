"""Name-keyed registries: challenge tasks (from entry points) and helpful look-ups."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from eyegc.common.backend import TrainingBackend
from eyegc.common.errors import EyegcError
from eyegc.common.plugin import TaskPlugin

__all__ = [
    "BACKEND_ENTRY_POINT_GROUP",
    "CLI_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "available_backends",
    "available_tasks",
    "get_backend",
    "get_task",
    "look_up_option",
    "plugin_verbs",
    "register_task",
]

ENTRY_POINT_GROUP = "eyegc.tasks"
#: Plugins add ``eyegc`` verbs here: each entry point names a function that takes argparse's
#: ``add_parser`` and adds its verb(s), e.g. GOALS' ``thickness-model``.
CLI_ENTRY_POINT_GROUP = "eyegc.cli"
#: Training backends (eyegc.common.backend.TrainingBackend) by name: torch, paddle.
BACKEND_ENTRY_POINT_GROUP = "eyegc.backends"
T = TypeVar("T")

_registered: dict[str, Callable[[], TaskPlugin]] = {}
_backends: dict[str, Any] = {}
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
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        factories[ep.name] = ep.load
    factories.update(_registered)
    return factories


def available_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    return sorted(_entry_point_factories())


def get_task(name: str) -> TaskPlugin:
    """The plugin registered as ``name`` (``"drac22-task1"``), loaded once."""
    if name not in _loaded:
        factory = look_up_option(name, _entry_point_factories(), what="task")
        try:
            plugin = factory()
        except EyegcError:
            raise
        except Exception as error:  # an entry point whose package is broken
            raise EyegcError(
                f"the task {name!r} cannot be loaded ({type(error).__name__}: {error}); reinstall or uninstall the "
                "package that provides it"
            ) from None
        # An entry point may name the plugin object or a zero-argument factory returning it.
        if callable(plugin) and not isinstance(plugin, TaskPlugin):
            plugin = plugin()
        if not isinstance(plugin, TaskPlugin):
            raise EyegcError(f"the entry point for {name!r} does not provide a TaskPlugin")
        _loaded[name] = plugin
    return _loaded[name]


def plugin_verbs() -> list[Callable[[Callable[..., argparse.ArgumentParser]], None]]:
    """The verb-adding functions of every ``eyegc.cli`` entry point, in name order.

    Raises:
        EyegcError: an entry point that cannot be loaded (naming it and its package).
    """
    verbs = []
    for ep in sorted(entry_points(group=CLI_ENTRY_POINT_GROUP), key=lambda e: e.name):
        verbs.append(_named_verb(ep.name, _load_entry_point(ep, CLI_ENTRY_POINT_GROUP)))
    return verbs


def _named_verb(name: str, add_verbs: Callable[..., None]) -> Callable[..., None]:
    """``add_verbs``, with any error it raises (a clash with another verb, a bug) as one line naming it."""

    def add(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
        try:
            add_verbs(add_parser)
        except Exception as error:
            raise EyegcError(
                f"the {CLI_ENTRY_POINT_GROUP} entry point {name!r} could not add its verbs ({type(error).__name__}: "
                f"{error})"
            ) from None

    return add


def available_backends() -> list[str]:
    """Names of the training backends (``eyegc.backends`` entry points), sorted."""
    return sorted({ep.name for ep in entry_points(group=BACKEND_ENTRY_POINT_GROUP)})


def get_backend(name: str) -> Any:
    """The training backend registered as ``name`` (an :class:`~eyegc.common.backend.TrainingBackend`), loaded once.

    Raises:
        EyegcError: no such backend (naming the ones there are and how to get one), or one whose
            package cannot be loaded or does not provide a backend.
    """
    if name not in _backends:
        found = {ep.name: ep for ep in entry_points(group=BACKEND_ENTRY_POINT_GROUP)}
        if name not in found:
            raise EyegcError(
                f"no training backend {name!r} here (there are: {', '.join(sorted(found))}): install the package "
                "that provides it, or train with one of those"
            )
        backend = _load_entry_point(found[name], BACKEND_ENTRY_POINT_GROUP)
        if not isinstance(backend, TrainingBackend):
            raise EyegcError(
                f"the {BACKEND_ENTRY_POINT_GROUP} entry point {name!r} ({found[name].value}) is no backend"
            )
        _backends[name] = backend
    return _backends[name]


def _load_entry_point(ep: Any, group: str) -> Any:
    """``ep.load()``; a plugin that fails to import is one line naming it and its package."""
    try:
        return ep.load()
    except Exception as error:  # a broken third-party plugin: name it instead of a traceback
        package = getattr(ep.dist, "name", None) or "its package"
        raise EyegcError(
            f"the {group} entry point {ep.name!r} ({ep.value}) cannot be loaded ({type(error).__name__}: {error}); "
            f"reinstall or uninstall {package}"
        ) from None
