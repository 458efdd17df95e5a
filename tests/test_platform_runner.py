"""The entrypoint under the platform's own runner: sagemaker-shim (the PyPI release the platform builds
its runner from) downloads each job from a local S3 (moto's server), runs the entrypoint in exec and in
invoke mode, and uploads /output; the outputs equal the entrypoint's own, and a bad case fails the job
with the entrypoint's one-line message. The shim's path variables point at temporary folders, so it runs
here without Docker and without root; submit.sh runs the same shim inside the image."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from eyegc.common.container import INPUTS_JSON, layout_case, main, read_output_values
from eyegc.common.platform_runner import (
    INPUT_BUCKET,
    OUTPUT_BUCKET,
    RESULT_KEY,
    LocalS3,
    RunnerError,
    ShimTask,
    check_runtime_setup,
    collect_outputs,
    decode_b64j,
    encode_b64j,
    shim_environment,
    shim_tasks_json,
    stage_case,
)
from eyegc.common.registry import get_task

pytest.importorskip("moto")
SHIM = Path(sys.executable).with_name("sagemaker-shim")
needs_shim = pytest.mark.skipif(not SHIM.exists(), reason="sagemaker-shim is not installed (scripts/setup-venv.sh)")
TASK = "drac22-task1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_shim(
    tmp_path: Path,
    s3: LocalS3,
    tasks: list[ShimTask],
    mode: str,
    run: Path,
    run_id: str = "run-1",
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``sagemaker-shim invoke`` as the platform calls it, with the entrypoint as the image's ENTRYPOINT."""
    port = _free_port()
    roots = {name: tmp_path / name for name in ("input", "output", "linked", "writable")}
    entrypoint = [sys.executable, "-m", "eyegc.common.container", "--task", TASK, "--model", str(run)]
    entrypoint += ["--input", str(roots["input"]), "--output", str(roots["output"]), "--device", "cpu"]
    config = {"Entrypoint": entrypoint, "Cmd": None, "User": ""}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAND_CHALLENGE_")}
    env |= s3.env(run_id) | shim_environment(config)
    env |= {
        "GRAND_CHALLENGE_COMPONENT_API_METHOD": mode,
        "GRAND_CHALLENGE_COMPONENT_USER_WEBSERVER_PORT": str(port),
        "GRAND_CHALLENGE_COMPONENT_INPUT_PATH": str(roots["input"]),
        "GRAND_CHALLENGE_COMPONENT_OUTPUT_PATH": str(roots["output"]),
        "GRAND_CHALLENGE_COMPONENT_LINKED_INPUT_PARENT": str(roots["linked"]),
        # The defaults are /tmp and /opt/ml/...: made world-writable, then emptied after the run.
        "GRAND_CHALLENGE_COMPONENT_WRITABLE_DIRECTORIES": str(roots["writable"]),
        "GRAND_CHALLENGE_COMPONENT_POST_CLEAN_DIRECTORIES": str(roots["writable"]),
        # The image's own variables: the shim passes them through (and strips GRAND_CHALLENGE_*).
        "EYEGC_API_METHOD": mode,
        "EYEGC_PORT": str(port),
        **(extra_env or {}),
    }
    roots["output"].mkdir(parents=True, exist_ok=True)
    cmd = [str(SHIM), "invoke", "--tasks", shim_tasks_json(tasks)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def _cases(drac22_data: Path, tmp_path: Path, count: int) -> list[Path]:
    plugin = get_task(TASK)
    images = [c.image for c in plugin.list_cases(drac22_data, "test")][:count]
    return [layout_case(plugin, image, tmp_path / f"case-{image.stem}") for image in images]


@needs_shim
@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_jobs_under_the_shim_equal_the_entrypoint(
    mode: str, drac22_data: Path, drac22_run: Path, tmp_path: Path
) -> None:
    plugin = get_task(TASK)
    cases = _cases(drac22_data, tmp_path, 2)
    with LocalS3() as s3:
        tasks = [stage_case(s3, f"job-{mode}-{i}", case) for i, case in enumerate(cases)]
        model, extra = drac22_run, {}
        if mode == "invoke":  # the bundle as an uploaded model.tar.gz, extracted by the shim
            archive = tmp_path / "model.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(drac22_run, arcname=".")
            model = tmp_path / "opt-ml-model"
            extra = {
                "GRAND_CHALLENGE_COMPONENT_MODEL": s3.upload_file(archive, "models/model.tar.gz"),
                "GRAND_CHALLENGE_COMPONENT_MODEL_DEST": str(model),
            }
        done = _run_shim(tmp_path / "shim", s3, tasks, mode, model, extra_env=extra)
        assert done.returncode == 0, done.stderr[-3000:]
        check_runtime_setup(s3, "run-1")
        for task, case in zip(tasks, cases, strict=True):
            result = collect_outputs(s3, task, tmp_path / "collected" / task.pk)
            assert result["return_code"] == 0
            assert (result["exec_duration"] is None) == (mode == "invoke")
            assert sorted(Path(o["relative_path"]).parent.as_posix() for o in result["outputs"]) == sorted(
                s.relative_path for s in plugin.output_sockets
            )
            direct = tmp_path / "direct" / task.pk
            args = ["--task", TASK, "--model", str(drac22_run), "--input", str(case), "--output", str(direct)]
            assert main([*args, "--device", "cpu", "--api", "exec"]) == 0
            shimmed = read_output_values(plugin, tmp_path / "collected" / task.pk)
            for slug, value in read_output_values(plugin, direct).items():
                assert np.array_equal(shimmed[slug], value), slug
    log = done.stdout + done.stderr
    # exec: a process per job; invoke: one process, its bundles loaded once for both jobs.
    assert log.count("network(s) from") == (2 if mode == "exec" else 1)
    if mode == "invoke":
        assert "opt-ml-model" in log


@needs_shim
@pytest.mark.parametrize("mode", ["exec", "invoke"])
def test_a_bad_case_fails_the_job_with_the_entrypoints_message(
    mode: str, drac22_data: Path, drac22_run: Path, tmp_path: Path
) -> None:
    case = _cases(drac22_data, tmp_path, 1)[0]
    entries = json.loads((case / INPUTS_JSON).read_text())
    for entry in entries:
        entry["socket"]["slug"] = entry["interface"]["slug"] = "no-such-socket"
    (case / INPUTS_JSON).write_text(json.dumps(entries))
    with LocalS3() as s3:
        task = stage_case(s3, f"bad-{mode}", case)
        done = _run_shim(tmp_path / "shim", s3, [task], mode, drac22_run)
        assert done.returncode == 0, done.stderr[-3000:]  # the shim reports a failed job, it does not crash
        with pytest.raises(RunnerError, match=f"job bad-{mode} failed under sagemaker-shim") as failed:
            collect_outputs(s3, task, tmp_path / "collected")
    assert "no-such-socket" in str(failed.value)
    assert not (tmp_path / "collected").exists()


@needs_shim
def test_an_invoke_server_that_never_gets_healthy_is_a_failed_setup(drac22_data: Path, tmp_path: Path) -> None:
    case = _cases(drac22_data, tmp_path, 1)[0]
    with LocalS3() as s3:
        task = stage_case(s3, "job-1", case)
        limits = {
            "GRAND_CHALLENGE_COMPONENT_START_AND_HEALTH_TIMEOUT_SECONDS": "6",
            "GRAND_CHALLENGE_COMPONENT_HEALTH_CHECK_CALL_TIMEOUT_SECONDS": "2",
        }
        # No bundle there: the entrypoint exits with its one line before it serves /health.
        done = _run_shim(tmp_path / "shim", s3, [task], "invoke", tmp_path / "no-bundle", "run-2", limits)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "no-bundle" in done.stdout + done.stderr  # the entrypoint's message reaches the runner's log
        with pytest.raises(RunnerError, match="run run-2: sagemaker-shim could not start it"):
            check_runtime_setup(s3, "run-2")
        with pytest.raises(RunnerError, match="wrote no"):
            collect_outputs(s3, task, tmp_path / "collected")


def test_the_platforms_wrapping_variables_round_trip() -> None:
    config = {"Entrypoint": ["python", "-m", "eyegc.common.container"], "Cmd": None, "User": "user"}
    env = shim_environment(config)
    assert decode_b64j(env["GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J"]) == config["Entrypoint"]
    assert decode_b64j(env["GRAND_CHALLENGE_COMPONENT_CMD_B64J"]) is None
    assert env["GRAND_CHALLENGE_COMPONENT_USER"] == "user"
    # Exactly the platform's encoding: base64 of json.dumps.
    assert encode_b64j(["a", "b"]) == "WyJhIiwgImIiXQ=="


@needs_shim
def test_the_task_list_is_what_the_shim_accepts_and_runs_the_entrypoint_as_given() -> None:
    models = pytest.importorskip("sagemaker_shim.models")
    task = ShimTask("job-1", (("inputs.json", "io/job-1/inputs.json"),), "io/job-1/")
    parsed = models.InferenceTaskList.model_validate_json(shim_tasks_json([task])).root[0]
    assert parsed.pk == "job-1" and parsed.output_prefix == "io/job-1/" and parsed.timeout.total_seconds() == 3600
    assert [(str(i.relative_path), i.bucket_name, i.bucket_key) for i in parsed.inputs] == [
        ("inputs.json", INPUT_BUCKET, "io/job-1/inputs.json")
    ]
    assert parsed.output_bucket_name == OUTPUT_BUCKET


def test_staging_uploads_every_input_file_and_refuses_odd_job_ids(tmp_path: Path) -> None:
    case = tmp_path / "case"
    (case / "images" / "x").mkdir(parents=True)
    (case / "images" / "x" / "a.mha").write_bytes(b"image")
    (case / INPUTS_JSON).write_text("[]")
    with LocalS3() as s3:
        task = stage_case(s3, "job-7", case)
        assert task.inputs == (
            ("images/x/a.mha", "io/job-7/images/x/a.mha"),
            ("inputs.json", "io/job-7/inputs.json"),
        )
        body = s3.client.get_object(Bucket=INPUT_BUCKET, Key="io/job-7/images/x/a.mha")["Body"].read()
        assert body == b"image"
        with pytest.raises(RunnerError, match="job id"):
            stage_case(s3, "../job", case)
        with pytest.raises(RunnerError, match="no input files"):
            stage_case(s3, "job-8", tmp_path / "empty")


def test_collecting_refuses_a_missing_result_and_a_path_out_of_the_folder(tmp_path: Path) -> None:
    task = ShimTask("job-1", (), "io/job-1/")
    with LocalS3() as s3:
        with pytest.raises(RunnerError, match="wrote no"):
            collect_outputs(s3, task, tmp_path / "out")
        result = {
            "pk": "job-1",
            "return_code": 0,
            "outputs": [{"relative_path": "../escape.json", "bucket_name": OUTPUT_BUCKET, "bucket_key": "k"}],
        }
        s3.client.put_object(Bucket=OUTPUT_BUCKET, Key="io/job-1/" + RESULT_KEY, Body=json.dumps(result).encode())
        with pytest.raises(RunnerError, match="leaves the output folder"):
            collect_outputs(s3, task, tmp_path / "out")
    assert not (tmp_path / "escape.json").exists()
