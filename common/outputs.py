"""Where a command may write: never into its own inputs, and a file where a file is expected.

Every verb names its inputs (data root, prediction folder, model bundles, ...) and its outputs
(report files, prediction folders, submissions, run folders). :func:`check_output_path` refuses,
before any work is done, an output that is, lies inside, or contains one of the command's inputs,
and a path of the wrong type (a folder where a file is expected, or the reverse). Overwriting a
ground-truth mask with CSV text is then impossible by construction.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

from eyegc.common.errors import EyegcError

__all__ = ["OutputKind", "check_output_path", "check_outputs"]


class OutputKind(str, enum.Enum):
    """What a command writes at an output path."""

    FILE = "file"
    FOLDER = "folder"


def _resolved(path: Path, option: str) -> Path:
    # resolve() follows symbolic links and "..", so a link into the data root is caught too.
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as error:  # a symbolic-link loop: RuntimeError before Python 3.13
        raise EyegcError(f"{option} {path}: cannot follow its symbolic links ({error}); check the path") from None


def _check_plain_file(path: Path, option: str) -> None:
    """Refuse a file output whose path is a link, a device, a pipe or a socket.

    Outputs are written beside the target and renamed over it: that would replace a symbolic link
    (dangling or not) or ``/dev/null`` by a plain file, which the user did not ask for.
    """
    if path.is_symlink():
        raise EyegcError(
            f"{option} {path} is a symbolic link; eyegc replaces files whole, which would replace the link: "
            "give the path of the file itself"
        )
    if path.exists() and not path.is_file():
        raise EyegcError(f"{option} {path} is not a plain file (a device, pipe or socket); give a file path")


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_path(
    path: Path, option: str, kind: OutputKind, inputs: Iterable[tuple[str, Path | None]] = ()
) -> Path:
    """Refuse an output path that would overwrite an input or has the wrong type.

    Args:
        path: where the command will write.
        option: the option that named it (``"--json"``), for the message.
        kind: a file or a folder is expected at ``path``.
        inputs: ``(option, path)`` of every input the command reads; ``None`` paths are skipped.

    Returns:
        ``path``, unchanged.

    Raises:
        EyegcError: ``path`` is, lies inside or contains an input, or exists as the other type.
    """
    path = Path(path)
    if kind == OutputKind.FILE and path.is_dir():
        raise EyegcError(f"{option} {path} is a folder; give a file path, e.g. {path / ('out' + _suffix(option))}")
    if kind == OutputKind.FILE:
        _check_plain_file(path, option)
    if kind == OutputKind.FOLDER and path.exists() and not path.is_dir():
        raise EyegcError(f"{option} {path} is a file; give a folder path")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise EyegcError(f"{option} {path}: {blocker} is a file, so nothing can be written below it; check the path")
    target = _resolved(path, option)
    for input_option, input_path in inputs:
        if input_path is None:
            continue
        source = _resolved(Path(input_path), input_option)
        if _is_within(target, source):
            where = "is" if target == source else "lies inside"
            raise EyegcError(
                f"{option} {path} {where} the input {input_option} {input_path}; eyegc never writes into its "
                f"inputs: choose a {kind.value} outside it"
            )
        if _is_within(source, target):
            raise EyegcError(
                f"{option} {path} holds the input {input_option} {input_path}; eyegc never writes over its "
                f"inputs: choose a {kind.value} outside it"
            )
    return path


def check_outputs(
    outputs: Iterable[tuple[str, Path | None, OutputKind]], inputs: Iterable[tuple[str, Path | None]] = ()
) -> None:
    """:func:`check_output_path` for each output of a command, and no two outputs at one path.

    Args:
        outputs: ``(option, path, kind)`` of every output; ``None`` paths (options not given) are skipped.
        inputs: ``(option, path)`` of every input the command reads.

    Raises:
        EyegcError: an output would overwrite an input, has the wrong type, or shares its path
            with another output (``--json x --csv x``).
    """
    inputs = list(inputs)
    seen: dict[Path, str] = {}
    for option, path, kind in outputs:
        if path is None:
            continue
        check_output_path(path, option, kind, inputs)
        target = _resolved(Path(path), option)
        if target in seen:
            raise EyegcError(f"{seen[target]} and {option} both name {path}; give each its own path")
        seen[target] = option


def _suffix(option: str) -> str:
    return {"--json": ".json", "--csv": ".csv"}.get(option, "")
