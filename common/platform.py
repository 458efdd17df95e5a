"""Talk to grand-challenge.org with its own client (gcapi): is the algorithm's socket set the image's?

``eyegc gc check ALGORITHM`` reads the algorithm's socket sets ("interfaces") with
``client.algorithms.detail(slug=...)`` and compares them with the mapping an image serves (its
``org.eyegc.sockets`` label, a ``--sockets`` file, or the task's default): every input and output
must exist on the platform with the same slug, relative path, super kind and kind, and every output
the platform expects must be written. With an exported image it also checks the file against the
platform's upload limit. Nothing is uploaded.

``eyegc gc try ALGORITHM IMAGE --model RUN`` runs one case on the platform once the image is active:
it lays the image out as the platform's input (the same ``.mha`` the local test runs use), starts a
job with ``client.start_algorithm_job``, waits for it, downloads every output with
``client.download_socket_value`` and compares them with the entrypoint run here on the same input.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.container import OUTPUT_NAME, layout_case, read_input_image, read_output_values, run_case
from eyegc.common.errors import EyegcError
from eyegc.common.imageio import atomic_output_dir
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
    "JOB_END_STATES",
    "TOKEN_VARIABLES",
    "TRY_TOLERANCE",
    "Comparison",
    "PlatformError",
    "algorithm_interfaces",
    "check_image_size",
    "compare_interfaces",
    "compare_outputs",
    "image_sockets",
    "mapping_to_check",
    "platform_client",
    "run_platform_job",
    "served_interface",
    "try_case",
]

#: The platform's API root (gcapi's default).
API_URL = "https://grand-challenge.org/api/v1/"
#: Where the token is read from: this project's name first, then gcapi's own.
TOKEN_VARIABLES = ("GRAND_CHALLENGE_TOKEN", "GRAND_CHALLENGE_AUTHORIZATION")
#: The largest container image upload the algorithm page accepts (bytes): the platform's setting
#: COMPONENTS_MAXIMUM_IMAGE_SIZE, 10 GiB, checked on the sum of the uploaded files' sizes.
IMAGE_SIZE_LIMIT = 10 * 1024**3
#: A job's status once it will not change any more (the platform's ComponentJob status choices).
JOB_END_STATES = ("Succeeded", "Failed", "Cancelled")
#: The share of values an output may differ by from the local run and still count as the same
#: prediction: the platform may run on a GPU, where float rounding flips a few pixels at a threshold.
TRY_TOLERANCE = 1e-3


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


def served_interface(image: Sequence[Interface], platform: Sequence[Interface]) -> Interface:
    """The image's socket set that ``gc try`` runs: the first the algorithm has as well.

    Raises:
        PlatformError: the image and the algorithm do not match (``gc check`` names why).
    """
    comparison = compare_interfaces(image, platform)
    if comparison.problems:
        raise PlatformError(
            f"the image's sockets do not match the algorithm's ({comparison.problems[0]}); run `eyegc gc check` first"
        )
    return next(i for i in image if i.key in comparison.matched)


def run_platform_job(
    client: Any,
    algorithm: str,
    inputs: Mapping[str, Path],
    out: Path,
    timeout_s: float = 3600.0,
    poll_s: float = 10.0,
    say: Callable[[str], None] = print,
) -> str:
    """Start a job of ``algorithm`` on the input files, wait for it and download its outputs into ``out``.

    Args:
        client: a gcapi client (:func:`platform_client`).
        algorithm: the algorithm's slug.
        inputs: input socket slug -> the file to upload for it.
        out: a new folder; each output lands at ``out/<relative_path>`` as under ``/output``.
        timeout_s: how long to wait for the job to end.
        poll_s: seconds between status reads.
        say: where progress lines go.

    Returns:
        The job's pk.

    Raises:
        PlatformError: the job could not start, did not succeed in time, or an output failed to download.
    """
    specs = [gcapi.SocketValueSpec(socket_slug=slug, file=Path(path)) for slug, path in inputs.items()]
    try:
        job = client.start_algorithm_job(algorithm_slug=algorithm, inputs=specs)
    except Exception as error:  # gcapi raises ValueError, httpx errors and its own for a refused job
        raise PlatformError(
            f"starting a job of {algorithm} failed ({type(error).__name__}: {_first_line(error)})"
        ) from None
    say(f"job {job.pk} started on {client.base_url}; status {job.status}")
    try:
        detail = _wait_for_job(client, str(job.pk), str(job.status), timeout_s, poll_s, say)
    except KeyboardInterrupt:
        say(f"job {job.pk} goes on running on the platform: see it on the algorithm's Results page")
        raise
    if detail.status != "Succeeded":
        raise PlatformError(f"job {job.pk} ended {detail.status}: read its logs on the algorithm's Results page")
    out.mkdir(parents=True)
    for value in detail.outputs:
        try:
            client.download_socket_value(value, output_directory=out)
        except Exception as error:
            raise PlatformError(
                f"job {job.pk}: downloading output {value.interface.slug} failed ({_first_line(error)})"
            ) from None
    return str(job.pk)


def _first_line(error: BaseException) -> str:
    """An error's first line (httpx adds a line of advice that would break the one-line rule)."""
    return (str(error).splitlines() or [""])[0]


def _wait_for_job(
    client: Any, pk: str, status: str, timeout_s: float, poll_s: float, say: Callable[[str], None]
) -> Any:
    """Read the job's status every ``poll_s`` (never past the deadline) until it ends; its last detail."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            detail = client.algorithm_jobs.detail(pk=pk)
        except Exception as error:  # httpx errors and gcapi's: the job itself may be fine
            raise PlatformError(
                f"reading job {pk} failed ({type(error).__name__}: {_first_line(error)}); it may still be running: "
                "see it on "
                "the algorithm's Results page"
            ) from None
        if detail.status != status:
            status = detail.status
            say(f"job {pk}: {status}")
        if status in JOB_END_STATES:
            return detail
        left = deadline - time.monotonic()
        if left <= 0:
            raise PlatformError(f"job {pk} is still {status} after --timeout {timeout_s:g} s; see it on the platform")
        time.sleep(min(poll_s, left))


def compare_outputs(platform_values: Mapping[str, Any], local_values: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Per output socket, how many values differ between the platform's run and the local one, of how many.

    Probability maps count a value as different when the two differ by more than one 8-bit level;
    a missing output, another shape or another type of value counts as all different.
    """
    differences = {}
    for slug, local in local_values.items():
        ours, theirs = np.asarray(local), np.asarray(platform_values.get(slug))
        size = max(ours.size, 1)
        if slug not in platform_values or ours.shape != theirs.shape:
            differences[slug] = (size, size)
        elif np.issubdtype(ours.dtype, np.floating) and np.issubdtype(theirs.dtype, np.number):
            differences[slug] = (int(np.count_nonzero(np.abs(ours - theirs.astype(np.float64)) > 1 / 255)), size)
        elif ours.dtype.kind == theirs.dtype.kind or {ours.dtype.kind, theirs.dtype.kind} <= set("biu"):
            differences[slug] = (int(np.count_nonzero(ours != theirs)), size)
        else:
            differences[slug] = (size, size)
    return differences


def try_case(
    client: Any,
    algorithm: str,
    predictor: Any,
    interfaces: Sequence[Interface],
    image: Path,
    out: Path,
    timeout_s: float = 3600.0,
    poll_s: float = 10.0,
) -> tuple[str, dict[str, tuple[int, int]]]:
    """One case on the platform and here: ``out/input`` (the case as the platform's input),
    ``out/platform`` (the job's outputs) and ``out/local`` (the entrypoint run here on the same input).

    Args:
        client: a gcapi client.
        algorithm: the algorithm's slug; its active image should hold the predictor's bundles.
        predictor: a :class:`~eyegc.common.inference.Predictor` of those bundles.
        interfaces: the image's socket sets (the task's default or its ``--sockets`` file).
        image: the case's image file.
        out: a new or empty folder.
        timeout_s: how long to wait for the job.
        poll_s: seconds between status reads.

    Returns:
        The job's pk, and per output socket (differing values, values) as :func:`compare_outputs`.

    Raises:
        PlatformError: the sockets do not match, or the job failed.
        EyegcError: ``out`` is not empty.
    """
    if out.exists() and any(out.iterdir()):
        raise EyegcError(f"--out {out} is not empty; give a new folder (nothing is overwritten)")
    plugin = predictor.plugin
    interface = served_interface(interfaces, algorithm_interfaces(client, algorithm))
    # Everything is made in a hidden folder beside --out and moved into place only when complete.
    with atomic_output_dir(out, overwrite=out.exists()) as staging:
        case = layout_case(plugin, image, staging / "input", interface)
        files = {s.slug: next((case / s.relative_path).iterdir()) for s in interface.inputs}
        for path in files.values():
            read_input_image(plugin, path)  # a case the image would refuse never becomes a platform job
        job = run_platform_job(client, algorithm, files, staging / "platform", timeout_s, poll_s)
        _name_platform_outputs(job, staging / "platform", interface)
        run_case(plugin, predictor, case, staging / "local", interfaces)
        differences = compare_outputs(
            read_output_values(plugin, staging / "platform", interface.outputs),
            read_output_values(plugin, staging / "local", interface.outputs),
        )
    return job, differences


def _name_platform_outputs(job: str, folder: Path, interface: Interface) -> None:
    """gcapi names a downloaded image by its pk: give each the entrypoint's name; a missing output is an error."""
    for socket in interface.outputs:
        where = folder / socket.relative_path
        if not where.exists():
            raise PlatformError(f"job {job} wrote no output {socket.slug} ({socket.relative_path})")
        images = list(where.glob("*.mha")) if socket.super_kind == "Image" else []
        if len(images) == 1:
            images[0].rename(images[0].with_name(OUTPUT_NAME))
