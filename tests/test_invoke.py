"""Invoke mode: the entrypoint as the server sagemaker-shim calls (GET /health, then POST /invoke per case),
loading the bundles once; each case's outputs equal exec mode's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from eyegc.common.container import OUTPUT_NAME, layout_case, main, read_output_values
from eyegc.common.registry import get_task

TASK = "drac22-task1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, method: str = "GET", timeout: float = 120) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _fill(folder: Path, image: Path | None) -> None:
    """What the runner does between cases: empty the folder, then (for /input) stage the next case."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    if image is not None:
        layout_case(get_task(TASK), image, folder)


@pytest.fixture
def server(drac22_run: Path, tmp_path: Path) -> Iterator[tuple[str, Path, Path, subprocess.Popen]]:
    port, input_dir, output_dir = _free_port(), tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    command = [sys.executable, "-m", "eyegc.common.container", "--task", TASK, "--model", str(drac22_run)]
    command += ["--input", str(input_dir), "--output", str(output_dir), "--tta", "flip", "--device", "cpu"]
    env = {**os.environ, "EYEGC_API_METHOD": "invoke", "EYEGC_PORT": str(port)}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below, read by the test
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if _request(f"{url}/health", timeout=2)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)  # not listening yet: the bundles are still loading
    try:
        yield url, input_dir, output_dir, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_invoke_serves_cases_from_one_model_load(
    server: tuple[str, Path, Path, subprocess.Popen], drac22_data: Path, drac22_run: Path, tmp_path: Path
) -> None:
    url, input_dir, output_dir, process = server
    assert process.poll() is None, (tmp_path / "server.log").read_text()
    plugin = get_task(TASK)
    images = [c.image for c in plugin.list_cases(drac22_data, "test")][:2]
    for image in images:
        _fill(input_dir, image)
        _fill(output_dir, None)
        status, summary = _request(f"{url}/invoke", "POST")
        assert status == 201, summary
        assert sorted(summary["outputs"]) == sorted(s.slug for s in plugin.output_sockets)
        served = read_output_values(plugin, output_dir)
        # The same case through exec mode (a fresh process, as the platform runs it by default).
        exec_out = tmp_path / f"exec-{image.stem}"
        layout = layout_case(plugin, image, tmp_path / f"exec-in-{image.stem}")
        args = ["--task", TASK, "--model", str(drac22_run), "--input", str(layout), "--output", str(exec_out)]
        assert main([*args, "--tta", "flip", "--device", "cpu", "--api", "exec"]) == 0
        for slug, value in read_output_values(plugin, exec_out).items():
            assert np.array_equal(served[slug], value)
    log = (tmp_path / "server.log").read_text()
    assert log.count("network(s) from") == 1  # loaded once, served twice
    assert log.count('"since_process_start"') == 2


def test_a_bad_case_is_a_422_and_the_server_goes_on(
    server: tuple[str, Path, Path, subprocess.Popen], drac22_data: Path
) -> None:
    url, input_dir, output_dir, _ = server
    _fill(input_dir, None)  # nothing staged
    status, body = _request(f"{url}/invoke", "POST")
    assert status == 422 and "input socket folder" in body["error"] and "is missing" in body["error"]
    assert list(output_dir.iterdir()) == []
    _fill(input_dir, get_task(TASK).list_cases(drac22_data, "test")[0].image)
    status, _ = _request(f"{url}/invoke", "POST")
    assert status == 201 and (output_dir / "images" / "irma-segmentation" / OUTPUT_NAME).is_file()


def test_an_unknown_api_method_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--task", TASK, "--input", str(tmp_path), "--output", str(tmp_path / "out"), "--api", "rest"]
    assert main(args) == 2
    assert "rest" in capsys.readouterr().err
