"""A case run by the platform's own runner, sagemaker-shim, with a local S3 in place of the platform's.

grand-challenge.org does not run an uploaded image as it is. It adds its runner, sagemaker-shim, as
the new entrypoint (DIAGNijmegen/rse-grand-challenge, ``components/tasks.py``,
``_mutate_container_image``): the image's own ENTRYPOINT, CMD and USER move into the environment
variables of :func:`shim_environment`, and the container runs as root. Per job the shim
(DIAGNijmegen/rse-sagemaker-shim, ``sagemaker_shim/models.py``) downloads the inputs from S3 into
``/input`` (``inputs.json`` is one of them), runs the algorithm as that USER, uploads ``/output`` to
the job's output prefix and writes ``<prefix>.sagemaker_shim/inference_result.json``. In exec mode it
starts the original command once per job; in invoke mode (``GRAND_CHALLENGE_COMPONENT_API_METHOD``)
it starts it once, waits for ``GET /health`` and calls ``POST /invoke`` per job.

This module plays the platform's part: :class:`LocalS3` is moto's S3 server on 127.0.0.1,
:func:`stage_case` uploads a laid-out case as the platform provisions a job, :func:`shim_tasks_json`
is the task list given to ``sagemaker-shim invoke --tasks`` and :func:`collect_outputs` reads the
result and the outputs back. ``submit.sh`` runs the shim inside the image; the tests run it on the
host against the entrypoint, with the shim's path variables pointed at temporary folders.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eyegc.common.errors import EyegcError

try:  # the host side of the runner test (pip install "eyegc[shim]"); only these functions need it
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:  # pragma: no cover - the test environment installs it
    boto3 = ThreadedMotoServer = None

__all__ = [
    "INPUT_BUCKET",
    "OUTPUT_BUCKET",
    "RESULT_KEY",
    "SETUP_RESULT_KEY",
    "LocalS3",
    "RunnerError",
    "ShimTask",
    "check_runtime_setup",
    "collect_outputs",
    "decode_b64j",
    "encode_b64j",
    "shim_environment",
    "shim_tasks_json",
    "stage_case",
]

INPUT_BUCKET = "eyegc-inputs"
OUTPUT_BUCKET = "eyegc-outputs"
#: Where the shim writes each job's result, below the job's output prefix.
RESULT_KEY = ".sagemaker_shim/inference_result.json"
#: Where it writes whether the run could start (model download; in invoke mode, the server's health),
#: below GRAND_CHALLENGE_COMPONENT_RUNTIME_OUTPUT_PREFIX (sagemaker-shim 0.8 requires that variable).
SETUP_RESULT_KEY = ".sagemaker_shim/runtime_setup_result.json"
#: Any value works against moto; botocore only needs some credentials and a region.
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "eyegc-local",
    "AWS_SECRET_ACCESS_KEY": "eyegc-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class RunnerError(EyegcError):
    """The runner test could not be set up, or a job failed under the platform's runner."""


def encode_b64j(value: Any) -> str:
    """JSON, then base64: how the platform hands the original ENTRYPOINT and CMD to the shim."""
    return base64.b64encode(json.dumps(value).encode("utf-8")).decode("utf-8")


def decode_b64j(text: str) -> Any:
    """The inverse of :func:`encode_b64j`."""
    return json.loads(base64.b64decode(text.encode("utf-8")).decode("utf-8"))


def shim_environment(config: Mapping[str, Any]) -> dict[str, str]:
    """The variables the platform sets when it wraps an image, from the image's config.

    Args:
        config: ``docker image inspect``'s ``Config`` (Entrypoint, Cmd, User), or the ``config``
            member of a saved image's config file: the platform reads the same fields.
    """
    return {
        "GRAND_CHALLENGE_COMPONENT_CMD_B64J": encode_b64j(config.get("Cmd")),
        "GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J": encode_b64j(config.get("Entrypoint")),
        "GRAND_CHALLENGE_COMPONENT_USER": str(config.get("User") or ""),
    }


@dataclass(frozen=True)
class ShimTask:
    """One job as the shim receives it: input files in S3 and where its outputs go."""

    pk: str
    inputs: tuple[tuple[str, str], ...]  # (relative path below /input, key in INPUT_BUCKET)
    output_prefix: str
    timeout_s: int = 3600

    def to_json(self) -> dict[str, Any]:
        """The task as the platform writes it for the shim (its ``InferenceTask`` model)."""
        return {
            "pk": self.pk,
            "inputs": [
                {"relative_path": path, "bucket_name": INPUT_BUCKET, "bucket_key": key, "decompress": False}
                for path, key in self.inputs
            ],
            "output_bucket_name": OUTPUT_BUCKET,
            "output_prefix": self.output_prefix,
            "timeout": f"PT{self.timeout_s}S",
        }


def shim_tasks_json(tasks: Sequence[ShimTask]) -> str:
    """The value of ``sagemaker-shim invoke --tasks``."""
    return json.dumps([t.to_json() for t in tasks])


class LocalS3:
    """moto's S3 server on 127.0.0.1 with the input and output buckets; use as a context manager.

    Raises:
        RunnerError: moto or boto3 is not installed.
    """

    def __init__(self) -> None:
        if ThreadedMotoServer is None or boto3 is None:
            raise RunnerError('the runner test needs moto and boto3: pip install "eyegc[shim]" (or skip it)')
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self.client: Any = None

    def __enter__(self) -> LocalS3:
        # moto's server logs every request through werkzeug: keep only its errors.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        try:
            host, port = self._server.get_host_and_port()
            self.endpoint = f"http://{host}:{port}"
            self.client = boto3.client("s3", endpoint_url=self.endpoint, **_client_credentials())
            for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
                self.client.create_bucket(Bucket=bucket)
        except BaseException:
            self._server.stop()  # __exit__ does not run when __enter__ fails
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def env(self, run_id: str) -> dict[str, str]:
        """What the shim needs for run ``run_id``: this S3's endpoint, (any) credentials, and where
        to write its runtime setup result (read back by :func:`check_runtime_setup`)."""
        return {
            **_CREDENTIALS,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "GRAND_CHALLENGE_COMPONENT_RUNTIME_OUTPUT_BUCKET_NAME": OUTPUT_BUCKET,
            "GRAND_CHALLENGE_COMPONENT_RUNTIME_OUTPUT_PREFIX": _runtime_prefix(run_id),
        }

    def upload_file(self, path: Path, key: str, bucket: str = INPUT_BUCKET) -> str:
        """Upload ``path``; returns its ``s3://`` URI (the form of GRAND_CHALLENGE_COMPONENT_MODEL)."""
        self.client.upload_file(Filename=str(path), Bucket=bucket, Key=key)
        return f"s3://{bucket}/{key}"


def _client_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": _CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": _CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def _checked_id(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
        raise RunnerError(f"job id {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def _job_prefix(pk: str) -> str:
    return f"io/{_checked_id(pk)}/"


def _runtime_prefix(run_id: str) -> str:
    return f"runtime/{_checked_id(run_id)}/"


def _read_json(s3: LocalS3, key: str) -> dict[str, Any] | None:
    try:
        body = s3.client.get_object(Bucket=OUTPUT_BUCKET, Key=key)["Body"].read()
    except s3.client.exceptions.NoSuchKey:
        return None
    except Exception as error:  # botocore's ClientError and connection errors
        raise RunnerError(f"reading s3://{OUTPUT_BUCKET}/{key} failed ({type(error).__name__}: {error})") from None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunnerError(f"s3://{OUTPUT_BUCKET}/{key} is not JSON") from None


def check_runtime_setup(s3: LocalS3, run_id: str) -> None:
    """Whether the runner could start run ``run_id`` (in invoke mode: the server answered GET /health).

    Raises:
        RunnerError: no setup result, or a failed one with the runner's message.
    """
    result = _read_json(s3, _runtime_prefix(run_id) + SETUP_RESULT_KEY)
    if result is None:
        raise RunnerError(f"run {run_id}: sagemaker-shim wrote no {SETUP_RESULT_KEY} (it stopped before starting)")
    if result.get("return_code") != 0:
        raise RunnerError(f"run {run_id}: sagemaker-shim could not start it: {result.get('user_safe_error_message')}")


def stage_case(s3: LocalS3, pk: str, input_dir: Path) -> ShimTask:
    """Upload every file of a laid-out case (``inputs.json`` and the socket files) as one job's inputs."""
    prefix = _job_prefix(pk)
    inputs = []
    for path in sorted(p for p in Path(input_dir).rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(input_dir).as_posix()
        s3.upload_file(path, prefix + relative)
        inputs.append((relative, prefix + relative))
    if not inputs:
        raise RunnerError(f"{input_dir}: no input files to stage")
    return ShimTask(pk, tuple(inputs), prefix)


def collect_outputs(s3: LocalS3, task: ShimTask, dest: Path) -> dict[str, Any]:
    """Download a finished job's outputs into ``dest`` (laid out as ``/output`` was) and return its result.

    Raises:
        RunnerError: no result, or the job failed: its message and the last lines the algorithm wrote
            to stderr.
    """
    result = _read_json(s3, task.output_prefix + RESULT_KEY)
    if result is None:
        raise RunnerError(f"job {task.pk}: the runner wrote no {RESULT_KEY} (it did not finish the job)")
    if result.get("return_code") != 0:
        stderr = "\n".join(line.rstrip() for line in result.get("user_process_last_stderr_lines", [])[-10:])
        message = result.get("user_safe_error_message") or f"exit code {result.get('return_code')}"
        raise RunnerError(f"job {task.pk} failed under sagemaker-shim: {message}\n{stderr}".rstrip())
    if dest.exists() and any(dest.iterdir()):
        raise RunnerError(f"{dest} is not empty: the outputs of job {task.pk} go to a new folder")
    outputs = result.get("outputs", [])
    for output in outputs:  # every path checked before anything is written
        if not (dest / output["relative_path"]).resolve().is_relative_to(dest.resolve()):
            raise RunnerError(f"job {task.pk}: output path {output['relative_path']!r} leaves the output folder")
    dest.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        target = dest / output["relative_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.client.download_file(Bucket=output["bucket_name"], Key=output["bucket_key"], Filename=str(target))
    return result
