"""``eyegc gc try``: gcapi's real client uploads a case, starts a job, polls it and downloads its outputs
from a local HTTPS server answering with the platform's JSON shapes (gcapi's models); the server "runs"
the algorithm with the entrypoint on the uploaded file, or tampers with an output, or fails the job."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import SimpleITK as sitk
from eyegc.common.bundle import load_bundle
from eyegc.common.cli import main
from eyegc.common.container import run_case
from eyegc.common.imageio import write_sitk_image
from eyegc.common.inference import Predictor
from eyegc.common.registry import get_task
from eyegc.common.sockets import default_interfaces
from https_server import send_json, serve_https

pytest.importorskip("gcapi")
TASK = "drac22-task1"
(INTERFACE,) = default_interfaces(get_task(TASK))


def _socket_json(socket: Any, pk: int) -> dict[str, Any]:
    """A socket as the API serialises it (gcapi.models.ComponentInterface)."""
    return {
        "title": socket.slug,
        "description": "",
        "slug": socket.slug,
        "kind": socket.kind,
        "pk": pk,
        "default_value": None,
        "super_kind": socket.super_kind,
        "relative_path": socket.relative_path,
        "overlay_segments": None,
        "look_up_table": None,
    }


SOCKETS = {s.slug: _socket_json(s, pk) for pk, s in enumerate((*INTERFACE.inputs, *INTERFACE.outputs), start=1)}


class _Platform(BaseHTTPRequestHandler):
    """The endpoints gcapi calls for a job: sockets, uploads (multipart, presigned PUTs), jobs, images."""

    predictor: ClassVar[Any] = None
    uploads: ClassVar[dict[str, bytes]] = {}
    jobs: ClassVar[dict[str, dict[str, Any]]] = {}
    images: ClassVar[dict[str, Path]] = {}
    work: ClassVar[Path] = Path(tempfile.gettempdir())

    def _root(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def _body(self) -> Any:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _upload(self, pk: str, status: str) -> dict[str, Any]:
        return {
            "pk": pk,
            "created": "2026-12-03T00:00:00Z",
            "filename": "case.mha",
            "key": f"uploads/{pk}",
            "s3_upload_id": "s3-1",
            "status": status,
            "api_url": f"{self._root()}/api/v1/uploads/{pk}/",
        }

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        query = parse_qs(url.query)
        if url.path == "/api/v1/gcapi/":
            send_json(self, {"latest_version": version("gcapi"), "lowest_supported_version": "0.1.0"})
        elif url.path == "/api/v1/algorithms/":
            slug = query["slug"][0]
            inputs = [SOCKETS[s.slug] for s in INTERFACE.inputs]
            outputs = [SOCKETS[s.slug] for s in INTERFACE.outputs]
            algorithm = {
                "api_url": f"{self._root()}/api/v1/algorithms/{slug}/",
                "url": f"{self._root()}/algorithms/{slug}/",
                "description": None,
                "pk": str(uuid.uuid5(uuid.NAMESPACE_URL, slug)),
                "title": slug,
                "logo": "",
                "slug": slug,
                "average_duration": None,
                "interfaces": [{"inputs": inputs, "outputs": outputs}],
            }
            send_json(self, {"count": 1, "next": None, "previous": None, "results": [algorithm]})
        elif url.path == "/api/v1/components/interfaces/":
            found = [SOCKETS[query["slug"][0]]] if query["slug"][0] in SOCKETS else []
            send_json(self, {"count": len(found), "next": None, "previous": None, "results": found})
        elif parts[:3] == ["api", "v1", "algorithms"] and parts[3] == "jobs":
            if self.jobs[parts[4]]["slug"] == "drac-flaky":
                self.send_error(500)  # the platform's API fails while the job may be running
                return
            send_json(self, self._job_detail(parts[4]))
        elif parts[:4] == ["api", "v1", "cases", "images"]:
            send_json(self, self._image_detail(parts[4]))
        elif parts[0] == "media":
            data = self.images[parts[1].removesuffix(".mha")].read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        body = json.loads(self._body())
        if self.path == "/api/v1/uploads/":
            send_json(self, self._upload(str(uuid.uuid4()), "Initialized"), 201)
        elif self.path == "/api/v1/algorithms/jobs/":
            slug = body["algorithm"].rstrip("/").split("/")[-1]
            (value,) = body["inputs"]
            upload = value["user_uploads"][0].rstrip("/").split("/")[-1]
            pk = str(uuid.uuid4())
            self.jobs[pk] = {"slug": slug, "upload": upload, "reads": 0, "outputs": []}
            send_json(self, {"pk": pk, "inputs": [], "status": "Queued"}, 201)
        else:
            self.send_error(404)

    def do_PATCH(self) -> None:
        body = json.loads(self._body())
        pk = self.path.strip("/").split("/")[3]
        if self.path.endswith("/generate-presigned-urls/"):
            urls = {str(n): f"{self._root()}/s3/{pk}/{n}" for n in body["part_numbers"]}
            send_json(self, {**self._upload(pk, "Initialized"), "presigned_urls": urls})
        elif self.path.endswith("/complete-multipart-upload/"):
            send_json(self, self._upload(pk, "Completed"))
        else:
            self.send_error(404)

    def do_PUT(self) -> None:
        pk = self.path.strip("/").split("/")[1]
        self.uploads[pk] = self.uploads.get(pk, b"") + self._body()
        self.send_response(200)
        self.send_header("ETag", f'"{uuid.uuid4().hex}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _run_algorithm(self, job: dict[str, Any]) -> None:
        """The platform's side: the entrypoint on the uploaded image, each output image stored."""
        folder = self.work / job["upload"]
        (folder / "input" / INTERFACE.inputs[0].relative_path).mkdir(parents=True)
        (folder / "input" / INTERFACE.inputs[0].relative_path / "case.mha").write_bytes(self.uploads[job["upload"]])
        run_case(self.predictor.plugin, self.predictor, folder / "input", folder / "output", [INTERFACE])
        for socket in INTERFACE.outputs:
            path = next((folder / "output" / socket.relative_path).iterdir())
            if job["slug"] == "drac-tampered" and socket.slug == "npa-segmentation":
                import SimpleITK as sitk

                array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
                array[: array.shape[0] // 4] = 1 - array[: array.shape[0] // 4]
                write_sitk_image(sitk.GetImageFromArray(array), path)
            image_pk = str(uuid.uuid4())
            self.images[image_pk] = path
            job["outputs"].append((socket.slug, image_pk))

    def _job_detail(self, pk: str) -> dict[str, Any]:
        job = self.jobs[pk]
        job["reads"] += 1
        status = "Executing"
        if job["reads"] >= 2:
            status = "Failed" if job["slug"] == "drac-fails" else "Succeeded"
            if status == "Succeeded" and not job["outputs"]:
                self._run_algorithm(job)
        outputs = [
            {
                "socket": SOCKETS[slug],
                "interface": SOCKETS[slug],
                "value": None,
                "file": None,
                "image": f"{self._root()}/api/v1/cases/images/{image_pk}/",
                "pk": n,
            }
            for n, (slug, image_pk) in enumerate(job["outputs"] if status == "Succeeded" else [])
        ]
        return {
            "pk": pk,
            "url": f"{self._root()}/algorithms/jobs/{pk}/",
            "api_url": f"{self._root()}/api/v1/algorithms/jobs/{pk}/",
            "algorithm_image": f"{self._root()}/api/v1/algorithms/images/1/",
            "inputs": [],
            "outputs": outputs,
            "status": status,
            "hanging_protocol": None,
            "optional_hanging_protocols": [],
            "view_content": {},
            "exec_duration": None,
            "invoke_duration": None,
            "algorithm": f"{self._root()}/api/v1/algorithms/{job['slug']}/",
        }

    def _image_detail(self, pk: str) -> dict[str, Any]:
        return {
            "pk": pk,
            "name": "output.mha",
            "files": [{"pk": pk, "image": None, "file": f"{self._root()}/media/{pk}.mha", "image_type": "MHD"}],
            "dicom_image_set": None,
            "width": None,
            "height": None,
            "depth": None,
            "color_space": "GRAY",
            "modality": None,
            "eye_choice": None,
            "stereoscopic_choice": None,
            "field_of_view": None,
            "shape_without_color": [1],
            "shape": [1],
            "voxel_width_mm": None,
            "voxel_height_mm": None,
            "voxel_depth_mm": None,
            "api_url": f"{self._root()}/api/v1/cases/images/{pk}/",
            "window_center": None,
            "window_width": None,
            "segments": None,
        }

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory, drac22_run: Path) -> Iterator[str]:
    plugin = get_task(TASK)
    _Platform.predictor = Predictor(plugin, [load_bundle(drac22_run, task=TASK)], "flip", "cpu")
    _Platform.work = tmp_path_factory.mktemp("platform-jobs")
    with serve_https(_Platform, tmp_path_factory.mktemp("tls")) as url:
        yield url


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAND_CHALLENGE_TOKEN", "test-token-123")


def _try(api_url: str, algorithm: str, image: Path, run: Path, out: Path) -> int:
    args = ["gc", "try", algorithm, str(image), "--model", str(run), "--out", str(out), "--poll", "0.05"]
    return main([*args, "--api-url", api_url, "--insecure"])


def _image(drac22_data: Path) -> Path:
    return get_task(TASK).list_cases(drac22_data, "test")[0].image


def test_a_job_on_the_platform_equals_the_local_run(
    api_url: str, token: None, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _try(api_url, "drac-ok", _image(drac22_data), drac22_run, tmp_path / "try") == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.endswith(": equal")] == [
        f"{s.slug}: equal" for s in INTERFACE.outputs
    ]
    assert "job " in out and ": Executing" in out and ": Succeeded" in out
    assert "ok: job " in out
    # What was uploaded is the platform-style input the local run read, byte for byte.
    (uploaded,) = list(_Platform.uploads.values())[-1:]
    local_input = next((tmp_path / "try" / "input" / INTERFACE.inputs[0].relative_path).iterdir())
    assert uploaded == local_input.read_bytes()
    for socket in INTERFACE.outputs:
        (platform_file,) = (tmp_path / "try" / "platform" / socket.relative_path).iterdir()
        assert platform_file.suffix == ".mha"


def test_a_differing_output_is_named_and_fails(
    api_url: str, token: None, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _try(api_url, "drac-tampered", _image(drac22_data), drac22_run, tmp_path / "try") == 2
    captured = capsys.readouterr()
    assert "irma-segmentation: equal" in captured.out
    differing = [line for line in captured.out.splitlines() if line.startswith("npa-segmentation: ")]
    assert len(differing) == 1 and "values differ" in differing[0]
    assert "the platform's outputs differ from eyegc's here" in captured.err


def test_a_failed_job_and_a_used_out_folder_are_one_line(
    api_url: str, token: None, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _try(api_url, "drac-fails", _image(drac22_data), drac22_run, tmp_path / "try") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ended Failed" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing partial: no --out, no staging folder
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert _try(api_url, "drac-ok", _image(drac22_data), drac22_run, tmp_path / "used") == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "used")


def test_outputs_compare_by_value_and_by_level() -> None:
    from eyegc.common.platform import compare_outputs

    mask = np.zeros((4, 4), np.uint8)
    other = mask.copy()
    other[0, 0] = 1
    probability = np.full((2, 2), 0.5, np.float32)
    assert compare_outputs({"m": other, "p": probability + 0.003}, {"m": mask, "p": probability}) == {
        "m": (1, 16),
        "p": (0, 4),
    }
    # A missing output, another shape or another type of value: every value differs.
    assert compare_outputs({}, {"m": mask}) == {"m": (16, 16)}
    assert compare_outputs({"m": mask[:2]}, {"m": mask}) == {"m": (16, 16)}
    assert compare_outputs({"v": "2"}, {"v": 0.5}) == {"v": (1, 1)}
    assert compare_outputs({"v": {"a": 1}}, {"v": 2}) == {"v": (1, 1)}
    assert compare_outputs({"v": 2}, {"v": 2}) == {"v": (0, 1)}
    assert compare_outputs({"v": 1}, {"v": 0.5}) == {"v": (1, 1)}


def test_an_api_error_while_waiting_names_the_job(
    api_url: str, token: None, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _try(api_url, "drac-flaky", _image(drac22_data), drac22_run, tmp_path / "try") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eyegc: error: reading job ") and "it may still be running" in err[0]
    assert not (tmp_path / "try").exists()


def test_a_bad_device_or_a_case_the_task_cannot_read_starts_no_job(
    api_url: str, token: None, drac22_data: Path, drac22_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    jobs = len(_Platform.jobs)
    args = ["gc", "try", "drac-ok", str(_image(drac22_data)), "--model", str(drac22_run), "--out", str(tmp_path / "a")]
    assert main([*args, "--device", "tpu", "--api-url", api_url, "--insecure"]) == 2
    assert "--device 'tpu' is not a device" in capsys.readouterr().err
    volume = tmp_path / "volume.mha"
    write_sitk_image(sitk.GetImageFromArray(np.zeros((5, 64, 64), np.uint8)), volume)
    assert _try(api_url, "drac-ok", volume, drac22_run, tmp_path / "b") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "volume.mha" in err[0]
    assert len(_Platform.jobs) == jobs  # nothing reached the platform
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.mha"]
