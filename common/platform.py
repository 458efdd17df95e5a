"""Talk to grand-challenge.org with its own client (gcapi): is the algorithm's socket set the image's?

``eyegc gc check ALGORITHM`` reads the algorithm's socket sets ("interfaces") with
``client.algorithms.detail(slug=...)`` and compares them with the mapping an image serves (its
``org.eyegc.sockets`` label, a ``--sockets`` file, or the task's default): every input and output
must exist on the platform with the same slug, relative path, super kind and kind, and every output
the platform expects must be written. With an exported image it also checks the file against the
platform's upload limit. Nothing is uploaded.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eyegc.common.errors import EyegcError
from eyegc.common.plugin import Socket
from eyegc.common.sockets import (
    SOCKETS_LABEL,
    Interface,
    default_interfaces,
    interfaces_from_json,
    read_interfaces,
)

try:  # an optional dependency (pip install "eyegc[gcapi]"); only these commands need it
    import gcapi
except ImportError:  # pragma: no cover - the test environment installs it
    gcapi = None

__all__ = [
    "API_URL",
    "IMAGE_SIZE_LIMIT",
    "TOKEN_VARIABLES",
    "Comparison",
    "PlatformError",
    "algorithm_interfaces",
    "check_image_size",
    "compare_interfaces",
    "image_sockets",
    "mapping_to_check",
    "platform_client",
]

#: The platform's API root (gcapi's default).
API_URL = "https://grand-challenge.org/api/v1/"
#: Where the token is read from: this project's name first, then gcapi's own.
TOKEN_VARIABLES = ("GRAND_CHALLENGE_TOKEN", "GRAND_CHALLENGE_AUTHORIZATION")
#: The largest container image upload the algorithm page accepts (bytes): the platform's setting
#: COMPONENTS_MAXIMUM_IMAGE_SIZE, 10 GiB, checked on the sum of the uploaded files' sizes.
IMAGE_SIZE_LIMIT = 10 * 1024**3


class PlatformError(EyegcError):
    """The platform could not be asked, or its answer does not fit the image."""


@dataclass(frozen=True)
class Comparison:
    """What ``gc check`` found: one line per problem (none: the image fits the algorithm)."""

    problems: tuple[str, ...]
    matched: tuple[tuple[str, ...], ...]


def platform_client(api_url: str = API_URL, verify: bool = True) -> Any:
    """A gcapi client with the token of :data:`TOKEN_VARIABLES`.

    Raises:
        PlatformError: gcapi is not installed, no token is set, or the API does not answer.
    """
    if gcapi is None:
        raise PlatformError('gcapi is not installed: pip install "eyegc[gcapi]"')
    token = next((os.environ[v] for v in TOKEN_VARIABLES if os.environ.get(v)), "")
    if not token:
        raise PlatformError("no API token: set GRAND_CHALLENGE_TOKEN (grand-challenge.org → your profile → API tokens)")
    try:
        return gcapi.Client(token=token, base_url=api_url, verify=verify)
    except Exception as error:  # httpx connection errors, gcapi's version check, a non-https URL
        raise PlatformError(f"cannot reach {api_url} ({type(error).__name__}: {error})") from None


def algorithm_interfaces(client: Any, slug: str) -> tuple[Interface, ...]:
    """The socket sets of algorithm ``slug`` as the platform has them.

    Raises:
        PlatformError: no such algorithm visible to the token, or the API failed.
    """
    try:
        algorithm = client.algorithms.detail(slug=slug)
    except Exception as error:
        if type(error).__name__ == "ObjectNotFound":
            raise PlatformError(f"no algorithm {slug!r} at {client.base_url} that your token can see") from None
        raise PlatformError(f"reading algorithm {slug!r} failed ({type(error).__name__}: {error})") from None

    def socket(value: Any) -> Socket:
        return Socket(value.slug, value.relative_path, super_kind=value.super_kind, kind=value.kind)

    return tuple(
        Interface(tuple(socket(s) for s in i.inputs), tuple(socket(s) for s in i.outputs)) for i in algorithm.interfaces
    )


def _describe(interfaces: Sequence[Interface]) -> str:
    return "; ".join(f"inputs {list(i.key)}" for i in interfaces) or "none"


def _compare_sockets(side: str, image: Sequence[Socket], platform: Sequence[Socket], where: str) -> list[str]:
    problems = []
    theirs = {s.slug: s for s in platform}
    for socket in image:
        other = theirs.get(socket.slug)
        if other is None:
            problems.append(f"{where}: {side[:-1]} {socket.slug} is not in the algorithm's set ({', '.join(theirs)})")
            continue
        for attribute in ("relative_path", "super_kind", "kind"):
            ours, their = getattr(socket, attribute), getattr(other, attribute)
            if ours != their:
                problems.append(
                    f"{where}: {socket.slug}: {attribute} is {their!r} on the platform, {ours!r} in the image"
                )
    if side == "outputs":
        written = {s.slug for s in image}
        problems += [
            f"{where}: the platform expects output {s.slug} ({s.relative_path}), which the image does not write"
            for s in platform
            if s.slug not in written
        ]
    return problems


def compare_interfaces(image: Sequence[Interface], platform: Sequence[Interface]) -> Comparison:
    """Compare the image's socket sets with the algorithm's (by sorted input slugs, as the platform picks)."""
    problems: list[str] = []
    matched = []
    by_key = {i.key: i for i in platform}
    for interface in image:
        where = f"socket set with inputs {list(interface.key)}"
        theirs = by_key.get(interface.key)
        if theirs is None:
            problems.append(f"{where}: the algorithm has no such set (its sets: {_describe(platform)})")
            continue
        matched.append(interface.key)
        problems += _compare_sockets("inputs", interface.inputs, theirs.inputs, where)
        problems += _compare_sockets("outputs", interface.outputs, theirs.outputs, where)
    served = {i.key for i in image}
    problems += [
        f"the algorithm's socket set with inputs {list(i.key)} has no counterpart in the image: jobs given those "
        "inputs would fail"
        for i in platform
        if i.key not in served
    ]
    return Comparison(tuple(problems), tuple(matched))


def image_sockets(path: Path) -> dict[str, Any]:
    """The socket mapping in an exported image's label (``docker save | gzip`` output, as ``submit.sh`` writes).

    Raises:
        PlatformError: not an image archive, or an image without the label (not built by submit.sh).
    """
    path = Path(path)
    try:
        # "r|*" reads a plain or a gzipped tar alike (`docker save -o x.tar.gz` writes it uncompressed).
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as stream:
            # A streamed archive cannot seek back: keep the small JSON members, then find the config.
            small = {}
            for member in stream:
                if member.isfile() and (member.name.endswith(".json") or member.size < 64 * 1024):
                    handle = stream.extractfile(member)
                    small[member.name] = handle.read() if handle is not None else b""
    except (OSError, tarfile.TarError, EOFError) as error:
        raise PlatformError(f"{path} is not a saved image archive ({error})") from None
    try:
        manifest = json.loads(small["manifest.json"])
        config = json.loads(small[manifest[0]["Config"]])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError):
        raise PlatformError(f"{path} is not a `docker save` archive (no manifest.json with a Config)") from None
    label = ((config.get("config") or {}).get("Labels") or {}).get(SOCKETS_LABEL)
    if label is None:
        raise PlatformError(f"{path} has no {SOCKETS_LABEL} label: build the image with ./submit.sh")
    return json.loads(label)


def check_image_size(path: Path) -> int:
    """The image file's size in bytes.

    Raises:
        PlatformError: larger than :data:`IMAGE_SIZE_LIMIT`.
    """
    size = Path(path).stat().st_size
    if size > IMAGE_SIZE_LIMIT:
        raise PlatformError(
            f"{path} is {size / 1024**3:.2f} GiB; the platform takes images up to {IMAGE_SIZE_LIMIT / 1024**3:.0f} GiB"
        )
    return size


def mapping_to_check(
    image: Path | None, sockets: Path | None, task: str | None
) -> tuple[str, tuple[Interface, ...], str]:
    """The socket sets to compare: an exported image's label, a ``--sockets`` file, or a task's default.

    Returns:
        The task name, its socket sets, and where they came from (for the report).

    Raises:
        EyegcError: none of the three given, a file without its task, or a mapping that fails
            the kind rules.
    """
    from eyegc.common.registry import get_task  # the registry imports every plugin: only when asked

    if image is not None:
        check_image_size(image)
        document = image_sockets(image)
        plugin = get_task(str(document.get("task")))
        return plugin.name, interfaces_from_json(document, plugin, f"{image} ({SOCKETS_LABEL})"), str(image)
    if task is None:
        raise EyegcError("say which sockets to check: --image dist/IMAGE.tar.gz, or --task TASK [--sockets FILE]")
    plugin = get_task(task)
    if sockets is not None:
        return plugin.name, read_interfaces(sockets, plugin), str(sockets)
    return plugin.name, default_interfaces(plugin), f"the default sockets of {plugin.name}"
