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
import json
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from eyegc.common.deploy.build import DEFAULT_BASE_IMAGE, StagedBundle, build_image, docker_available, stage_bundles
from eyegc.common.deploy.export import export_artifacts, print_upload_steps
from eyegc.common.deploy.shimrun import shim_runs
from eyegc.common.deploy.steps import SubmitError, say, source_root, step
from eyegc.common.deploy.testrun import (
    SampleSet,
    TestRun,
    container_scores,
    exec_runs,
    host_has_gpu,
    invoke_and_model_dir_runs,
    reference_predictions,
    sample_cases,
)
from eyegc.common.errors import user_error_message
from eyegc.common.outputs import OutputKind, check_outputs
from eyegc.common.sockets import (
    default_interfaces,
    interfaces_json,
    read_interfaces,
)

__all__ = ["build_parser", "main"]


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
    parser.add_argument("--out", type=Path, help="artifact folder (default dist/ in the checkout)")
    parser.add_argument("--demo", action="store_true", help="make sample data and train a small model first")
    parser.add_argument("--work", type=Path, help="work folder (default build/container in the checkout, gitignored)")
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


def _demo(plugin: Any, root: Path, want_data: bool, want_model: bool) -> tuple[Path, Path | None]:
    """Sample data in ``root/data`` and the demo model in ``root/run`` (``eyegc demo``'s, reused when present)."""
    from eyegc.common.demo import demo_training, prepare_demo

    started = time.perf_counter()
    if want_model:
        settings = demo_training(plugin)
        say(
            f"demo: sample data and a small model on CPU ({settings['folds']} folds x {settings['epochs']} epochs); "
            "reused when present"
        )
    data, run = prepare_demo(plugin, root, train_model=want_model, device="cpu")
    say(f"demo: data {data}, model {run} ready in {time.perf_counter() - started:.0f} s")
    return data, run


def _test_runs(
    run: TestRun, staged: Sequence[StagedBundle], data: Path, work: Path
) -> tuple[list[dict[str, Any]], dict | None]:
    """Every test run of the platform's kind; returns the per-case rows and the container's local scores."""
    import torch

    step("test runs, the platform's way")
    for old in work.glob("test-*"):
        shutil.rmtree(old, ignore_errors=True)  # files the container wrote may not be ours to delete
    cases = sample_cases(run.plugin, data, run.root, run.args.max_cases, run.interface)
    bundles = [b.path for b in staged]
    reference = reference_predictions(run.plugin, sys.executable, bundles, cases, run.root, run.args.tta)
    exact = not (run.use_docker and (run.args.gpus or run.image.get("torch") != torch.__version__))
    rows = exec_runs(run, cases, reference, bundles, exact)
    if run.use_docker:
        sample = SampleSet(cases, reference, exact)
        invoke_and_model_dir_runs(run, sample, rows, work)
        if run.args.shim:
            shim_runs(run, sample, rows, work)
        else:
            say("the test run by the platform's runner (sagemaker-shim) was skipped (--no-shim)")
    return rows, container_scores(run.plugin, cases, reference)


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
    args.out = args.out or source_root() / "dist"
    args.work = args.work or source_root() / "build" / "container"
    inputs = [("--data", args.data), *(("--model", m) for m in args.model or [])]
    check_outputs([("--out", args.out, OutputKind.FOLDER), ("--work", args.work, OutputKind.FOLDER)], inputs)
    tag = (args.tag or f"eyegc-{plugin.name}").lower()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    step(f"eyegc {eyegc_version()} — {plugin.name}")
    data = args.data
    models = list(args.model or [])
    if args.demo:
        started = time.perf_counter()
        demo_data, demo_run = _demo(
            plugin, source_root() / "demo" / plugin.name, want_data=data is None, want_model=not models
        )
        data = data or demo_data
        if demo_run is not None:
            models = [demo_run]
        timings["demo"] = round(time.perf_counter() - started, 1)
    if not models:
        raise SubmitError("no model: pass --model RUN [RUN ...] (a trained bundle) or --demo")

    step("model bundles")
    staged = stage_bundles(plugin.name, models, work / "bundles")
    if data is None:
        recorded = next((Path(b.data_root) for b in staged if b.data_root and Path(b.data_root).is_dir()), None)
        data = recorded
    if data is None and not args.no_test:
        from eyegc.common.sample_data import write_sample_data

        data = work / "sample-data"
        if not data.is_dir():
            write_sample_data(plugin, data, cases=1, test_cases=3, seed=0)
        say(f"no --data and the bundle's training data is gone: test-running synthetic cases from {data}")

    reason = None if args.no_docker else docker_available()
    use_docker = not args.no_docker and reason is None
    if not args.no_docker and reason is not None:
        say(f"docker: no Docker engine reachable ({reason}); running the entrypoint in-process instead")

    if args.gpus is None:
        args.gpus = use_docker and host_has_gpu()
    image = build_image(args, plugin, interfaces, staged, work, tag, timings) if use_docker else {}
    test_rows: list[dict[str, Any]] = []
    scores = None
    if not args.no_test:
        run = TestRun(plugin, interfaces, tag, work / f"test-{stamp}", args, use_docker, image)
        test_rows, scores = _test_runs(run, staged, Path(data), work)
    artifacts = export_artifacts(
        args, plugin, interfaces, staged, image, test_rows, scores, work, tag, stamp, timings, total_started
    )
    print_upload_steps(args, plugin, interfaces, use_docker, artifacts, work / f"test-{stamp}", timings)
    if not (use_docker or args.no_docker):
        print("submit: no image was built (no Docker engine); pass --no-docker to accept that", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
