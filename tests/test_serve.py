"""``eyegc serve`` through its HTTP interface: what the page is offered, sent and answered."""

from __future__ import annotations

import io
import socket
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from eyegc.common import cli
from eyegc.common.errors import EyegcError
from eyegc.common.inference import predict_folder
from eyegc.common.registry import get_task
from eyegc.common.serve import predictions
from eyegc.common.serve.app import check_port_free, create_app
from eyegc.common.serve.predictions import PredictionService, load_choices
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader

TASK = "drac22-task1"
LIMIT = 8 * 2**20


@pytest.fixture(scope="module")
def service(drac22_run: Path) -> PredictionService:
    return PredictionService(load_choices([drac22_run]), "cpu")


@pytest.fixture
def client(service: PredictionService) -> TestClient:
    return TestClient(create_app(service, LIMIT))


@pytest.fixture(scope="module")
def sample_image(drac22_data: Path) -> Path:
    return get_task(TASK).list_cases(drac22_data, "test")[0].image


def _post(client: TestClient, data: bytes, filename: str, model: str = "model-1", tta: str = "flip"):
    return client.post("/api/predict", params={"model": model, "tta": tta, "filename": filename}, content=data)


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _predicted_files(run: Path, image: Path, tmp_path: Path, tta: str) -> dict[str, bytes]:
    """What ``eyegc predict`` writes for that one image, by path relative to the output folder."""
    images = tmp_path / "one"
    images.mkdir()
    (images / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "predicted"
    predict_folder(get_task(TASK), [run], images, out, tta=tta, device="cpu")
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_page_and_its_scripts_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_models_lists_each_bundle_with_its_classes_and_tta(client: TestClient, drac22_run: Path) -> None:
    body = client.get("/api/models").json()
    assert body["max_upload_bytes"] == LIMIT
    [model] = body["models"]
    assert model["key"] == "model-1" and model["task"] == TASK and model["members"] == 2
    assert drac22_run.name in model["label"]
    assert [c["key"] for c in model["classes"]] == [c.key for c in get_task(TASK).classes]
    assert model["tta"] == list(get_task(TASK).allowed_tta)


def test_two_bundles_of_one_task_are_also_offered_as_their_ensemble(drac22_run: Path) -> None:
    keys = [c.key for c in load_choices([drac22_run, drac22_run])]
    assert keys == ["model-1", "model-2", f"ensemble-{TASK}"]


def test_the_downloaded_masks_equal_eyegc_predict(
    client: TestClient, drac22_run: Path, sample_image: Path, tmp_path: Path
) -> None:
    answer = _post(client, sample_image.read_bytes(), sample_image.name)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["case"] == sample_image.stem and body["size"] == [1024, 1024]
    assert len(body["layers"]) == len(get_task(TASK).classes)
    assert all(layer.startswith("data:image/png;base64,") for layer in body["layers"])
    zipped = client.get(f"/api/results/{body['id']}/prediction")
    name = f"{sample_image.stem}-prediction.zip"
    assert zipped.headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    assert _unzip(zipped.content) == _predicted_files(drac22_run, sample_image, tmp_path, "flip")
    # the areas the page shows are those of the masks it offers
    for area, mask in zip(body["areas"], _masks_of(_unzip(zipped.content)), strict=True):
        assert area["pixels"] == int(mask.sum())


def _masks_of(files: dict[str, bytes]) -> list[np.ndarray]:
    plugin = get_task(TASK)
    by_class = {c.key: c.folder for c in plugin.classes}
    masks = []
    for key in (c.key for c in plugin.classes):
        [name] = [n for n in files if n.startswith(by_class[key] + "/")]
        masks.append(np.asarray(Image.open(io.BytesIO(files[name]))) > 0)
    return masks


def test_probabilities_and_the_one_page_report_download(client: TestClient, sample_image: Path) -> None:
    body = _post(client, sample_image.read_bytes(), sample_image.name, tta="none").json()
    npz = np.load(io.BytesIO(client.get(f"/api/results/{body['id']}/probabilities").content))
    assert npz["probabilities"].shape == (len(get_task(TASK).classes), 1024, 1024)
    assert list(npz["classes"]) == [c.key for c in get_task(TASK).classes]
    assert ((npz["probabilities"] >= 0) & (npz["probabilities"] <= 1)).all()
    report = client.get(f"/api/results/{body['id']}/report")
    assert report.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(report.content))
    assert len(reader.pages) == 1
    assert len(reader.pages[0].images) == 2  # the image, and the prediction outlined over it
    assert sample_image.name in reader.pages[0].extract_text()


@pytest.mark.parametrize(
    ("data", "filename", "status", "says"),
    [
        (b"hello", "notes.txt", 415, "notes.txt: not an image type"),
        (b"\x89PNG\r\n\x1a\n but not really", "broken.png", 422, "broken.png: cannot be decoded as PNG"),
        (b"", "empty.png", 422, "the upload is empty"),
    ],
)
def test_a_bad_upload_is_answered_with_a_message_naming_it(
    client: TestClient, data: bytes, filename: str, status: int, says: str
) -> None:
    answer = _post(client, data, filename)
    assert answer.status_code == status
    assert answer.json()["error"].startswith(says)


def test_an_upload_over_the_limit_is_refused_unread(service: PredictionService, sample_image: Path) -> None:
    small = TestClient(create_app(service, 1000))
    answer = _post(small, sample_image.read_bytes(), sample_image.name)
    assert answer.status_code == 413
    assert "the page takes up to" in answer.json()["error"] and "--max-upload-mb" in answer.json()["error"]


def test_an_image_the_task_cannot_take_gets_the_task_s_message_naming_the_upload(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    answer = _post(client, buffer.getvalue(), "small.png")
    assert answer.status_code == 422
    # the user's name, not the temporary copy's
    assert answer.json()["error"].startswith("small.png is 64x64; DRAC22 images are 1024x1024")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(client: TestClient) -> None:
    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)  # 400 M grey pixels, of which 100 bytes follow
    data = b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(kind, body)
        for kind, body in ((b"IHDR", header), (b"IDAT", zlib.compress(bytes(100))), (b"IEND", b""))
    )
    answer = _post(client, data, "big.png")
    assert answer.status_code == 413
    assert answer.json()["error"] == "big.png: 400,000,000 pixels is above the page's limit of 40,000,000"


def test_an_mha_naming_another_file_for_its_pixels_is_refused(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(256)) * 4096)  # 1024 x 1024 bytes anyone could read back otherwise
    header = (
        f"ObjectType = Image\nNDims = 2\nDimSize = 1024 1024\nElementType = MET_UCHAR\nElementDataFile = {secret}\n"
    )
    answer = _post(client, header.encode(), "scan.mha")
    assert answer.status_code == 422
    assert answer.json()["error"] == "scan.mha: an uploaded MHA must hold its pixels (ElementDataFile = LOCAL)"


def test_a_grey_and_alpha_png_is_read_as_eyegc_predict_reads_it(client: TestClient, sample_image: Path) -> None:
    grey = np.asarray(Image.open(sample_image))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], axis=-1), mode="LA").save(buffer, format="PNG")
    with_alpha = _post(client, buffer.getvalue(), "la.png", tta="none")
    plain = _post(client, sample_image.read_bytes(), "la.png", tta="none")
    assert with_alpha.status_code == 200, with_alpha.text
    assert with_alpha.json()["areas"] == plain.json()["areas"]


def test_odd_file_names_are_text_and_kept_in_the_download_name(client: TestClient, sample_image: Path) -> None:
    body = _post(client, sample_image.read_bytes(), "scan $\\frac$ ü.png", tta="none").json()
    assert body["case"] == "scan___frac__ü"  # dollar signs are no formula; letters of any script stay
    report = client.get(f"/api/results/{body['id']}/report")
    assert report.status_code == 200
    assert report.headers["content-disposition"].endswith("filename*=UTF-8''scan___frac__%C3%BC-report.pdf")
    assert "scan $\\frac$ ü.png" in PdfReader(io.BytesIO(report.content)).pages[0].extract_text()
    assert client.get(f"/api/results/{body['id']}/other").status_code == 404


def test_unknown_model_tta_and_result_are_refused(client: TestClient, sample_image: Path) -> None:
    answer = _post(client, sample_image.read_bytes(), sample_image.name, model="model-9")
    assert answer.status_code == 404 and "model-1" in answer.json()["error"]
    answer = _post(client, sample_image.read_bytes(), sample_image.name, tta="sideways")
    assert answer.status_code == 422 and "sideways" in answer.json()["error"]
    assert client.get("/api/results/0123/prediction").status_code == 404


def test_nothing_of_an_upload_stays_on_disk(
    client: TestClient, sample_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert _post(client, sample_image.read_bytes(), sample_image.name, tta="none").status_code == 200
    assert _post(client, b"\x89PNG broken", "broken.png").status_code == 422
    assert list(tmp_path.iterdir()) == []


def test_concurrent_uploads_are_predicted_one_at_a_time(
    service: PredictionService, sample_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, overlaps = [0], []
    real = predictions.Predictor

    class CountingPredictor(real):  # type: ignore[misc, valid-type]
        def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            running[0] += 1
            overlaps.append(running[0])
            time.sleep(0.2)
            try:
                return super().predict(image)
            finally:
                running[0] -= 1

    monkeypatch.setattr(predictions, "Predictor", CountingPredictor)
    data, results = sample_image.read_bytes(), []

    def upload() -> None:
        results.append(service.predict("model-1", "none", data, sample_image.name))

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1] and len(results) == 3
    assert len({r.summary["id"] for r in results}) == 3


def test_a_port_in_use_is_named(capsys: pytest.CaptureFixture[str], drac22_run: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EyegcError, match=f"127.0.0.1:{port}.*--port"):
            check_port_free("127.0.0.1", port)
        with pytest.raises(EyegcError, match=r"999.1.1.1:\d+ \(.*\): give an address of this machine with --host"):
            check_port_free("999.1.1.1", port)
        assert cli.main(["serve", "--model", str(drac22_run), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_folder_that_is_no_bundle_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["serve", "--model", str(tmp_path), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eyegc: error:") and str(tmp_path) in err and "Traceback" not in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
