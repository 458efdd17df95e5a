"""Test runs the platform's way: each sample case in a container (exec), all in one (invoke), with
``/opt/ml/model`` mounted; every output checked and compared with ``eyegc predict``."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.deploy.steps import SubmitError, run_command, say, tar_model
from eyegc.common.errors import DataError
from eyegc.common.invoke import DEFAULT_PORT
from eyegc.common.sockets import (
    Interface,
    label_map_values,
)

#: Allowed share of differing pixels between container and host predictions when the two run
#: different torch builds or devices (float rounding flips a few pixels at the threshold).
TOLERANCE = 1e-3


@dataclass
class SampleCase:
    """A case to test-run: its image, its platform-style input folder, its ground truth if any."""

    case_id: str
    image: Path
    input_dir: Path
    case: Any
    has_truth: bool
    runs: list[dict[str, Any]] = field(default_factory=list)


def sample_cases(plugin: Any, data: Path, work: Path, max_cases: int, interface: Interface) -> list[SampleCase]:
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


def host_has_gpu() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU here (the default of --gpus)."""
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and "GPU" in listed.stdout


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
    container_id = run_command([*cmd, tag], "docker run").stdout.strip()
    monitor = _PeakMemory(container_id)
    monitor.start()
    try:
        waited = run_command(["docker", "wait", container_id], "docker wait")
        elapsed = time.perf_counter() - started
        monitor.stop.set()
        monitor.join()
        exit_code = int(waited.stdout.strip() or 1)
        logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True, check=False)
        state = json.loads(run_command(["docker", "inspect", "-f", "{{json .State}}", container_id], "inspect").stdout)
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
    container_id = run_command(cmd, "docker run (invoke mode)").stdout.strip()
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
            run_command(
                ["docker", "exec", container_id, "find", "/output", "-mindepth", "1", "-delete"], "emptying /output"
            )
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


def check_case_outputs(plugin: Any, case: SampleCase, out: Path, interface: Interface) -> dict[str, Any]:
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


def reference_predictions(
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
    run_command(cmd, "eyegc predict (the reference outside the container)")
    say(f"reference: eyegc predict on {len(cases)} case(s) in {time.perf_counter() - started:.1f} s")
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


def compare_with_reference(
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
        elif socket.content in ("likelihood", "probabilities"):
            if np.shape(got) != np.shape(want):
                raise SubmitError(f"case {case.case_id}: {socket.slug} holds {got!r}; eyegc predict gives {want!r}")
            gaps = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))
            differing += int(np.count_nonzero(gaps > (1 / 255 if exact else 0.02)))
            total += int(gaps.size)
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


@dataclass(frozen=True)
class SampleSet:
    """The sample cases of the test runs, ``eyegc predict``'s result on each, and whether outputs must
    equal it exactly (same torch build and device) or within :data:`TOLERANCE`."""

    cases: Sequence[SampleCase]
    reference: Sequence[Reference]
    exact: bool


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
    say(f"case {row['case']}: ok in {row['seconds']:.1f} s{timing}, {memory}, {row['device']}, {equal}")


def exec_runs(
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
        values = check_case_outputs(plugin, case, out, run.interface)
        row = {
            "case": case.case_id,
            "seconds": result["seconds"],
            "start_to_prediction_s": result.get("start_to_prediction_s"),
            "peak_memory_bytes": result.get("peak_memory_bytes"),
            "peak_rss_mib": result["container"].get("peak_rss_mib"),
            "device": result["container"].get("device"),
            **compare_with_reference(plugin, case, values, ref, exact, run.interface),
        }
        rows.append(row)
        _say_case(row)
    return rows


def invoke_and_model_dir_runs(run: TestRun, sample: SampleSet, rows: list[dict[str, Any]], work: Path) -> None:
    """Invoke mode on every case (its times added to ``rows``), then one run with /opt/ml/model mounted."""
    cases, reference, exact = sample.cases, sample.reference, sample.exact
    args, plugin = run.args, run.plugin

    def check(case: SampleCase, out: Path) -> None:
        values = check_case_outputs(plugin, case, out, run.interface)
        compare_with_reference(plugin, case, values, reference[cases.index(case)], exact, run.interface)

    invoke_seconds = _docker_invoke_cases(run.tag, cases, run.root, args.memory, args.gpus, check)
    for row, seconds in zip(rows, invoke_seconds, strict=True):
        row["invoke_seconds"] = seconds
    exec_mean = sum(r["seconds"] for r in rows) / len(rows)
    warm = sum(invoke_seconds) / len(invoke_seconds)
    say(
        f"invoke mode: one container served {len(cases)} case(s), {warm:.2f} s/case warm against "
        f"{exec_mean:.2f} s/case in exec mode (a container per case); outputs equal"
    )
    # The uploaded model.tar.gz lands in /opt/ml/model and must win over the baked bundles.
    model_dir = run.root / "opt-ml-model"
    tar_probe = run.root / "model-probe.tar.gz"
    tar_model(work / "bundles", tar_probe)
    with tarfile.open(tar_probe) as archive:
        archive.extractall(model_dir, filter="data")  # our own archive; the filter refuses odd paths
    out = run.root / "model-dir-output"
    result = _docker_run_case(run.tag, cases[0], out, args.memory, args.gpus, model_dir)
    if "/opt/ml/model" not in result["log"]:
        raise SubmitError("with /opt/ml/model mounted the container did not load its bundles from there")
    compare_with_reference(
        plugin, cases[0], check_case_outputs(plugin, cases[0], out, run.interface), reference[0], exact, run.interface
    )
    say("model.tar.gz layout: /opt/ml/model is used ahead of the baked bundles, same outputs")


def container_scores(plugin: Any, cases: Sequence[SampleCase], reference: Sequence[Reference]) -> dict | None:
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
    say("\n" + format_leaderboard(result).replace("Local leaderboard", "Local leaderboard of the container"))
    return result.to_json_dict()
