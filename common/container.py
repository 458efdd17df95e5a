"""The grand-challenge.org algorithm container entrypoint, shared by every task plugin.

Run as ``python -m eyegc.common.container`` (the image's ENTRYPOINT). One run is one case
(docs/REFERENCE.md §1): the platform mounts the case read-only at ``/input`` — ``/input/inputs.json``
plus one file per image socket at ``/input/<relative_path>/<uuid>.mha`` — and collects exactly one
file per output socket from ``/output/<relative_path>/``.

The entrypoint picks a handler from ``tuple(sorted(input slugs))`` as the official template does,
reads the image with the plugin (which validates it), predicts with the shared
:class:`~eyegc.common.inference.Predictor` (every fold of every bundle, TTA, AMP on CUDA) and writes
each output socket. Outputs are staged and moved into place only once every socket is written, so
a failed run leaves no output file. It opens no network connection and writes only below the
output folder and the temporary folder.

:func:`run_case` and :func:`layout_case` are importable so tests and ``submit.sh`` can run a case
in-process on the same folders the container sees.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import CONFIG_NAME
from eyegc.common.errors import BundleError, DataError, EyegcError, user_error_message
from eyegc.common.invoke import API_METHODS, DEFAULT_PORT, serve
from eyegc.common.plugin import SOCKET_CONTENTS, Socket, TaskPlugin
from eyegc.common.registry import look_up_option
from eyegc.common.sockets import (
    Interface,
    default_interfaces,
    label_map_values,
    read_interfaces,
    select_interface,
)

__all__ = [
    "BAKED_BUNDLES",
    "BAKED_SOCKETS",
    "IMAGE_SUFFIXES",
    "INPUTS_JSON",
    "MODEL_DIR",
    "OUTPUT_NAME",
    "SOCKET_KEYS",
    "CaseInputs",
    "check_output_writable",
    "default_model_dirs",
    "entry_socket",
    "find_bundles",
    "layout_case",
    "main",
    "output_values",
    "platform_socket",
    "read_input_image",
    "read_inputs_json",
    "read_output_values",
    "resolve_case_inputs",
    "run_case",
    "to_geometry",
]

#: Written by the platform beside the socket folders.
INPUTS_JSON = "inputs.json"
#: The keys of an inputs.json entry that hold its socket, in the order read: current, then legacy.
SOCKET_KEYS = ("socket", "interface")
#: Where the platform extracts an uploaded ``model.tar.gz``; it wins over baked-in bundles.
MODEL_DIR = Path("/opt/ml/model")
#: Where the Dockerfile bakes bundles into the image.
BAKED_BUNDLES = Path("/opt/app/bundles")
#: Where the Dockerfile bakes the socket mapping (``submit.sh --sockets``; the task's own by default).
BAKED_SOCKETS = Path("/opt/app/sockets.json")
#: The one file written per image output socket.
OUTPUT_NAME = "output.mha"
#: What an input image socket folder may hold (the platform converts uploads to .mha; tif is kept).
IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".png", ".jpg", ".jpeg")

_PROG = "eyegc-container"


def _log(message: str, problem: bool = False) -> None:
    # Progress to stdout, problems to stderr: the platform shows stderr as warnings in the job's
    # result (its algorithm documentation), so a healthy run writes nothing there. Flushed at once.
    print(f"{_PROG}: {message}", file=sys.stderr if problem else sys.stdout, flush=True)


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseInputs:
    """One case's resolved inputs.

    Attributes:
        images: input socket slug -> the one image file of that socket.
        names: slug -> the original upload name from inputs.json (the file name otherwise).
        source: ``"inputs.json"`` or ``"socket folders"`` (the fallback when inputs.json is absent).
        interface: the socket set whose inputs the case presents; its outputs are written.
    """

    images: dict[str, Path]
    names: dict[str, str]
    source: str
    interface: Interface


def read_inputs_json(input_dir: Path) -> list[dict[str, Any]] | None:
    """``input_dir/inputs.json`` validated against the platform's shape; ``None`` when absent.

    Raises:
        DataError: not JSON, not a list, or an entry without ``interface.slug`` (the message names
            the file and the entry).
    """
    path = Path(input_dir) / INPUTS_JSON
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise DataError(f"{path} must hold a JSON list of socket values, got {type(entries).__name__}")
    for index, entry in enumerate(entries):
        socket = entry_socket(entry) if isinstance(entry, dict) else None
        if socket is None or not isinstance(socket.get("slug"), str):
            raise DataError(
                f"{path}: entry {index} has no socket.slug (nor the legacy interface.slug); expected the "
                "platform's socket-value shape"
            )
        relative = socket.get("relative_path")
        if relative is not None and (not isinstance(relative, str) or Path(relative).is_absolute() or ".." in relative):
            raise DataError(f"{path}: entry {index} has an invalid relative_path {relative!r}")
    return entries


def entry_socket(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The socket object of an inputs.json entry: ``socket``, else the legacy ``interface``.

    The platform writes both keys with one object; ``interface`` is "kept for legacy support"
    (grand-challenge's ``ComponentInterfaceValueSerializer``) and may go, ``socket`` is current.
    """
    for key in SOCKET_KEYS:
        socket = entry.get(key)
        if isinstance(socket, dict):
            return socket
    return None


def _entry_slug(entry: Mapping[str, Any]) -> str:
    """The socket slug of an entry that :func:`read_inputs_json` validated."""
    return str((entry_socket(entry) or {})["slug"])


def _socket_image(folder: Path) -> Path:
    """The single image file of an input image socket folder."""
    if not folder.is_dir():
        raise DataError(f"input socket folder {folder} is missing")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if len(files) != 1:
        listing = ", ".join(p.name for p in files) if files else "nothing"
        raise DataError(f"{folder} must hold exactly one image file; it holds {listing}")
    path = files[0]
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise DataError(f"{path}: unsupported image format; expected one of {', '.join(IMAGE_SUFFIXES)}")
    return path


def _image_handler(interface: Interface, input_dir: Path, entries: list[dict[str, Any]] | None) -> CaseInputs:
    """Handler for socket sets whose inputs are all image sockets: one file per socket folder."""
    by_slug = {_entry_slug(e): e for e in entries or []}
    images: dict[str, Path] = {}
    names: dict[str, str] = {}
    for socket in interface.inputs:
        entry = by_slug.get(socket.slug, {})
        # The platform's relative_path is authoritative when given; the plugin's otherwise.
        relative = (entry_socket(entry) or {}).get("relative_path") or socket.relative_path
        path = _socket_image(Path(input_dir) / relative)
        images[socket.slug] = path
        image_info = entry.get("image")
        name = image_info.get("name") if isinstance(image_info, dict) else None
        names[socket.slug] = str(name) if name else path.name
    source = "inputs.json" if entries is not None else "socket folders"
    return CaseInputs(images=images, names=names, source=source, interface=interface)


def _handlers(interfaces: Sequence[Interface]) -> dict[tuple[str, ...], Callable[..., CaseInputs]]:
    """Handler table keyed by the sorted input slugs, as in the official inference.py template."""
    return {i.key: _image_handler for i in interfaces if all(s.super_kind == "Image" for s in i.inputs)}


def resolve_case_inputs(
    plugin: TaskPlugin, input_dir: Path, interfaces: Sequence[Interface] | None = None
) -> CaseInputs:
    """Validate the case under ``input_dir`` and find its input files (reads no pixels).

    Args:
        plugin: the task.
        input_dir: the case (``/input``).
        interfaces: the algorithm's socket sets (default: the task's own); the one whose inputs
            inputs.json presents is used (the first without inputs.json).

    Raises:
        DataError: malformed inputs.json, sockets of no set, a socket folder that is missing or
            does not hold exactly one supported image file.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DataError(f"input folder {input_dir} does not exist")
    interfaces = interfaces or default_interfaces(plugin)
    entries = read_inputs_json(input_dir)
    slugs = [_entry_slug(e) for e in entries] if entries is not None else None
    interface = select_interface(interfaces, slugs)
    handler = _handlers(interfaces).get(interface.key) if interface is not None else None
    if handler is None or interface is None:
        where = input_dir / INPUTS_JSON if entries is not None else input_dir
        expected = " or ".join(str(list(i.key)) for i in interfaces)
        raise DataError(f"{where}: no handler for input sockets {sorted(slugs or [])}; {plugin.name} takes {expected}")
    return handler(interface, input_dir, entries)


# -- outputs ------------------------------------------------------------------------------------


def output_values(
    plugin: TaskPlugin, masks: np.ndarray, probabilities: np.ndarray, sockets: Sequence[Socket] | None = None
) -> dict[Socket, Any]:
    """What each output socket (default: the task's own) carries for one case: a 2D array or a JSON value."""
    keys = [c.key for c in plugin.classes]
    values: dict[Socket, Any] = {}
    for socket in plugin.output_sockets if sockets is None else sockets:
        look_up_option(socket.content, SOCKET_CONTENTS, what="output socket content")
        content = socket.content
        index = None
        if socket.class_key is not None:
            if socket.class_key not in keys:
                raise EyegcError(f"output socket {socket.slug} names class {socket.class_key!r}; classes are {keys}")
            index = keys.index(socket.class_key)
        elif content != "label_map":
            raise EyegcError(f"output socket {socket.slug} ({content}) needs a class_key")
        if content == "mask":
            values[socket] = np.ascontiguousarray(masks[index], dtype=np.uint8)
        elif content == "probability":
            values[socket] = np.ascontiguousarray(probabilities[index], dtype=np.float32)
        elif content == "label_map":
            lut = np.array(label_map_values(plugin, socket), np.uint8)
            values[socket] = lut[masks[0] if masks.ndim == 3 else masks]
        elif content == "grade":
            values[socket] = int(masks[index])
        elif content == "probabilities":
            grades = int(plugin.classes[index].num_classes or 2)
            values[socket] = [round(float(p), 6) for p in probabilities[index][:grades]]
        else:  # likelihood
            values[socket] = round(float(probabilities[index][1]), 6)
    return values


def read_output_values(plugin: TaskPlugin, output_dir: Path, sockets: Sequence[Socket] | None = None) -> dict[str, Any]:
    """Read back what :func:`run_case` wrote: socket slug -> array (image sockets) or JSON value.

    Raises:
        DataError: a socket's file is missing, or anything else lies in the output folder.
    """
    from eyegc.common.imageio import read_image_array

    output_dir = Path(output_dir)
    sockets = plugin.output_sockets if sockets is None else sockets
    expected = {_output_file(s) for s in sockets}
    found = {str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file()}
    if found != expected:
        raise DataError(f"{output_dir} holds {sorted(found)}; expected exactly {sorted(expected)}")
    values: dict[str, Any] = {}
    for socket in sockets:
        path = output_dir / _output_file(socket)
        if socket.super_kind == "Image":
            values[socket.slug] = read_image_array(path)[0]
        else:
            values[socket.slug] = json.loads(path.read_text())
    return values


def _output_file(socket: Socket) -> str:
    """Where a socket's file goes below ``/output``: ``<relative_path>/output.mha`` for images."""
    return f"{socket.relative_path}/{OUTPUT_NAME}" if socket.super_kind == "Image" else socket.relative_path


def _check_output_free(output_dir: Path, sockets: Sequence[Socket]) -> None:
    # One file per output socket: refuse to add ours beside something already there.
    for socket in sockets:
        if socket.super_kind != "Image":
            if (output_dir / socket.relative_path).exists():
                raise EyegcError(f"{output_dir / socket.relative_path} already exists; the output folder must be empty")
            continue
        folder = output_dir / socket.relative_path
        if folder.is_dir():
            others = [p.name for p in folder.iterdir() if p.name != OUTPUT_NAME]
            if others:
                raise EyegcError(f"{folder} already holds {', '.join(sorted(others))}; the output folder must be empty")


def check_output_writable(output_dir: Path) -> None:
    """Refuse an output folder that cannot be written (read-only mount, permissions) before any work.

    Raises:
        EyegcError: the folder cannot be created or written, naming it and the cause.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output_dir).close()
    except OSError as exc:
        raise EyegcError(
            f"output folder {output_dir} is not writable ({exc.strerror or exc}); the platform mounts it "
            "writable: for a local run, mount it read-write"
        ) from None


def _write_outputs(output_dir: Path, values: Mapping[Socket, Any]) -> dict[str, Path]:
    """Write every socket into a staging folder, then move each file into place."""
    from eyegc.common.imageio import write_mha

    output_dir.mkdir(parents=True, exist_ok=True)
    # Staged inside the output folder so each final move is an atomic rename on one filesystem.
    staging = Path(tempfile.mkdtemp(prefix=".eyegc-staging-", dir=output_dir))
    try:
        staged = {}
        for socket, value in values.items():
            relative = _output_file(socket)
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if socket.super_kind == "Image":
                write_mha(path, value)
            else:
                path.write_text(json.dumps(value))
            staged[socket.slug] = (path, output_dir / relative)
        written = {}
        for slug, (src, dst) in staged.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            written[slug] = dst
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- one case ---------------------------------------------------------------------------------


def _device_description(predictor: Any) -> str:
    device = predictor.device
    if device.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(device)}, AMP)"
    import torch

    return f"cpu ({torch.get_num_threads()} threads)"


def run_case(
    plugin: TaskPlugin,
    predictor: Any,
    input_dir: Path,
    output_dir: Path,
    interfaces: Sequence[Interface] | None = None,
) -> dict[str, Any]:
    """Predict the one case under ``input_dir`` and write its output sockets under ``output_dir``.

    Args:
        plugin: the task.
        predictor: a :class:`~eyegc.common.inference.Predictor` for that task.
        input_dir: the case as the platform lays it out (``/input``).
        output_dir: where the output sockets go (``/output``); created if missing.
        interfaces: the algorithm's socket sets (default: the task's own); the set the case's
            inputs belong to says which outputs are written.

    Returns:
        A summary: case name, input and output files, device, seconds per stage.

    Raises:
        DataError: a bad case (the message names the file); no output file is left then.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    started = time.perf_counter()
    inputs = resolve_case_inputs(plugin, input_dir, interfaces)
    if len(inputs.images) != 1:
        raise EyegcError(f"{plugin.name} has {len(inputs.images)} input images; the predictor takes one")
    _check_output_free(output_dir, inputs.interface.outputs)
    ((slug, path),) = inputs.images.items()
    image, geometry = read_input_image(plugin, path)
    read_done = time.perf_counter()
    masks, probabilities = predictor.predict(image)
    predict_done = time.perf_counter()
    values = output_values(plugin, masks, probabilities, inputs.interface.outputs)
    if geometry is not None:
        values = {socket: to_geometry(value, socket, geometry) for socket, value in values.items()}
    for socket, value in values.items():
        if isinstance(value, np.ndarray) and value.shape != (geometry or image.shape[-2:]):
            raise EyegcError(f"output {socket.slug} is {value.shape}, its input {path} is {image.shape[-2:]}")
    written = _write_outputs(output_dir, values)
    done = time.perf_counter()
    summary = {
        "case": inputs.names[slug],
        "inputs": {k: str(v) for k, v in inputs.images.items()},
        "input_source": inputs.source,
        "outputs": {k: str(v) for k, v in written.items()},
        "device": _device_description(predictor),
        "seconds": {
            "read": round(read_done - started, 3),
            "predict": round(predict_done - read_done, 3),
            "write": round(done - predict_done, 3),
            "total": round(done - started, 3),
        },
        "foreground_pixels": {
            s.slug: int(np.count_nonzero(v)) for s, v in values.items() if s.content in ("mask", "label_map")
        },
        "values": {s.slug: v for s, v in values.items() if not isinstance(v, np.ndarray)},
    }
    return summary


def read_input_image(plugin: TaskPlugin, path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The input image for the network, and the input's own (H, W) when it had to be resampled.

    The platform may hand over an image of another size than the task's (a re-export, a scanner
    variant): it is resampled to the task's size for the network, with a warning, and the outputs
    go back to the input's geometry (:func:`to_geometry`), rather than the case failing.

    Raises:
        DataError: the image is unreadable, or wrong for another reason than its size.
    """
    from eyegc.common.imageio import read_image_array
    from PIL import Image

    try:
        return plugin.read_image(path), None
    except DataError as error:
        refusal = error
        raw = read_image_array(path)
        expected = plugin.image_size
        if expected is None or tuple(raw.shape[-2:]) == tuple(expected) or raw.dtype != np.uint8:
            raise
    height, width = raw.shape[-2:]
    if len(raw) not in (1, 3):
        raise refusal  # only grey and RGB images are resampled
    channels = [Image.fromarray(c).resize((expected[1], expected[0]), Image.BILINEAR) for c in raw]
    resized = Image.merge("RGB", channels) if len(channels) == 3 else channels[0]
    with tempfile.TemporaryDirectory(prefix="eyegc-resampled-") as folder:
        resampled = Path(folder) / "resampled.png"
        resized.save(resampled)
        try:
            image = plugin.read_image(resampled)
        except DataError:
            raise refusal from None  # wrong in another way too: the message names the user's file
    _log(
        f"warning: {path} is {width}x{height}; {plugin.name} images are {expected[1]}x{expected[0]}: resampled "
        "for the network, outputs written at the input's size",
        problem=True,
    )
    return image, (height, width)


def to_geometry(value: Any, socket: Socket, geometry: tuple[int, int]) -> Any:
    """An image output resized to the input's (H, W): labels by nearest neighbour, probabilities linearly."""
    if not isinstance(value, np.ndarray):
        return value
    from skimage.transform import resize

    order = 1 if socket.content == "probability" else 0
    return resize(value, geometry, order=order, preserve_range=True, anti_aliasing=False).astype(value.dtype)


def layout_case(
    plugin: TaskPlugin,
    image_path: Path | Mapping[str, Path],
    input_dir: Path,
    interface: Interface | None = None,
) -> Path:
    """Lay a case out as the platform does: ``inputs.json`` + ``images/<slug>/<uuid>.mha``.

    Args:
        plugin: the task.
        image_path: the image of a single-input task, or input slug -> image for several inputs.
        input_dir: the (new or empty) folder standing in for ``/input``.
        interface: the socket set whose inputs to lay out (default: the task's own).

    Returns:
        ``input_dir``.
    """
    import SimpleITK as sitk
    from eyegc.common.imageio import write_sitk_image

    input_dir = Path(input_dir)
    sockets = (interface or default_interfaces(plugin)[0]).inputs
    images = dict(image_path) if isinstance(image_path, Mapping) else None
    if images is None:
        if len(sockets) != 1:
            raise EyegcError(f"{plugin.name} has {len(sockets)} input sockets: pass slug -> image")
        images = {sockets[0].slug: Path(image_path)}  # type: ignore[arg-type]
    entries = []
    for socket in sockets:
        if socket.slug not in images:
            raise EyegcError(f"no image given for input socket {socket.slug}")
        source = Path(images[socket.slug])
        if not source.is_file():
            raise DataError(f"image file not found: {source}")
        folder = input_dir / socket.relative_path
        folder.mkdir(parents=True, exist_ok=True)
        image_pk = str(uuid.uuid4())
        try:
            # panimg converts 2D png/jpeg uploads to .mha; this mimics it with the same library.
            write_sitk_image(sitk.ReadImage(str(source)), folder / f"{image_pk}.mha", compress=True)
        except RuntimeError as exc:
            raise DataError(f"cannot convert {source} to .mha: {str(exc).strip().splitlines()[-1]}") from None
        described = platform_socket(socket)
        entries.append(
            {
                "pk": len(entries) + 1,
                "socket": described,
                "interface": described,  # the platform's legacy key, the same object
                "image": {"pk": image_pk, "name": source.name},
                "file": None,
                "value": None,
            }
        )
    (input_dir / INPUTS_JSON).write_text(json.dumps(entries, indent=2) + "\n")
    return input_dir


def platform_socket(socket: Socket) -> dict[str, Any]:
    """A socket as the platform describes it in inputs.json (``ComponentInterfaceSerializer``'s fields)."""
    return {
        "title": socket.slug.replace("-", " ").capitalize(),
        "description": "",
        "slug": socket.slug,
        "kind": socket.kind,
        "pk": None,
        "default_value": None,
        "super_kind": socket.super_kind,
        "relative_path": socket.relative_path,
        "overlay_segments": [],
        "look_up_table": None,
    }


# -- models -------------------------------------------------------------------------------------


def find_bundles(root: Path) -> list[Path]:
    """``root`` itself when it is a bundle (holds ``bundle.json``), else its bundle subfolders."""
    root = Path(root)
    if (root / CONFIG_NAME).is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file())


def default_model_dirs(model_dir: Path = MODEL_DIR, baked: Path = BAKED_BUNDLES) -> list[Path]:
    """Bundles from ``/opt/ml/model`` (an uploaded model.tar.gz) if any, else the baked-in ones.

    An empty or absent ``model_dir`` falls back to the baked bundles; one that holds files but no
    bundle the image recognises is an error: silently predicting with the baked weights instead of
    the uploaded ones would be the worst kind of wrong.

    Raises:
        BundleError: ``model_dir`` holds something but no bundle, or neither place holds a bundle.
    """
    found = find_bundles(model_dir)
    if found:
        return found
    contents = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    if contents:
        deeper = sorted(str(p.parent) for p in model_dir.glob("*/*/**/bundle.json"))[:3]
        hint = f" (bundle.json found deeper: {', '.join(deeper)})" if deeper else ""
        raise BundleError(
            f"{model_dir} holds {', '.join(contents[:5])} but no model bundle at its top or one folder down{hint}; "
            "the uploaded model.tar.gz must extract to NN-name/bundle.json: make it with ./submit.sh"
        )
    found = find_bundles(baked)
    if found:
        return found
    raise BundleError(f"no model bundle found in {model_dir} nor under {baked}; pass --model BUNDLE")


# -- command line -------------------------------------------------------------------------------


def _process_age() -> float | None:
    """Seconds since this process started (Linux), so the log shows start-to-prediction time."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_parser() -> argparse.ArgumentParser:
    """The entrypoint's options; each defaults to an ``EYEGC_*`` environment variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog=_PROG, description="Predict one grand-challenge case.")
    parser.add_argument("--task", default=env("EYEGC_TASK"), help="task name (env EYEGC_TASK)")
    parser.add_argument("--input", type=Path, default=Path(env("EYEGC_INPUT", "/input")), help="default /input")
    parser.add_argument("--output", type=Path, default=Path(env("EYEGC_OUTPUT", "/output")), help="default /output")
    model_env = [Path(p) for p in env("EYEGC_MODEL", "").split(os.pathsep) if p]
    parser.add_argument(
        "--model",
        type=Path,
        nargs="+",
        default=model_env or None,
        help=f"bundle folders (env EYEGC_MODEL, {os.pathsep}-separated; default: {MODEL_DIR} when it holds "
        f"a bundle, else {BAKED_BUNDLES}/*)",
    )
    parser.add_argument("--tta", default=env("EYEGC_TTA", "flip"), help="none, flip (default) or dihedral")
    parser.add_argument("--device", default=env("EYEGC_DEVICE", "auto"), help="auto (default), cpu or cuda")
    parser.add_argument(
        "--sockets",
        type=Path,
        default=Path(env("EYEGC_SOCKETS", str(BAKED_SOCKETS))),
        help=f"the socket mapping file (env EYEGC_SOCKETS, default {BAKED_SOCKETS}); absent: the task's own sockets",
    )
    parser.add_argument(
        "--api",
        default=env("EYEGC_API_METHOD", "exec"),
        help="exec (default: one case per run) or invoke (serve /health and /invoke; env EYEGC_API_METHOD)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("EYEGC_PORT", str(DEFAULT_PORT))),
        help=f"invoke mode (default {DEFAULT_PORT})",
    )
    return parser


def _load_predictor(plugin: TaskPlugin, args: argparse.Namespace, started: float) -> tuple[Any, float]:
    """Every fold of every bundle, once; returns the predictor and the seconds the load took."""
    from eyegc.common.bundle import load_bundle
    from eyegc.common.inference import Predictor, resolve_device

    models = list(args.model) if args.model else default_model_dirs()
    bundles = [load_bundle(m, task=plugin.name) for m in models]
    predictor = Predictor(plugin, bundles, tta=args.tta, device=resolve_device(args.device))
    loaded = time.perf_counter() - started
    _log(
        f"{predictor.members} network(s) from {', '.join(map(str, models))}; TTA {'+'.join(predictor.ops)}; "
        f"device {_device_description(predictor)}; ready in {loaded:.2f} s"
    )
    return predictor, loaded


def _finish_summary(summary: dict[str, Any], model_load: float) -> None:
    """Add the process-level figures and log the case's line and its JSON summary."""
    age = _process_age()
    summary["seconds"]["model_load"] = round(model_load, 3)
    summary["seconds"]["since_process_start"] = round(age, 3) if age is not None else None
    summary["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    summary["unix_time_done"] = round(time.time(), 3)
    s = summary["seconds"]
    _log(
        f"case {summary['case']}: read {s['read']:.2f} s, predict {s['predict']:.2f} s, write {s['write']:.2f} s "
        f"on {summary['device']}; outputs: {', '.join(summary['outputs'].values())}"
    )
    _log("summary " + json.dumps(summary, sort_keys=True))


def _exec_one_case(plugin: TaskPlugin, interfaces: Sequence[Interface], args: argparse.Namespace) -> None:
    """Exec mode: validate the case and the output first (a second, not a model load), then predict it."""
    started = time.perf_counter()
    inputs = resolve_case_inputs(plugin, args.input, interfaces)
    check_output_writable(args.output)
    _log(f"task {plugin.name}; inputs from {inputs.source}: {', '.join(map(str, inputs.images.values()))}")
    predictor, loaded = _load_predictor(plugin, args, started)
    _finish_summary(run_case(plugin, predictor, args.input, args.output, interfaces), loaded)


def _serve_cases(plugin: TaskPlugin, interfaces: Sequence[Interface], args: argparse.Namespace) -> None:
    """Invoke mode: load once, then predict whatever the runner puts in /input at each POST /invoke."""
    predictor, loaded = _load_predictor(plugin, args, time.perf_counter())

    def run_one() -> dict[str, Any]:
        check_output_writable(args.output)
        summary = run_case(plugin, predictor, args.input, args.output, interfaces)
        _finish_summary(summary, loaded)
        return summary

    serve(run_one, args.port, _log)


def main(argv: Sequence[str] | None = None) -> int:
    """Predict the case (exec mode) or serve cases (invoke mode); user errors print one line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        if not args.task:
            raise EyegcError("no task: pass --task or set EYEGC_TASK")
        from eyegc.common.registry import get_task

        plugin = get_task(args.task)
        # Only the baked file may be absent (an image without a mapping serves the task's own sockets);
        # a --sockets the user names must exist.
        use_own = args.sockets == BAKED_SOCKETS and not args.sockets.is_file()
        interfaces = default_interfaces(plugin) if use_own else read_interfaces(args.sockets, plugin)
        api = look_up_option(args.api, API_METHODS, what="API method (--api, EYEGC_API_METHOD)")
        if api == "invoke":
            _serve_cases(plugin, interfaces, args)
        else:
            _exec_one_case(plugin, interfaces, args)
    except KeyboardInterrupt:
        _log("interrupted; no output was written", problem=True)
        return 130
    except (EyegcError, OSError) as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        _log(f"error: {message}", problem=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
