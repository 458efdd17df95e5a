"""The test run by the platform's own runner: the image wrapped with sagemaker-shim as grand-challenge.org
wraps it, every sample case served from a local S3 (:mod:`eyegc.common.platform_runner`), in exec and invoke mode."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from eyegc.common.deploy.build import logged_build
from eyegc.common.deploy.steps import SubmitError, link_tree, run_command, say, source_root, step, tar_model
from eyegc.common.deploy.testrun import SampleCase, SampleSet, TestRun, check_case_outputs, compare_with_reference

#: The longest one job of the runner test may take (the task's own limit; the run gets one per job).
SHIM_RUN_TIMEOUT_S = 3600


def _shim_wheelhouse(python: str, work: Path, refresh: bool) -> Path:
    """Wheels of sagemaker-shim and its dependencies, pinned by constraints.txt (cached by a stamp)."""
    folder = work / "wheelhouse" / "shim"
    constraints = source_root() / "constraints.txt"
    key = hashlib.sha256("\n".join([constraints.read_text(), sys.version.split()[0]]).encode()).hexdigest()
    stamp = folder / ".stamp"
    if not refresh and stamp.is_file() and stamp.read_text().strip() == key:
        return folder
    tmp = folder.with_name("shim.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "requirements.txt").write_text("sagemaker-shim\n")
    cmd = [python, "-m", "pip", "download", "-q", "--only-binary=:all:", "--ignore-requires-python", "-d", str(tmp)]
    run_command([*cmd, "-c", str(constraints), "-r", str(tmp / "requirements.txt")], "pip download of sagemaker-shim")
    (tmp / ".stamp").write_text(key + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _build_shim_image(tag: str, work: Path, refresh: bool) -> str:
    """``tag`` wrapped by sagemaker-shim as the platform wraps an uploaded image (containers/shim.Dockerfile)."""
    from eyegc.common.platform_runner import shim_environment

    context = work / "shim-context"
    shutil.rmtree(context, ignore_errors=True)
    link_tree(_shim_wheelhouse(sys.executable, work, refresh), context / "wheels")
    (context / "wheels" / ".stamp").unlink(missing_ok=True)
    shutil.copy2(source_root() / "containers" / "shim.Dockerfile", context / "Dockerfile")
    config = json.loads(run_command(["docker", "image", "inspect", "-f", "{{json .Config}}", tag], "inspect").stdout)
    env = shim_environment(config)
    shim_tag = f"{tag}-sagemaker-shim"
    cmd = ["docker", "build", "--platform=linux/amd64", "--build-arg", f"IMAGE={tag}", "-t", shim_tag]
    cmd += ["--build-arg", f"ENTRYPOINT_B64J={env['GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J']}"]
    cmd += ["--build-arg", f"CMD_B64J={env['GRAND_CHALLENGE_COMPONENT_CMD_B64J']}"]
    cmd += ["--build-arg", f"COMPONENT_USER={env['GRAND_CHALLENGE_COMPONENT_USER']}", str(context)]
    logged_build(cmd, work / "docker-build-shim.log")
    return shim_tag


def _shim_extracts_tarballs(shim_tag: str) -> bool:
    """Whether the shim, on the image's Python, can extract a model tarball: it calls
    ``extractall(filter="data")``, which Python has from 3.11.4 (Debian bookworm's 3.11.2 lacks it)."""
    probe = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/opt/sagemaker-shim/bin/python", shim_tag]
    code = "import tarfile; print(hasattr(tarfile, 'data_filter'))"
    return run_command([*probe, "-c", code], "probing the shim's Python").stdout.strip() == "True"


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
    name = f"eyegc-shim-{mode}-{os.getpid()}"
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host", "--memory", memory, "--memory-swap", memory]
    cmd += ["--shm-size", "128m", *(["--gpus", "all"] if run.args.gpus else [])]
    cmd += [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
    cmd += [shim_tag, "invoke", "--tasks", shim_tasks_json(tasks)]
    limit = SHIM_RUN_TIMEOUT_S * len(tasks)  # each task may take its own SHIM_RUN_TIMEOUT_S
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=limit)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as stopped:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)  # not left running
        if isinstance(stopped, KeyboardInterrupt):
            raise
        raise SubmitError(f"sagemaker-shim in {mode} mode ran past {limit} s; its container was removed") from None
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


def shim_runs(run: TestRun, sample: SampleSet, rows: list[dict[str, Any]], work: Path) -> None:
    """Every case through the platform's runner inside the image, from a local S3, in exec and in invoke
    mode (the latter with the model tarball from S3 in /opt/ml/model); job times added to ``rows``."""
    cases, reference, exact = sample.cases, sample.reference, sample.exact
    from eyegc.common.platform_runner import LocalS3

    step("test run by the platform's runner (sagemaker-shim, local S3)")
    started = time.perf_counter()
    shim_tag = _build_shim_image(run.tag, work, run.args.refresh_wheelhouse)
    with_model = _shim_extracts_tarballs(shim_tag)
    if not with_model:
        say(
            "the image's Python lacks tarfile filters (3.11.4+), which the shim uses to extract model.tar.gz: "
            "invoke mode runs with the baked bundles here (the platform's shim brings its own Python)"
        )
    model_tar = run.root / "model-for-shim.tar.gz"
    tar_model(work / "bundles", model_tar)
    with LocalS3() as s3:
        model_uri = s3.upload_file(model_tar, "models/model.tar.gz") if with_model else None
        for mode in ("exec", "invoke"):
            results, log = _shim_mode_run(run, shim_tag, s3, mode, cases, model_uri if mode == "invoke" else None)
            # The shim's own line, then the entrypoint's: it loaded its networks from there, not the baked ones.
            used = "Downloading model from" in log and "network(s) from /opt/ml/model" in log
            if mode == "invoke" and model_uri and not used:
                raise SubmitError("under sagemaker-shim the model.tar.gz in /opt/ml/model was not used")
            for case, ref, row, result in zip(cases, reference, rows, results, strict=True):
                values = check_case_outputs(run.plugin, case, run.root / f"shim-{mode}" / case.case_id, run.interface)
                compare_with_reference(run.plugin, case, values, ref, exact, run.interface)
                row[f"shim_{mode}_seconds"] = _shim_job_seconds(result.get(f"{mode}_duration"))
    version = results[0].get("sagemaker_shim_version", "?")
    per_job = {m: [r[f"shim_{m}_seconds"] for r in rows] for m in ("exec", "invoke")}
    model = " with model.tar.gz from S3" if with_model else ""
    say(
        f"sagemaker-shim {version}: {len(cases)} job(s) from S3 in exec mode ({_mean(per_job['exec']):.2f} s/job) "
        f"and in invoke mode{model} ({_mean(per_job['invoke']):.2f} s/job warm); outputs in the bucket "
        f"equal eyegc predict ({time.perf_counter() - started:.0f} s in all)"
    )


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / max(len(known), 1)
