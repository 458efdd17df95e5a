"""An algorithm's sockets as data: each task's defaults, a user's mapping file, and the platform's kind rules.

On grand-challenge.org sockets are global objects made by the platform's staff; an algorithm picks
existing ones, possibly in several sets (its "interfaces", each a list of inputs and outputs). Each
socket has a slug, a relative path below ``/input`` or ``/output``, a super kind (Image, File,
Value) and a kind. A plugin's ``input_sockets``/``output_sockets`` are only its default set; a user
maps every input and output to the platform's sockets with a file (``./submit.sh TASK --sockets
sockets.json``; ``--print-sockets`` writes the default as a starting file)::

    {
      "task": "drive-vessels",
      "interfaces": [
        {
          "inputs": [{"slug": "color-fundus-image", "relative_path": "images/color-fundus",
                      "super_kind": "Image", "kind": "Image"}],
          "outputs": [{"slug": "binary-vessel-segmentation",
                       "relative_path": "images/binary-vessel-segmentation",
                       "super_kind": "Image", "kind": "Segmentation",
                       "class_key": "vessel", "content": "mask"}]
        }
      ]
    }

``content`` says what eyegc writes (:data:`~eyegc.common.plugin.SOCKET_CONTENTS`), ``class_key``
which class or head. :func:`check_interface` applies the platform's rules before anything is built:
one image file per image socket (``.mha``), contiguous integer values 0..N under ``Segmentation``
(the platform checks voxel values against the socket's overlay segments, which are contiguous), floats
under ``Heat Map``, and the JSON type of each value kind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from eyegc.common.errors import EyegcError
from eyegc.common.plugin import SOCKET_CONTENTS, Socket, TaskKind, TaskPlugin

__all__ = [
    "CONTENT_KINDS",
    "CONTENT_TASK_KINDS",
    "KIND_SUPER_KINDS",
    "SOCKETS_LABEL",
    "Interface",
    "SocketError",
    "check_interface",
    "default_interfaces",
    "interfaces_from_json",
    "interfaces_json",
    "label_map_values",
    "read_interfaces",
    "select_interface",
]

#: The platform's socket kinds eyegc can read or write, with their super kind (grand-challenge,
#: ``components/models.py``: ``InterfaceKindChoices``, ``InterfaceSuperKindChoices``).
KIND_SUPER_KINDS: dict[str, str] = {
    "Image": "Image",
    "Segmentation": "Image",
    "Heat Map": "Image",
    "Integer": "Value",
    "Float": "Value",
    "Bool": "Value",
    "Anything": "Value",
}

#: What eyegc writes (a SOCKET_CONTENTS key) -> the kinds that can carry it. A 0/1 mask is a valid
#: segmentation (overlay segments 0 and 1); a label map is one under kind Segmentation only when
#: written as class indices 0..N-1 (:func:`label_map_values`); a probability map is a float Heat Map.
CONTENT_KINDS: dict[str, tuple[str, ...]] = {
    "mask": ("Segmentation", "Image"),
    "probability": ("Heat Map", "Image"),
    "label_map": ("Segmentation", "Image"),
    "grade": ("Integer", "Anything"),
    "likelihood": ("Float", "Anything"),
    "probabilities": ("Anything",),
}

#: The image label that holds the socket mapping (the same JSON as the image's /opt/app/sockets.json).
SOCKETS_LABEL = "org.eyegc.sockets"

#: What eyegc writes -> the kinds of task that predict it: a per-class mask needs one sigmoid channel
#: per class, a label map one class per pixel, grades and likelihoods a classification head.
CONTENT_TASK_KINDS: dict[str, tuple[TaskKind, ...]] = {
    "mask": (TaskKind.MULTILABEL_SEGMENTATION,),
    "probability": (TaskKind.MULTILABEL_SEGMENTATION, TaskKind.MULTICLASS_SEGMENTATION),
    "label_map": (TaskKind.MULTICLASS_SEGMENTATION,),
    "grade": (TaskKind.CLASSIFICATION,),
    "likelihood": (TaskKind.CLASSIFICATION,),
    "probabilities": (TaskKind.CLASSIFICATION,),
}

#: Kinds an input image socket may have (eyegc reads one image file per input socket).
INPUT_KINDS = ("Image",)

_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_FIELDS = {f.name for f in fields(Socket)}
#: Fields that say what eyegc writes; an input socket has none.
_OUTPUT_ONLY = ("class_key", "content")


class SocketError(EyegcError):
    """A socket mapping that the platform would refuse or that eyegc cannot serve."""


@dataclass(frozen=True)
class Interface:
    """One socket set of an algorithm: the inputs it is given and the outputs it must write."""

    inputs: tuple[Socket, ...]
    outputs: tuple[Socket, ...]

    @property
    def key(self) -> tuple[str, ...]:
        """The sorted input slugs: how the entrypoint picks this set from inputs.json."""
        return tuple(sorted(s.slug for s in self.inputs))


def default_interfaces(plugin: TaskPlugin) -> tuple[Interface, ...]:
    """The task's own socket set (its plugin's ``input_sockets`` and ``output_sockets``)."""
    return (Interface(tuple(plugin.input_sockets), tuple(plugin.output_sockets)),)


def label_map_values(plugin: TaskPlugin, socket: Socket) -> list[int]:
    """The pixel value of each class in a ``label_map`` socket, in class order.

    Under kind ``Segmentation`` the class index (0..N-1 in the plugin's class order: GOALS writes
    0 everything else, 1 RNFL, 2 GCIPL, 3 choroid), since the platform accepts only contiguous values
    there; under ``Image`` the organisers' encoding (``ClassSpec.value``: GOALS 255/0/80/160).
    """
    if socket.kind == "Segmentation":
        return list(range(len(plugin.classes)))
    return [c.value if c.value is not None else i for i, c in enumerate(plugin.classes)]


def _check_socket(plugin: TaskPlugin, socket: Socket, where: str, output: bool) -> None:
    if not _SLUG.fullmatch(socket.slug):
        raise SocketError(f"{where}: slug {socket.slug!r} is not a platform slug (lowercase letters, digits, '-')")
    super_kind = KIND_SUPER_KINDS.get(socket.kind)
    if super_kind is None:
        raise SocketError(
            f"{where}: kind {socket.kind!r} is not one eyegc serves; choose one of {sorted(KIND_SUPER_KINDS)}"
        )
    if socket.super_kind != super_kind:
        raise SocketError(f"{where}: kind {socket.kind} has super kind {super_kind}, not {socket.super_kind}")
    relative = socket.relative_path
    if not relative or relative.startswith("/") or ".." in Path(relative).parts:
        raise SocketError(f"{where}: relative_path {relative!r} must be a path below /input or /output")
    if super_kind == "Image" and not relative.startswith("images/"):
        raise SocketError(f"{where}: an image socket's relative_path starts with images/, got {relative!r}")
    if super_kind == "Value" and not relative.endswith(".json"):
        raise SocketError(f"{where}: a value socket's relative_path is a .json file, got {relative!r}")
    if not output:
        if socket.kind not in INPUT_KINDS:
            raise SocketError(f"{where}: an input must be of kind {' or '.join(INPUT_KINDS)}, not {socket.kind}")
        return
    kinds = CONTENT_KINDS.get(socket.content)
    if kinds is None:
        raise SocketError(f"{where}: content {socket.content!r} is not one of {sorted(SOCKET_CONTENTS)}")
    if socket.kind not in kinds:
        raise SocketError(
            f"{where}: a {socket.content} ({SOCKET_CONTENTS[socket.content]}) cannot go to a socket of kind "
            f"{socket.kind}; use kind {' or '.join(kinds)}"
        )
    if plugin.kind not in CONTENT_TASK_KINDS[socket.content]:
        raise SocketError(f"{where}: {plugin.name} ({plugin.kind.value}) predicts no {socket.content}")
    keys = [c.key for c in plugin.classes]
    if socket.content == "label_map":
        if socket.class_key is not None:
            raise SocketError(f"{where}: a label_map carries every class; leave class_key out")
        return
    if socket.class_key not in keys:
        raise SocketError(
            f"{where}: class_key {socket.class_key!r} is not a class of {plugin.name} ({', '.join(keys)})"
        )
    head = plugin.classes[keys.index(socket.class_key)]
    if socket.content == "likelihood" and head.num_classes != 2:
        raise SocketError(
            f"{where}: a likelihood is the probability of grade 1 of a two-grade head; {head.key} has "
            f"{head.num_classes} grades: write its grade (content grade) instead"
        )


def check_interface(plugin: TaskPlugin, interface: Interface, where: str = "sockets") -> None:
    """Check a socket set against the platform's kind rules and what ``plugin`` predicts.

    Raises:
        SocketError: the first problem, naming the socket (``where``, e.g. the file and entry).
    """
    if len(interface.inputs) != len(plugin.input_sockets):
        raise SocketError(
            f"{where}: {plugin.name} takes {len(plugin.input_sockets)} input image(s), not {len(interface.inputs)}"
        )
    if not interface.outputs:
        raise SocketError(f"{where}: no output socket; the algorithm must write at least one")
    for side, sockets in (("inputs", interface.inputs), ("outputs", interface.outputs)):
        for index, socket in enumerate(sockets):
            _check_socket(plugin, socket, f"{where} {side}[{index}] ({socket.slug})", side == "outputs")
        for attribute in ("slug", "relative_path"):
            values = [getattr(s, attribute) for s in sockets]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise SocketError(f"{where}: {side} share the {attribute} {', '.join(repeated)}; each needs its own")


def _socket(entry: object, where: str) -> Socket:
    if not isinstance(entry, Mapping):
        raise SocketError(f"{where}: a socket is an object with slug, relative_path, super_kind and kind")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise SocketError(f"{where}: unknown field(s) {', '.join(unknown)}; a socket has {', '.join(sorted(_FIELDS))}")
    missing = [name for name in ("slug", "relative_path", "super_kind", "kind") if name not in entry]
    if missing:
        raise SocketError(f"{where}: missing {', '.join(missing)}")
    wrong = sorted(
        name
        for name, value in entry.items()
        if not (isinstance(value, str) or (value is None and name in _OUTPUT_ONLY))
    )
    if wrong:
        raise SocketError(f"{where}: {', '.join(wrong)} must be text (only class_key and content may be null)")
    return Socket(**entry)


def _interface(entry: object, where: str) -> Interface:
    if (
        not isinstance(entry, Mapping)
        or not isinstance(entry.get("inputs"), list)
        or not isinstance(entry.get("outputs"), list)
    ):
        raise SocketError(f"{where}: a socket set is an object with the lists inputs and outputs")
    return Interface(
        tuple(_socket(e, f"{where}.inputs[{i}]") for i, e in enumerate(entry["inputs"])),
        tuple(_socket(e, f"{where}.outputs[{i}]") for i, e in enumerate(entry["outputs"])),
    )


def read_interfaces(path: Path, plugin: TaskPlugin) -> tuple[Interface, ...]:
    """Read and check a socket mapping file (the module docstring's format).

    Raises:
        SocketError: unreadable JSON, another task's file, a malformed entry, two sets with the same
            inputs, or a rule of :func:`check_interface` broken; the message names the file and entry.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise SocketError(f"socket file not found: {path} (write a starting one with --print-sockets)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SocketError(f"{path} is not valid JSON ({error})") from None
    return interfaces_from_json(document, plugin, str(path))


def interfaces_from_json(document: object, plugin: TaskPlugin, where: str) -> tuple[Interface, ...]:
    """Parse and check a mapping document (the file's JSON, or an image label's); ``where`` names its source.

    Raises:
        SocketError: as :func:`read_interfaces`.
    """
    if (
        not isinstance(document, Mapping)
        or not isinstance(document.get("interfaces"), list)
        or not document["interfaces"]
    ):
        raise SocketError(f'{where}: expected {{"task": ..., "interfaces": [{{"inputs": [...], "outputs": [...]}}]}}')
    if document.get("task") != plugin.name:
        raise SocketError(f"{where} maps the sockets of {document.get('task')!r}, not {plugin.name!r}")
    interfaces = tuple(_interface(e, f"{where}: interfaces[{i}]") for i, e in enumerate(document["interfaces"]))
    for index, interface in enumerate(interfaces):
        check_interface(plugin, interface, f"{where}: interfaces[{index}]")
    keys = [i.key for i in interfaces]
    if len(set(keys)) != len(keys):
        raise SocketError(f"{where}: two socket sets take the same inputs; the platform could not tell them apart")
    return interfaces


def interfaces_json(plugin: TaskPlugin, interfaces: Sequence[Interface]) -> dict[str, Any]:
    """The mapping file's document for ``interfaces`` (``None`` fields left out)."""

    def described(socket: Socket, output: bool) -> dict[str, Any]:
        fields_ = asdict(socket) if output else {k: v for k, v in asdict(socket).items() if k not in _OUTPUT_ONLY}
        return {k: v for k, v in fields_.items() if v is not None}

    return {
        "task": plugin.name,
        "interfaces": [
            {"inputs": [described(s, False) for s in i.inputs], "outputs": [described(s, True) for s in i.outputs]}
            for i in interfaces
        ],
    }


def select_interface(interfaces: Sequence[Interface], slugs: Sequence[str] | None) -> Interface | None:
    """The set whose inputs are ``slugs`` (any order); the first set when ``slugs`` is None."""
    if slugs is None:
        return interfaces[0]
    wanted = tuple(sorted(slugs))
    return next((i for i in interfaces if i.key == wanted), None)
