"""Build, test-run and export a grand-challenge.org algorithm container (the logic of ``submit.sh``).

Steps: verify the model bundle(s) → a wheelhouse of the project and its pinned dependencies
(cached) → ``docker build`` on an assembled context → test-run every sample case the way the
platform does (``/input/inputs.json`` + ``/input/images/<slug>/<uuid>.mha``, no network, memory
cap, read-only root, no capabilities) → check each output socket and compare it with
``eyegc predict`` run outside the container → local leaderboard of the container's own outputs →
``dist/<tag>-<timestamp>.tar.gz``, ``dist/<tag>-model.tar.gz`` and ``dist/<tag>-manifest.json``.

Without a Docker engine the entrypoint runs in-process on the same folders instead, and the exit
status is non-zero unless ``--no-docker`` asked for exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import sha256_file
from eyegc.common.errors import DataError, user_error_message
from eyegc.common.invoke import API_METHOD_LABEL, DEFAULT_PORT
from eyegc.common.outputs import OutputKind, check_outputs
from eyegc.common.sockets import (
    SOCKETS_LABEL,
    Interface,
    default_interfaces,
    interfaces_json,
    label_map_values,
    read_interfaces,
)
from packaging.requirements import Requirement
from packaging.version import Version

__all__ = ["DEFAULT_BASE_IMAGE", "build_parser", "main"]

#: The official template's base (a CUDA runtime with torch); needs a registry to pull it.
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
#: Base images whose torch meets MONAI 1.6's minimum (torch>=2.8), named when a base's torch does not.
GPU_BASE_EXAMPLES = ("pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime", "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime")
#: Written into the wheelhouse: pins torch to the base image's own when it has one, so pip never adds
#: a second torch beside it (empty when the base has none: the wheelhouse's CPU torch goes in).
BASE_CONSTRAINTS = "base-constraints.txt"
REPO = Path(__file__).resolve().parents[1]
#: Gitignored (``build/``): the cached wheelhouse, the assembled context and the test cases.
WORK = REPO / "build" / "container"
#: Bundle files that make up a bundle (the rest of a run folder is training artefacts).
BUNDLE_FILES = ("bundle.json", "splits.json", "checksums.sha256")
#: Allowed share of differing pixels between container and host predictions when the two run
#: different torch builds or devices (float rounding flips a few pixels at the threshold).
TOLERANCE = 1e-3
#: The longest one runner test run (every sample case in one mode) may take.
SHIM_RUN_TIMEOUT_S = 3600


class SubmitError(Exception):
    """A failed step: printed as one line, exit status 1."""


def _say(message: str = "") -> None:
    print(message, flush=True)


def _step(title: str) -> None:
    _say(f"\n== {title}")


def _run(cmd: Sequence[str], what: str, timeout: float | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command, capturing output; a failure raises SubmitError with its last lines."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise SubmitError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _safe_name(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tag.removesuffix(":latest")).strip("-")


# -- bundles and data ---------------------------------------------------------------------------


@dataclass
class StagedBundle:
    """A verified bundle copied (checksummed files only) to ``path`` as ``NN-<name>``."""

    source: Path
    path: Path
    checksums: dict[str, str]
    folds: int
    network: dict[str, Any]
    data_root: str | None


def _stage_bundles(task: str, models: Sequence[Path], dest: Path) -> list[StagedBundle]:
    """Verify each bundle with ``load_bundle`` and copy its files to ``dest/NN-name``.

    The ``NN-`` prefix keeps the user's order: the first bundle's postprocessing is the
    ensemble's, and the container sorts the bundle folders it finds.
    """
    from eyegc.common.bundle import load_bundle

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    staged = []
    for index, model in enumerate(models):
        bundle = load_bundle(model, task=task)
        listing = (Path(model) / "checksums.sha256").read_text().split("\n")
        checksums = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in listing if line.strip()}
        target = dest / f"{index:02d}-{_safe_name(Path(model).resolve().name)}"
        for name in sorted({*BUNDLE_FILES, *checksums}):
            if (Path(model) / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(model) / name, target / name)
        load_bundle(target, task=task)  # the copy verifies too
        staged.append(
            StagedBundle(
                source=Path(model).resolve(),
                path=target,
                checksums=checksums,
                folds=len(bundle.folds),
                network=bundle.config.get("network", {}),
                data_root=bundle.config.get("training", {}).get("data_root"),
            )
        )
        _say(f"bundle {model}: {len(bundle.folds)} fold(s), {bundle.config['network']['name']}, verified")
    return staged


def _demo(plugin: Any, root: Path, want_data: bool, want_model: bool) -> tuple[Path, Path | None]:
    """Sample data in ``root/data`` and the demo model in ``root/run`` (``eyegc demo``'s, reused when present)."""
    from eyegc.common.demo import demo_training, prepare_demo

    started = time.perf_counter()
    if want_model:
        settings = demo_training(plugin)
        _say(
            f"demo: sample data and a small model on CPU ({settings['folds']} folds x {settings['epochs']} epochs); "
            "reused when present"
        )
    data, run = prepare_demo(plugin, root, train_model=want_model, device="cpu")
    _say(f"demo: data {data}, model {run} ready in {time.perf_counter() - started:.0f} s")
    return data, run


@dataclass
class SampleCase:
    """A case to test-run: its image, its platform-style input folder, its ground truth if any."""

    case_id: str
    image: Path
    input_dir: Path
    case: Any
    has_truth: bool
    runs: list[dict[str, Any]] = field(default_factory=list)


def _sample_cases(plugin: Any, data: Path, work: Path, max_cases: int, interface: Interface) -> list[SampleCase]:
    """Up to ``max_cases`` cases of the test split (train split if it has none), laid out as /input."""
    from eyegc.common.container import layout_case

    cases = []
    for split in ("test", "train"):
        with contextlib.suppress(Exception):
            cases = plugin.list_cases(data, split, require_labels=False)
        if cases:
            break
    if not cases:
        raise SubmitError(f"no cases found in {data} (official layout expected)")
    chosen = []
    for case in cases[:max_cases]:
        input_dir = layout_case(plugin, case.image, work / case.case_id / "input", interface)
        chosen.append(SampleCase(case.case_id, Path(case.image), input_dir, case, case.labels is not None))
    return chosen


# -- wheelhouse and build -----------------------------------------------------------------------


def _project_requirements(wheel: Path, extras: Sequence[str] = ()) -> list[str]:
    """The project's runtime requirements (plus those of ``extras``), read from the built wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    requirements = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            spec = line.split(":", 1)[1].strip()
            if "extra ==" not in spec:
                requirements.append(spec)
            elif any(f'extra == "{e}"' in spec for e in extras):
                requirements.append(spec.split(";", 1)[0].strip())
    return requirements


def _wheelhouse(python: str, work: Path, refresh: bool, extras: Sequence[str] = ()) -> tuple[Path, Path, list[str]]:
    """Build the project wheel (always) and the pinned dependency wheels (cached by a stamp).

    ``extras`` adds optional dependencies a bundle needs (``paddle`` for a PaddlePaddle bundle).

    Returns:
        The project wheel, the dependency folder and the requirements written beside it.
    """
    project_dir = work / "wheelhouse" / "project"
    shutil.rmtree(project_dir, ignore_errors=True)
    project_dir.mkdir(parents=True)
    # A fixed timestamp makes the wheel byte-identical for unchanged code, so Docker's layer
    # cache keeps the project layer too.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    with tempfile.TemporaryDirectory(prefix="eyegc-wheel-") as build_tmp:
        # Build from a copy: setuptools writes build/ and *.egg-info into the source tree.
        source = Path(build_tmp) / "src"
        shutil.copytree(
            REPO,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "demo", "runs", "__pycache__", "*.egg-info", ".*cache"
            ),
        )
        _run(
            [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(project_dir), str(source)],
            "building the eyegc wheel",
            env=env,
        )
    wheel = next(project_dir.glob("eyegc-*.whl"))
    requirements = _project_requirements(wheel, extras)

    deps_dir = work / "wheelhouse" / "deps"
    constraints = REPO / "constraints.txt"
    key = hashlib.sha256(
        "\n".join([constraints.read_text(), *requirements, sys.version.split()[0], sys.platform]).encode()
    ).hexdigest()
    stamp = deps_dir / ".stamp"
    if not refresh and stamp.is_file() and stamp.read_text().strip() == key:
        _say(f"wheelhouse: cached {deps_dir} ({len(list(deps_dir.glob('*.whl')))} wheels)")
    else:
        started = time.perf_counter()
        tmp = deps_dir.with_name("deps.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        requirements_txt = tmp / "requirements.txt"
        requirements_txt.write_text("\n".join(requirements) + "\n")
        _run(
            [
                python,
                "-m",
                "pip",
                "wheel",
                "-q",
                "-w",
                str(tmp),
                "-c",
                str(constraints),
                "-r",
                str(tmp / "requirements.txt"),
            ],
            "pip wheel of the pinned dependencies",
        )
        (tmp / ".stamp").write_text(key + "\n")
        shutil.rmtree(deps_dir, ignore_errors=True)
        os.replace(tmp, deps_dir)
        _say(f"wheelhouse: {len(list(deps_dir.glob('*.whl')))} wheels in {time.perf_counter() - started:.0f} s")
    (deps_dir / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return wheel, deps_dir, requirements


def _link_tree(src: Path, dst: Path) -> None:
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


def _torch_requirements(deps_dir: Path, requirements: Sequence[str]) -> list[str]:
    """Every requirement on torch: the project's and those of the wheels in the wheelhouse (MONAI's)."""
    found = [r for r in requirements if re.match(r"torch\b", r)]
    for wheel in sorted(deps_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            metadata = archive.read(name).decode() if name else ""
        found += [
            f"{line.split(':', 1)[1].strip()} ({wheel.name.split('-')[0]})"
            for line in metadata.splitlines()
            if re.match(r"Requires-Dist:\s*torch\b(?!\w)", line) and "extra ==" not in line
        ]
    return found


def _base_torch_constraint(base_torch: str | None, deps_dir: Path, requirements: Sequence[str]) -> str:
    """The base-constraints.txt text: ``torch==<base's>`` when the base's torch meets every requirement.

    Raises:
        SubmitError: the base has a torch that some requirement excludes: pip would install a second
            torch (the wheelhouse's CPU build) that shadows the base's GPU one.
    """
    if base_torch is None:
        return ""
    version = Version(base_torch).public  # 2.8.0+cu128 -> 2.8.0
    unmet = [
        r
        for r in _torch_requirements(deps_dir, requirements)
        if Version(version) not in Requirement(r.split(" (")[0]).specifier
    ]
    if unmet:
        raise SubmitError(
            f"the base image's torch {base_torch} does not meet {', '.join(unmet)}: pip would add a second "
            f"torch beside it; use a base whose torch does, e.g. {' or '.join(GPU_BASE_EXAMPLES)}, or a base "
            "without torch for a CPU image"
        )
    return f"torch=={version}\n"


def _assemble_context(
    work: Path, wheel: Path, deps_dir: Path, bundles_dir: Path, sockets: Path, base_constraints: str
) -> Path:
    """``work/context``: Dockerfile, .dockerignore, wheelhouse/{deps,project}, bundles, sockets.json."""
    context = work / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheelhouse" / "project").mkdir(parents=True)
    shutil.copy2(REPO / "containers" / "Dockerfile", context / "Dockerfile")
    shutil.copy2(REPO / "containers" / ".dockerignore", context / ".dockerignore")
    _link_tree(deps_dir, context / "wheelhouse" / "deps")
    (context / "wheelhouse" / "deps" / ".stamp").unlink(missing_ok=True)
    (context / "wheelhouse" / "deps" / BASE_CONSTRAINTS).write_text(base_constraints)
    shutil.copy2(wheel, context / "wheelhouse" / "project" / wheel.name)
    _link_tree(bundles_dir, context / "bundles")
    shutil.copy2(sockets, context / "sockets.json")
    return context


def _docker_available() -> str | None:
    """None when an engine answers, else why not (one line)."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "`docker info` failed"
    return None


def _ensure_base_image(base: str) -> None:
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode == 0:
        return
    _say(f"base image {base} is not local; trying docker pull")
    if subprocess.run(["docker", "pull", base], capture_output=True, check=False).returncode == 0:
        return
    raise SubmitError(
        f"base image {base} is not present locally and cannot be pulled (no registry reachable): pass "
        "--base-image with a local image, e.g. make one with `containers/make_base_image.sh eyegc-base:bookworm` "
        "(debootstrap + docker import, see shared/docs/DOCKER.md) and use --base-image eyegc-base:bookworm"
    )


def _probe_base(base: str) -> dict[str, Any]:
    """The base image's Python version and torch, if any (runs it once, offline)."""
    code = (
        "import json,sys\ntry:\n import torch; t=[torch.__version__, torch.version.cuda]\nexcept Exception: t=None\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'torch': t}))"
    )
    proc = _run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", base, "-c", code],
        f"probing {base} (it needs python3)",
        timeout=300,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _docker_build(context: Path, tag: str, base: str, task: str, log: Path, api: str) -> float:
    started = time.perf_counter()
    cmd = ["docker", "build", "--platform=linux/amd64", "--build-arg", f"BASE_IMAGE={base}"]
    # The platform reads this label at import to run the image in exec or invoke mode; the image
    # itself reads EYEGC_API_METHOD, since the runner hides its own variables from it.
    cmd += ["--label", f"{API_METHOD_LABEL}={api}", "--build-arg", f"API_METHOD={api}"]
    # The socket mapping as an image label too, so the image says what it serves without running it.
    sockets = json.dumps(json.loads((context / "sockets.json").read_text()), separators=(",", ":"))
    cmd += ["--label", f"{SOCKETS_LABEL}={sockets}"]
    cmd += ["--build-arg", f"TASK={task}", "-t", tag, str(context)]
    _logged_build(cmd, log)
    return time.perf_counter() - started


def _logged_build(cmd: Sequence[str], log: Path) -> None:
    """Run ``docker build`` into ``log``; a failure is one error with the log's tail."""
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().strip().splitlines()[-20:])
        raise SubmitError(f"docker build failed (exit {proc.returncode}); full log {log}:\n{tail}")


# -- test runs ----------------------------------------------------------------------------------


def _cgroup_memory_files(container_id: str) -> list[Path]:
    """Where the engine keeps the container's peak memory (cgroup v1 or v2, either driver)."""
    roots = [
        Path(f"/sys/fs/cgroup/memory/docker/{container_id}"),
        Path(f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}.scope"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope"),
        Path(f"/sys/fs/cgroup/docker/{container_id}"),
    ]
    names = ("memory.max_usage_in_bytes", "memory.peak", "memory.current", "memory.usage_in_bytes")
    return [root / name for root in roots for name in names if (root / name).is_file()]


_SIZE_UNITS = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}


def _docker_stats_bytes(container_id: str) -> int | None:
    proc = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container_id],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.match(r"\s*([\d.]+)\s*([A-Za-z]+)", proc.stdout)
    if proc.returncode != 0 or not match:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS.get(match.group(2).lower(), 1))


class _PeakMemory(threading.Thread):
    """Polls a running container's cgroup (``docker stats`` when the cgroup is not readable)."""

    def __init__(self, container_id: str) -> None:
        super().__init__(daemon=True)
        self.container_id = container_id
        self.peak = 0
        self.source = "none"
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            files = _cgroup_memory_files(self.container_id)
            values = []
            for path in files:
                with contextlib.suppress(OSError, ValueError):
                    values.append(int(path.read_text().split()[0]))
            if values:
                self.peak, self.source = max(self.peak, *values), "cgroup"
            elif self.source != "cgroup":
                value = _docker_stats_bytes(self.container_id)
                if value is not None:
                    self.peak, self.source = max(self.peak, value), "docker stats"
            self.stop.wait(0.1)


def _platform_run_options(memory: str, gpus: bool) -> list[str]:
    """``docker run`` options of a platform-like run: no network, memory cap without swap, no capabilities."""
    cmd = ["--network", "none", "--memory", memory, "--memory-swap", memory]
    cmd += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--pids-limit", "256"]
    cmd += ["--read-only", "--tmpfs", "/tmp:rw,exec,nosuid,nodev", "--shm-size", "128m"]
    return [*cmd, "--gpus", "all"] if gpus else cmd


def _empty_model_dir(root: Path) -> Path:
    """An empty folder to mount at /opt/ml/model, as the platform does when no model was uploaded."""
    folder = root / "empty-opt-ml-model"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _host_has_gpu() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU here (the default of --gpus)."""
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU" in listed.stdout


def _check_host_architecture(machine: str) -> None:
    """The platform runs linux/amd64 images: refuse to build one on another architecture without emulation."""
    if machine.lower() in ("x86_64", "amd64"):
        return
    raise SubmitError(
        f"this host is {machine}; grand-challenge.org runs linux/amd64 images: build on an amd64 machine "
        "(an arm64 image would not start there, and emulating amd64 needs QEMU binfmt set up for Docker)"
    )


def _fresh_output(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    out.chmod(0o777)  # the image's non-root user writes here


def _docker_run_case(
    tag: str, case: SampleCase, out: Path, memory: str, gpus: bool, model_dir: Path | None = None
) -> dict[str, Any]:
    """One platform-like exec-mode run: one container per case, read-only root, /input read-only."""
    _fresh_output(out)
    cmd = ["docker", "run", "-d", *_platform_run_options(memory, gpus), "-e", "EYEGC_API_METHOD=exec"]
    cmd += ["-v", f"{case.input_dir.resolve()}:/input:ro", "-v", f"{out.resolve()}:/output"]
    # The platform always mounts /opt/ml/model: empty unless a model.tar.gz was uploaded.
    model_dir = model_dir or _empty_model_dir(out.parent)
    cmd += ["-v", f"{model_dir.resolve()}:/opt/ml/model:ro"]
    started_unix = time.time()
    started = time.perf_counter()
    container_id = _run([*cmd, tag], "docker run").stdout.strip()
    monitor = _PeakMemory(container_id)
    monitor.start()
    try:
        waited = _run(["docker", "wait", container_id], "docker wait")
        elapsed = time.perf_counter() - started
        monitor.stop.set()
        monitor.join()
        exit_code = int(waited.stdout.strip() or 1)
        logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True, check=False)
        state = json.loads(_run(["docker", "inspect", "-f", "{{json .State}}", container_id], "inspect").stdout)
    finally:
        monitor.stop.set()
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)
    log_text = logs.stdout + logs.stderr
    if exit_code != 0:
        why = " (killed: out of memory)" if state.get("OOMKilled") else ""
        tail = "\n".join(log_text.strip().splitlines()[-10:])
        raise SubmitError(f"the container exited {exit_code}{why} on case {case.case_id}:\n{tail}")
    summary = _summary_from_log(log_text)
    done = summary.get("unix_time_done")
    return {
        "seconds": round(elapsed, 2),
        "start_to_prediction_s": round(done - started_unix, 2) if done else None,
        "peak_memory_bytes": monitor.peak or None,
        "peak_memory_source": monitor.source,
        "container": summary,
        "log": log_text,
    }


#: Run inside the container with ``docker exec`` (it has no network, but loopback works): the calls
#: the platform's runner makes in invoke mode. Prints the status code.
_HTTP_CALL = (
    "import sys, urllib.request as u\n"
    "r = u.Request('http://127.0.0.1:%d/' + sys.argv[1], data=b'' if sys.argv[1] == 'invoke' else None)\n"
    "try:\n print(u.urlopen(r, timeout=3600).status)\n"
    "except Exception as e:\n print(getattr(e, 'code', 0)); print(e, file=sys.stderr)\n"
)


def _replace_contents(folder: Path, source: Path) -> None:
    """Empty ``folder`` (kept: it is bind-mounted) and copy ``source``'s contents in, as the runner stages a case."""
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    shutil.copytree(source, folder, dirs_exist_ok=True)


def _container_running(container_id: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", container_id], capture_output=True, text=True, check=False
    )
    return state.stdout.strip() == "true"


def _container_call(container_id: str, endpoint: str, port: int) -> int:
    proc = subprocess.run(
        ["docker", "exec", container_id, "python", "-c", _HTTP_CALL % port, endpoint],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _docker_invoke_cases(
    tag: str, cases: Sequence[SampleCase], root: Path, memory: str, gpus: bool, check: Any
) -> list[float]:
    """Invoke mode as the runner does it: one container loads the bundles, waits for GET /health,
    then serves each case with POST /invoke while /input and /output are refilled around it.

    ``check(case, out)`` checks each case's outputs. Returns the seconds of each POST /invoke.
    """
    staged, out = root / "invoke-input", root / "invoke-output"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    _fresh_output(out)
    cmd = ["docker", "run", "-d", *_platform_run_options(memory, gpus), "-e", "EYEGC_API_METHOD=invoke"]
    cmd += ["-v", f"{staged.resolve()}:/input:ro", "-v", f"{out.resolve()}:/output"]
    cmd += ["-v", f"{_empty_model_dir(root).resolve()}:/opt/ml/model:ro", tag]
    container_id = _run(cmd, "docker run (invoke mode)").stdout.strip()
    try:
        deadline = time.monotonic() + 300  # the runner's default start-and-health limit
        while _container_call(container_id, "health", DEFAULT_PORT) != 200:
            if time.monotonic() > deadline:
                raise SubmitError("invoke mode: GET /health did not answer 200 within 300 s")
            if not _container_running(container_id):
                raise SubmitError("invoke mode: the container exited before GET /health answered")
            time.sleep(1)
        seconds = []
        for case in cases:
            _replace_contents(staged, case.input_dir)
            # Emptied from inside: the container's user owns what it wrote there, not this host's user.
            _run(["docker", "exec", container_id, "find", "/output", "-mindepth", "1", "-delete"], "emptying /output")
            started = time.perf_counter()
            status = _container_call(container_id, "invoke", DEFAULT_PORT)
            seconds.append(round(time.perf_counter() - started, 2))
            if status != 201:
                raise SubmitError(f"invoke mode: POST /invoke answered {status} for case {case.case_id}, not 201")
            check(case, out)
        return seconds
    except SubmitError as error:
        logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True, check=False)
        tail = "\n".join((logs.stdout + logs.stderr).strip().splitlines()[-10:])
        raise SubmitError(f"{error}; container log:\n{tail}") from None
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, check=False)


def _shim_wheelhouse(python: str, work: Path, refresh: bool) -> Path:
    """Wheels of sagemaker-shim and its dependencies, pinned by constraints.txt (cached by a stamp)."""
    folder = work / "wheelhouse" / "shim"
    constraints = REPO / "constraints.txt"
    key = hashlib.sha256("\n".join([constraints.read_text(), sys.version.split()[0]]).encode()).hexdigest()
    stamp = folder / ".stamp"
    if not refresh and stamp.is_file() and stamp.read_text().strip() == key:
        return folder
    tmp = folder.with_name("shim.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "requirements.txt").write_text("sagemaker-shim\n")
    cmd = [python, "-m", "pip", "download", "-q", "--only-binary=:all:", "--ignore-requires-python", "-d", str(tmp)]
    _run([*cmd, "-c", str(constraints), "-r", str(tmp / "requirements.txt")], "pip download of sagemaker-shim")
    (tmp / ".stamp").write_text(key + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _build_shim_image(tag: str, work: Path, refresh: bool) -> str:
    """``tag`` wrapped by sagemaker-shim as the platform wraps an uploaded image (containers/shim.Dockerfile)."""
    from eyegc.common.platform_runner import shim_environment

    context = work / "shim-context"
    shutil.rmtree(context, ignore_errors=True)
    _link_tree(_shim_wheelhouse(sys.executable, work, refresh), context / "wheels")
    (context / "wheels" / ".stamp").unlink(missing_ok=True)
    shutil.copy2(REPO / "containers" / "shim.Dockerfile", context / "Dockerfile")
    config = json.loads(_run(["docker", "image", "inspect", "-f", "{{json .Config}}", tag], "inspect").stdout)
    env = shim_environment(config)
    shim_tag = f"{tag}-sagemaker-shim"
    cmd = ["docker", "build", "--platform=linux/amd64", "--build-arg", f"IMAGE={tag}", "-t", shim_tag]
    cmd += ["--build-arg", f"ENTRYPOINT_B64J={env['GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J']}"]
    cmd += ["--build-arg", f"CMD_B64J={env['GRAND_CHALLENGE_COMPONENT_CMD_B64J']}"]
    cmd += ["--build-arg", f"COMPONENT_USER={env['GRAND_CHALLENGE_COMPONENT_USER']}", str(context)]
    _logged_build(cmd, work / "docker-build-shim.log")
    return shim_tag


def _shim_extracts_tarballs(shim_tag: str) -> bool:
    """Whether the shim, on the image's Python, can extract a model tarball: it calls
    ``extractall(filter="data")``, which Python has from 3.11.4 (Debian bookworm's 3.11.2 lacks it)."""
    probe = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/opt/sagemaker-shim/bin/python", shim_tag]
    code = "import tarfile; print(hasattr(tarfile, 'data_filter'))"
    return _run([*probe, "-c", code], "probing the shim's Python").stdout.strip() == "True"


def _shim_job_seconds(duration: str | None) -> float | None:
    """The shim's exec/invoke duration (an ISO 8601 duration such as ``PT7.25S``) in seconds."""
    from pydantic import TypeAdapter

    return None if duration is None else round(TypeAdapter(timedelta).validate_python(duration).total_seconds(), 2)


def _shim_mode_run(
    run: TestRun, shim_tag: str, s3: Any, mode: str, cases: Sequence[SampleCase], model_uri: str | None
) -> tuple[list[dict[str, Any]], str]:
    """One ``sagemaker-shim invoke`` of every case in ``mode``; returns each job's result and the log."""
    from eyegc.common.platform_runner import (
        RunnerError,
        check_runtime_setup,
        collect_outputs,
        shim_tasks_json,
        stage_case,
    )

    tasks = [stage_case(s3, f"{mode}-{i}", case.input_dir) for i, case in enumerate(cases)]
    env = {**s3.env(mode), "GRAND_CHALLENGE_COMPONENT_API_METHOD": mode, "EYEGC_API_METHOD": mode}
    if model_uri:
        env["GRAND_CHALLENGE_COMPONENT_MODEL"] = model_uri  # the shim extracts it into /opt/ml/model
    memory = run.args.memory
    # The shim needs the network (S3; here moto on this host's 127.0.0.1) and root (it drops to USER).
    cmd = ["docker", "run", "--rm", "--network", "host", "--memory", memory, "--memory-swap", memory]
    cmd += ["--shm-size", "128m", *(["--gpus", "all"] if run.args.gpus else [])]
    cmd += [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
    cmd += [shim_tag, "invoke", "--tasks", shim_tasks_json(tasks)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=SHIM_RUN_TIMEOUT_S)
    log = done.stdout + done.stderr
    log_path = run.root / f"sagemaker-shim-{mode}.log"
    log_path.write_text(log)
    try:
        if done.returncode != 0:
            raise RunnerError(f"sagemaker-shim exited {done.returncode} in {mode} mode")
        check_runtime_setup(s3, mode)
        results = []
        for task, case in zip(tasks, cases, strict=True):
            results.append(collect_outputs(s3, task, run.root / f"shim-{mode}" / case.case_id))
    except RunnerError as error:
        tail = "\n".join(log.strip().splitlines()[-10:])
        raise SubmitError(f"{error}\nrunner log {log_path}, last lines:\n{tail}") from None
    return results, log


def _shim_runs(
    run: TestRun,
    cases: Sequence[SampleCase],
    reference: Sequence[Reference],
    rows: list[dict[str, Any]],
    exact: bool,
    work: Path,
) -> None:
    """Every case through the platform's runner inside the image, from a local S3, in exec and in invoke
    mode (the latter with the model tarball from S3 in /opt/ml/model); job times added to ``rows``."""
    from eyegc.common.platform_runner import LocalS3

    _step("test run by the platform's runner (sagemaker-shim, local S3)")
    started = time.perf_counter()
    shim_tag = _build_shim_image(run.tag, work, run.args.refresh_wheelhouse)
    with_model = _shim_extracts_tarballs(shim_tag)
    if not with_model:
        _say(
            "the image's Python lacks tarfile filters (3.11.4+), which the shim uses to extract model.tar.gz: "
            "invoke mode runs with the baked bundles here (the platform's shim brings its own Python)"
        )
    model_tar = run.root / "model-for-shim.tar.gz"
    _tar_model(work / "bundles", model_tar)
    with LocalS3() as s3:
        model_uri = s3.upload_file(model_tar, "models/model.tar.gz") if with_model else None
        for mode in ("exec", "invoke"):
            results, log = _shim_mode_run(run, shim_tag, s3, mode, cases, model_uri if mode == "invoke" else None)
            if mode == "invoke" and model_uri and "/opt/ml/model" not in log:
                raise SubmitError("under sagemaker-shim the model.tar.gz in /opt/ml/model was not used")
            for case, ref, row, result in zip(cases, reference, rows, results, strict=True):
                values = _check_outputs(run.plugin, case, run.root / f"shim-{mode}" / case.case_id, run.interface)
                _compare(run.plugin, case, values, ref, exact, run.interface)
                row[f"shim_{mode}_seconds"] = _shim_job_seconds(result.get(f"{mode}_duration"))
    version = results[0].get("sagemaker_shim_version", "?")
    per_job = {m: [r[f"shim_{m}_seconds"] for r in rows] for m in ("exec", "invoke")}
    model = " with model.tar.gz from S3" if with_model else ""
    _say(
        f"sagemaker-shim {version}: {len(cases)} job(s) from S3 in exec mode ({_mean(per_job['exec']):.2f} s/job) "
        f"and in invoke mode{model} ({_mean(per_job['invoke']):.2f} s/job warm); outputs in the bucket "
        f"equal eyegc predict ({time.perf_counter() - started:.0f} s in all)"
    )


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / max(len(known), 1)


def _summary_from_log(log_text: str) -> dict[str, Any]:
    for line in reversed(log_text.splitlines()):
        if "eyegc-container: summary " in line:
            return json.loads(line.split("eyegc-container: summary ", 1)[1])
    return {}


@dataclass
class Reference:
    """``eyegc predict``'s result for one case: final prediction and, where the task has them, probabilities."""

    prediction: np.ndarray
    probabilities: np.ndarray | None


def _check_outputs(plugin: Any, case: SampleCase, out: Path, interface: Interface) -> dict[str, Any]:
    """Exactly one file per output socket, images of the input's size and of their kind's values."""
    from eyegc.common.container import read_output_values

    try:
        values = read_output_values(plugin, out, interface.outputs)
    except DataError as exc:
        raise SubmitError(f"case {case.case_id}: {exc}") from None
    shape = plugin.read_image(case.image).shape[-2:]
    for socket in interface.outputs:
        value = values[socket.slug]
        if socket.super_kind != "Image":
            continue
        want = np.float32 if socket.content == "probability" else np.uint8
        if value.shape != shape or value.dtype != want:
            where = out / socket.relative_path
            raise SubmitError(f"{where}: {value.dtype} {value.shape}; expected {want.__name__} {shape}")
        allowed = {0, 1} if socket.content == "mask" else None
        if socket.content == "label_map":
            allowed = set(label_map_values(plugin, socket))
        if allowed is not None and not set(np.unique(value).tolist()) <= allowed:
            raise SubmitError(
                f"{out / socket.relative_path}: values {np.unique(value)[:8]}; expected {sorted(allowed)}"
            )
    return values


def _reference_predictions(
    plugin: Any, python: str, bundles: Sequence[Path], cases: Sequence[SampleCase], work: Path, tta: str
) -> list[Reference]:
    """``eyegc predict`` outside the container (CPU) on the cases' original images."""
    from eyegc.common.imageio import split_image_suffix

    images = work / "reference-images"
    pred = work / "reference-predictions"
    for path in (images, pred):
        shutil.rmtree(path, ignore_errors=True)
    images.mkdir(parents=True)
    for case in cases:
        suffix = split_image_suffix(case.image.name)[1]
        (images / f"{case.case_id}{suffix}").symlink_to(case.image.resolve())
    cmd = [python, "-m", "eyegc.common.cli", "predict", plugin.name, "--model", *map(str, bundles)]
    cmd += ["--images", str(images), "--out", str(pred), "--tta", tta, "--device", "cpu"]
    started = time.perf_counter()
    _run(cmd, "eyegc predict (the reference outside the container)")
    _say(f"reference: eyegc predict on {len(cases)} case(s) in {time.perf_counter() - started:.1f} s")
    ids = [c.case_id for c in cases]
    predictions = plugin.read_predictions(pred, ids)
    probabilities = plugin.read_probabilities(pred, ids)
    return [
        Reference(np.asarray(predictions[i]), None if probabilities is None else _as_unit(probabilities[i]))
        for i in range(len(ids))
    ]


def _as_unit(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1]; 8-bit maps (IDRiD keeps its predictions that way) are divided by 255."""
    array = np.asarray(probabilities)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / 255.0
    return array


def _compare(
    plugin: Any, case: SampleCase, values: dict[str, Any], reference: Reference, exact: bool, interface: Interface
) -> dict[str, Any]:
    """Each output socket against ``eyegc predict``: masks and grades equal, probabilities to the stored 8 bits."""
    from eyegc.common.container import output_values

    probabilities = reference.probabilities
    if probabilities is None:
        probabilities = np.zeros((len(plugin.classes), 2), dtype=np.float32)  # only mask-like sockets then
    expected = output_values(plugin, reference.prediction, probabilities, interface.outputs)
    differing, total = 0, 0
    for socket, want in expected.items():
        got = values[socket.slug]
        if socket.content == "probability":
            if reference.probabilities is None:
                raise SubmitError(f"{plugin.name}: `eyegc predict` wrote no probabilities to compare {socket.slug}")
            # The prediction folder keeps probabilities in 8 bits: compare at that precision.
            levels = np.abs(np.round(got * 255).astype(np.int16) - np.round(want * 255).astype(np.int16))
            differing += int(np.count_nonzero(levels > 1))
            total += levels.size
        elif socket.content == "likelihood":
            differing += int(abs(float(got) - float(want)) > (1 / 255 if exact else 0.02))
            total += 1
        else:
            differing += int(np.count_nonzero(np.asarray(got) != np.asarray(want)))
            total += int(np.asarray(want).size)
    share = differing / max(total, 1)
    ok = differing == 0 or (not exact and share <= TOLERANCE)
    if not ok:
        raise SubmitError(
            f"case {case.case_id}: the container's outputs differ from `eyegc predict` in {differing} of {total} "
            f"values ({share:.4%}); they must be equal"
        )
    return {"equal_to_eyegc_predict": differing == 0, "differing_pixels": differing}


# -- export -------------------------------------------------------------------------------------


def _save_image(tag: str, target: Path) -> float:
    """``docker save TAG | gzip -1 > target`` (written beside, then renamed)."""
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as handle:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", "-1"], stdin=save.stdout, stdout=handle)
        assert save.stdout is not None
        save.stdout.close()  # gzip owns the pipe now: docker save sees SIGPIPE if gzip dies
        gzip_rc, save_rc = gzip.wait(), save.wait()
    if save_rc or gzip_rc:
        partial.unlink(missing_ok=True)
        raise SubmitError(f"docker save | gzip failed (exit {save_rc}/{gzip_rc})")
    os.replace(partial, target)
    return time.perf_counter() - started


def _tar_model(bundles_dir: Path, target: Path) -> None:
    """``tar -czf target -C bundles .``: extracts to /opt/ml/model/NN-name/bundle.json, ..."""
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for path in sorted(bundles_dir.rglob("*")):
            archive.add(path, arcname=f"./{path.relative_to(bundles_dir)}", recursive=False)
    os.replace(partial, target)


def _artifact(path: Path) -> dict[str, Any]:
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


# -- main ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The options of ``submit.sh``."""
    parser = argparse.ArgumentParser(
        prog="submit.sh", description="Build, test-run and export a grand-challenge.org algorithm container."
    )
    parser.add_argument("task", help="task name, e.g. drac22-task1")
    parser.add_argument("--model", type=Path, nargs="+", help="one or more trained bundles (run folders)")
    parser.add_argument("--data", type=Path, help="data root in the official layout for the sample cases")
    parser.add_argument("--max-cases", type=int, default=5, help="sample cases to test-run (default 5)")
    parser.add_argument("--base-image", default=DEFAULT_BASE_IMAGE, help=f"default {DEFAULT_BASE_IMAGE}")
    parser.add_argument("--tag", help="image tag (default eyegc-TASK)")
    parser.add_argument(
        "--gpus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-run with --gpus all (CUDA + AMP in the container); default: when this host has an NVIDIA GPU",
    )
    parser.add_argument("--memory", default="8g", help="test-run memory cap, also the swap cap (default 8g)")
    parser.add_argument("--tta", default="flip", help="TTA of the reference `eyegc predict` (the image's default)")
    parser.add_argument("--no-test", action="store_true", help="build and export without test runs")
    parser.add_argument(
        "--shim",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also test-run every case through the platform's runner, sagemaker-shim, from a local S3, in exec "
        "and invoke mode (default; --no-shim skips it)",
    )
    parser.add_argument("--no-docker", action="store_true", help="no image: run the entrypoint in-process only")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="artifact folder (default dist/)")
    parser.add_argument("--demo", action="store_true", help="make sample data and train a small model first")
    parser.add_argument("--work", type=Path, default=WORK, help="work folder (default build/container, gitignored)")
    parser.add_argument("--refresh-wheelhouse", action="store_true", help="rebuild the cached dependency wheels")
    parser.add_argument(
        "--sockets",
        type=Path,
        help="map the inputs and outputs to the platform's sockets (a JSON file; see --print-sockets)",
    )
    parser.add_argument(
        "--print-sockets", action="store_true", help="print the task's socket mapping (a starting --sockets file)"
    )
    parser.add_argument(
        "--api",
        choices=("exec", "invoke"),
        default="exec",
        help="how the platform runs the image: exec (default, a process per case) or invoke (one server, "
        "bundles loaded once); both modes are test-run either way",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run every step; a failed step prints one line (plus a log tail) and returns 1; Ctrl-C returns 130."""
    args = build_parser().parse_args(argv)
    try:
        return _submit(args)
    except SubmitError as exc:
        print(f"submit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsubmit: interrupted; artefacts in --out appear only when complete", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        print(f"submit: error: {message}", file=sys.stderr)
        return 1


@dataclass
class TestRun:
    """What the test runs of one ``submit.sh`` call share: the task, the image and the folder."""

    plugin: Any
    interfaces: tuple[Interface, ...]
    tag: str
    root: Path
    args: argparse.Namespace
    use_docker: bool
    image: dict[str, Any]

    @property
    def interface(self) -> Interface:
        """The socket set the sample cases are laid out for (the first)."""
        return self.interfaces[0]


def _build_image(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    staged: Sequence[StagedBundle],
    work: Path,
    tag: str,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Wheelhouse, context and ``docker build``; checks the image's torch and labels. Returns its manifest entry."""
    _check_host_architecture(os.uname().machine)
    _step(f"image {tag} from {args.base_image}")
    _ensure_base_image(args.base_image)
    base = _probe_base(args.base_image)
    host_python = "{}.{}".format(*sys.version_info[:2])
    if base["python"] != host_python:
        raise SubmitError(
            f"{args.base_image} has Python {base['python']}; the wheelhouse is built for this machine's "
            f"Python {host_python}: use a base image with Python {host_python}"
        )
    started = time.perf_counter()
    backends = {json.loads((b.path / "bundle.json").read_text()).get("backend", "torch") for b in staged}
    extras = ["paddle"] if "paddle" in backends else []
    if extras:
        _say("a bundle uses the paddle backend: the image gets the paddle extra (paddlepaddle, CPU build)")
    wheel, deps_dir, requirements = _wheelhouse(sys.executable, work, args.refresh_wheelhouse, extras)
    timings["wheelhouse"] = round(time.perf_counter() - started, 1)
    base_torch = base["torch"][0] if base["torch"] else None
    base_constraints = _base_torch_constraint(base_torch, deps_dir, requirements)
    if base_torch:
        _say(f"base image provides torch {base_torch} (CUDA {base['torch'][1]}): it is the image's only torch")
    sockets_file = work / "sockets.json"
    sockets_file.write_text(json.dumps(interfaces_json(plugin, interfaces), indent=2) + "\n")
    context = _assemble_context(work, wheel, deps_dir, work / "bundles", sockets_file, base_constraints)
    build_log = work / "docker-build.log"
    timings["build"] = round(_docker_build(context, tag, args.base_image, plugin.name, build_log, args.api), 1)
    inspect = json.loads(_run(["docker", "image", "inspect", tag], "docker image inspect").stdout)[0]
    code = "import torch, eyegc.common.bundle as b; print(torch.__version__, b.eyegc_version(), torch.__file__)"
    probe = _run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", code],
        "checking the image's python",
    ).stdout.split()
    if base_torch and probe[2].startswith("/opt/venv/"):
        raise SubmitError(f"the image imports torch from {probe[2]}, not the base image's torch {base_torch}")
    labels = inspect.get("Config", {}).get("Labels") or {}
    if labels.get(API_METHOD_LABEL) != args.api or SOCKETS_LABEL not in labels:
        raise SubmitError(f"the built image lacks its labels {API_METHOD_LABEL}={args.api} and {SOCKETS_LABEL}")
    _say(
        f"built {tag} ({inspect['Id'][7:19]}, {inspect['Size'] / 1e9:.2f} GB, torch {probe[0]}, "
        f"eyegc {probe[1]}) in {timings['build']:.0f} s (build log {build_log})"
    )
    return {
        "tag": tag,
        "id": inspect["Id"],
        "api_method": args.api,
        "size_bytes": inspect["Size"],
        "base_image": args.base_image,
        "torch": probe[0],
        "eyegc_version": probe[1],
    }


def _say_case(row: dict[str, Any]) -> None:
    if row["peak_memory_bytes"]:
        memory = f"peak memory {row['peak_memory_bytes'] / 2**20:.0f} MiB (container)"
    else:
        memory = f"peak RSS {row['peak_rss_mib']:.0f} MiB (this process)"
    start = row["start_to_prediction_s"]
    timing = f" (container start to prediction {start:.1f} s)" if start is not None else ""
    equal = "equal to eyegc predict"
    if not row["equal_to_eyegc_predict"]:
        equal = f"{row['differing_pixels']} px differ from eyegc predict (within tolerance)"
    _say(f"case {row['case']}: ok in {row['seconds']:.1f} s{timing}, {memory}, {row['device']}, {equal}")


def _exec_runs(
    run: TestRun, cases: Sequence[SampleCase], reference: Sequence[Reference], bundles: Sequence[Path], exact: bool
) -> list[dict[str, Any]]:
    """Exec mode: a container per case (or the entrypoint in-process without Docker), each checked."""
    from eyegc.common.container import run_case

    args, plugin = run.args, run.plugin
    predictor = None
    if not run.use_docker:
        from eyegc.common.bundle import load_bundle
        from eyegc.common.inference import Predictor

        predictor = Predictor(plugin, [load_bundle(p, task=plugin.name) for p in bundles], args.tta, "cpu")
    rows = []
    for case, ref in zip(cases, reference, strict=True):
        out = run.root / case.case_id / "output"
        if run.use_docker:
            result = _docker_run_case(run.tag, case, out, args.memory, args.gpus)
        else:
            started = time.perf_counter()
            summary = run_case(plugin, predictor, case.input_dir, out, run.interfaces)
            summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            result = {"seconds": round(time.perf_counter() - started, 2), "container": summary}
        values = _check_outputs(plugin, case, out, run.interface)
        row = {
            "case": case.case_id,
            "seconds": result["seconds"],
            "start_to_prediction_s": result.get("start_to_prediction_s"),
            "peak_memory_bytes": result.get("peak_memory_bytes"),
            "peak_rss_mib": result["container"].get("peak_rss_mib"),
            "device": result["container"].get("device"),
            **_compare(plugin, case, values, ref, exact, run.interface),
        }
        rows.append(row)
        _say_case(row)
    return rows


def _invoke_and_model_dir_runs(
    run: TestRun,
    cases: Sequence[SampleCase],
    reference: Sequence[Reference],
    rows: list[dict[str, Any]],
    exact: bool,
    work: Path,
) -> None:
    """Invoke mode on every case (its times added to ``rows``), then one run with /opt/ml/model mounted."""
    args, plugin = run.args, run.plugin

    def check(case: SampleCase, out: Path) -> None:
        values = _check_outputs(plugin, case, out, run.interface)
        _compare(plugin, case, values, reference[cases.index(case)], exact, run.interface)

    invoke_seconds = _docker_invoke_cases(run.tag, cases, run.root, args.memory, args.gpus, check)
    for row, seconds in zip(rows, invoke_seconds, strict=True):
        row["invoke_seconds"] = seconds
    exec_mean = sum(r["seconds"] for r in rows) / len(rows)
    warm = sum(invoke_seconds) / len(invoke_seconds)
    _say(
        f"invoke mode: one container served {len(cases)} case(s), {warm:.2f} s/case warm against "
        f"{exec_mean:.2f} s/case in exec mode (a container per case); outputs equal"
    )
    # The uploaded model.tar.gz lands in /opt/ml/model and must win over the baked bundles.
    model_dir = run.root / "opt-ml-model"
    tar_probe = run.root / "model-probe.tar.gz"
    _tar_model(work / "bundles", tar_probe)
    with tarfile.open(tar_probe) as archive:
        archive.extractall(model_dir, filter="data")  # our own archive; the filter refuses odd paths
    out = run.root / "model-dir-output"
    result = _docker_run_case(run.tag, cases[0], out, args.memory, args.gpus, model_dir)
    if "/opt/ml/model" not in result["log"]:
        raise SubmitError("with /opt/ml/model mounted the container did not load its bundles from there")
    _compare(plugin, cases[0], _check_outputs(plugin, cases[0], out, run.interface), reference[0], exact, run.interface)
    _say("model.tar.gz layout: /opt/ml/model is used ahead of the baked bundles, same outputs")


def _container_scores(plugin: Any, cases: Sequence[SampleCase], reference: Sequence[Reference]) -> dict | None:
    """The local leaderboard of the cases with ground truth (the container's outputs equal the reference)."""
    from eyegc.common.evaluation import format_leaderboard

    with_truth = [(c, r) for c, r in zip(cases, reference, strict=True) if c.has_truth]
    if not with_truth:
        return None
    probabilities = [r.probabilities for _, r in with_truth]
    result = plugin.metric(
        plugin.name,
        [r.prediction for _, r in with_truth],
        [plugin.read_target(c.case) for c, _ in with_truth],
        [c.case_id for c, _ in with_truth],
        probabilities=None if any(p is None for p in probabilities) else probabilities,
        rois=[plugin.read_roi(c.case) for c, _ in with_truth],
    )
    _say("\n" + format_leaderboard(result).replace("Local leaderboard", "Local leaderboard of the container"))
    return result.to_json_dict()


def _test_runs(
    run: TestRun, staged: Sequence[StagedBundle], data: Path, work: Path
) -> tuple[list[dict[str, Any]], dict | None]:
    """Every test run of the platform's kind; returns the per-case rows and the container's local scores."""
    import torch

    _step("test runs, the platform's way")
    for old in work.glob("test-*"):
        shutil.rmtree(old, ignore_errors=True)  # files the container wrote may not be ours to delete
    cases = _sample_cases(run.plugin, data, run.root, run.args.max_cases, run.interface)
    bundles = [b.path for b in staged]
    reference = _reference_predictions(run.plugin, sys.executable, bundles, cases, run.root, run.args.tta)
    exact = not (run.use_docker and (run.args.gpus or run.image.get("torch") != torch.__version__))
    rows = _exec_runs(run, cases, reference, bundles, exact)
    if run.use_docker:
        _invoke_and_model_dir_runs(run, cases, reference, rows, exact, work)
        if run.args.shim:
            _shim_runs(run, cases, reference, rows, exact, work)
        else:
            _say("the test run by the platform's runner (sagemaker-shim) was skipped (--no-shim)")
    return rows, _container_scores(run.plugin, cases, reference)


def _export(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    staged: Sequence[StagedBundle],
    image: dict[str, Any],
    test_rows: list[dict[str, Any]],
    scores: dict | None,
    work: Path,
    tag: str,
    stamp: str,
    timings: dict[str, float],
    total_started: float,
) -> dict[str, Any]:
    """The image (when one was built) and model tarballs and the manifest in ``--out``; returns the artifacts."""
    from eyegc.common.bundle import eyegc_version

    use_docker = bool(image)

    _step("artifacts")
    name = _safe_name(tag)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Any] = {}
    if use_docker:
        image_tar = out_dir / f"{name}-{stamp}.tar.gz"
        timings["save"] = round(_save_image(tag, image_tar), 1)
        artifacts["image"] = _artifact(image_tar)
        _say(f"{image_tar} ({image_tar.stat().st_size / 1e6:.0f} MB) in {timings['save']:.0f} s")
    model_tar = out_dir / f"{name}-model.tar.gz"
    _tar_model(work / "bundles", model_tar)
    artifacts["model"] = _artifact(model_tar)
    _say(f"{model_tar} ({model_tar.stat().st_size / 1e6:.1f} MB)")
    timings["total"] = round(time.perf_counter() - total_started, 1)
    bundles = [
        {"name": b.path.name, "source": str(b.source), "folds": b.folds, "network": b.network, "checksums": b.checksums}
        for b in staged
    ]
    manifest = {
        "task": plugin.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "eyegc_version": eyegc_version(),
        "image": image or None,
        "artifacts": artifacts,
        "bundles": bundles,
        "sockets": interfaces_json(plugin, interfaces),
        "test_run": {
            "mode": "docker" if use_docker else "in-process",
            "memory": args.memory,
            "gpus": args.gpus,
            "cases": test_rows,
        },
        "local_scores": scores,
        "seconds": timings,
    }
    manifest_path = out_dir / f"{name}-manifest.json"
    partial = manifest_path.with_name(manifest_path.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, manifest_path)
    _say(f"{manifest_path} (sha256 {sha256_file(manifest_path)[:16]}…)")
    return artifacts


def _print_upload_steps(
    args: argparse.Namespace,
    plugin: Any,
    interfaces: Sequence[Interface],
    use_docker: bool,
    artifacts: dict[str, Any],
    test_root: Path,
    timings: dict[str, float],
) -> None:
    _step("upload to grand-challenge.org")
    sets = "; or ".join(
        "inputs: "
        + ", ".join(f"{s.slug} ({s.relative_path}, {s.kind})" for s in i.inputs)
        + " → outputs: "
        + ", ".join(f"{s.slug} ({s.relative_path}, {s.kind})" for s in i.outputs)
        for i in interfaces
    )
    if use_docker:
        _say(
            f"1. Your algorithm → Containers → Upload a container image: {artifacts['image']['path']}\n"
            f"   (settings: GPU {'T4 or better' if args.gpus else 'none is needed (CPU works; a T4 is faster)'}, "
            f"memory ≥ {args.memory}; wait until the image is 'Ready' and set it active)"
        )
    else:
        _say(
            "1. Build the image on a machine with Docker: ./submit.sh " + plugin.name + " --model ... --base-image ..."
        )
    _say(
        f"2. Optional: Models → Upload a model: {artifacts['model']['path']} — extracted to /opt/ml/model, it takes "
        "precedence\n   over the bundles baked into the image (swap weights without re-uploading the image)\n"
        f"3. The algorithm's sockets must be — {sets}\n"
        f"4. Try it on one case ('Try-out algorithm') and compare with this run's outputs under {test_root}\n"
        f"total {timings['total']:.0f} s"
    )


def _submit(args: argparse.Namespace) -> int:
    from eyegc.common.bundle import eyegc_version
    from eyegc.common.registry import get_task

    total_started = time.perf_counter()
    plugin = get_task(args.task)
    # Checked before anything is built: a socket the platform would refuse is one line, now.
    interfaces = read_interfaces(args.sockets, plugin) if args.sockets else default_interfaces(plugin)
    if args.print_sockets:
        print(json.dumps(interfaces_json(plugin, interfaces), indent=2))
        return 0
    inputs = [("--data", args.data), *(("--model", m) for m in args.model or [])]
    check_outputs([("--out", args.out, OutputKind.FOLDER), ("--work", args.work, OutputKind.FOLDER)], inputs)
    tag = (args.tag or f"eyegc-{plugin.name}").lower()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    _step(f"eyegc {eyegc_version()} — {plugin.name}")
    data = args.data
    models = list(args.model or [])
    if args.demo:
        started = time.perf_counter()
        demo_data, demo_run = _demo(plugin, REPO / "demo" / plugin.name, want_data=data is None, want_model=not models)
        data = data or demo_data
        if demo_run is not None:
            models = [demo_run]
        timings["demo"] = round(time.perf_counter() - started, 1)
    if not models:
        raise SubmitError("no model: pass --model RUN [RUN ...] (a trained bundle) or --demo")

    _step("model bundles")
    staged = _stage_bundles(plugin.name, models, work / "bundles")
    if data is None:
        recorded = next((Path(b.data_root) for b in staged if b.data_root and Path(b.data_root).is_dir()), None)
        data = recorded
    if data is None and not args.no_test:
        from eyegc.common.sample_data import write_sample_data

        data = work / "sample-data"
        if not data.is_dir():
            write_sample_data(plugin, data, cases=1, test_cases=3, seed=0)
        _say(f"no --data and the bundle's training data is gone: test-running synthetic cases from {data}")

    reason = None if args.no_docker else _docker_available()
    use_docker = not args.no_docker and reason is None
    if not args.no_docker and reason is not None:
        _say(f"docker: no Docker engine reachable ({reason}); running the entrypoint in-process instead")

    if args.gpus is None:
        args.gpus = use_docker and _host_has_gpu()
    image = _build_image(args, plugin, interfaces, staged, work, tag, timings) if use_docker else {}
    test_rows: list[dict[str, Any]] = []
    scores = None
    if not args.no_test:
        run = TestRun(plugin, interfaces, tag, work / f"test-{stamp}", args, use_docker, image)
        test_rows, scores = _test_runs(run, staged, Path(data), work)
    artifacts = _export(
        args, plugin, interfaces, staged, image, test_rows, scores, work, tag, stamp, timings, total_started
    )
    _print_upload_steps(args, plugin, interfaces, use_docker, artifacts, work / f"test-{stamp}", timings)
    if not (use_docker or args.no_docker):
        print("submit: no image was built (no Docker engine); pass --no-docker to accept that", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
