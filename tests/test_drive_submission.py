"""DRIVE prediction folders (round trip, clear errors) and the deterministic submission zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.drive.submission import (
    read_drive_masks,
    read_drive_probabilities,
    read_drive_submission,
    write_drive_prediction,
    write_drive_submission,
)
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.imageio import write_png
from PIL import Image

IDS = ["10_test", "02_test", "01_test"]  # deliberately not in order
SHAPE = (1, 584, 565)


@pytest.fixture
def predictions(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred"
    masks, probs = {}, {}
    for case_id in IDS:
        p = rng.random(SHAPE, dtype=np.float32)
        probs[case_id] = p
        masks[case_id] = (p > 0.6).astype(np.uint8)
        write_drive_prediction(pred, case_id, masks[case_id], p)
    return pred, masks, probs


def test_prediction_folder_layout_and_round_trip(predictions: tuple) -> None:
    pred, masks, probs = predictions
    assert sorted(p.name for p in pred.iterdir()) == ["01_test.png", "02_test.png", "10_test.png", "masks"]
    stored = np.asarray(Image.open(pred / "01_test.png"))
    assert stored.dtype == np.uint8 and stored.shape == SHAPE[1:]
    assert np.array_equal(stored, np.rint(probs["01_test"][0] * 255).astype(np.uint8))
    assert set(np.unique(np.asarray(Image.open(pred / "masks" / "01_test.png")))) == {0, 255}
    back_masks = read_drive_masks(pred, IDS)
    back_probs = read_drive_probabilities(pred, IDS)
    assert len(back_masks) == len(back_probs) == 3
    for i, case_id in enumerate(IDS):
        assert back_masks[i].shape == SHAPE and back_masks[i].dtype == np.uint8
        assert np.array_equal(back_masks[i], masks[case_id])
        assert back_probs[i].shape == SHAPE and back_probs[i].dtype == np.float32
        assert np.abs(back_probs[i] - probs[case_id]).max() <= 0.5 / 255 + 1e-6


def test_missing_and_malformed_predictions(predictions: tuple, tmp_path: Path) -> None:
    pred, _, _ = predictions
    with pytest.raises(DataError, match=r"20_test.*20_test\.png is missing.*eyegc predict"):
        read_drive_probabilities(pred, ["01_test", "20_test"])
    (pred / "masks" / "02_test.png").unlink()
    with pytest.raises(DataError, match=r"masks/02_test\.png is missing"):
        read_drive_masks(pred, IDS)
    with pytest.raises(DataError, match="prediction folder not found"):
        read_drive_masks(tmp_path / "nowhere", IDS)
    write_png(pred / "10_test.png", np.zeros((500, 565), np.uint8))
    with pytest.raises(DataError, match=r"10_test\.png is 565x500"):
        read_drive_probabilities(pred, ["10_test"])[0]
    write_png(pred / "masks" / "01_test.png", np.full((584, 565), 7, np.uint8))
    with pytest.raises(DataError, match="a prediction mask holds only the values 0/255 or 0/1"):
        read_drive_masks(pred, ["01_test"])[0]


def test_write_prediction_checks_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="584"):
        write_drive_prediction(tmp_path, "01_test", np.zeros((1, 10, 10), np.uint8), np.zeros((1, 10, 10)))


def test_zip_holds_the_probability_maps_in_order(predictions: tuple, tmp_path: Path) -> None:
    pred, _, probs = predictions
    out = write_drive_submission(pred, tmp_path / "sub.zip")
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["01_test.png", "02_test.png", "10_test.png"]
        image = Image.open(io.BytesIO(archive.read("02_test.png")))
        assert image.mode == "L" and image.size == (565, 584)
        assert np.array_equal(np.asarray(image), np.rint(probs["02_test"][0] * 255).astype(np.uint8))
        assert {info.date_time for info in archive.infolist()} == {(2004, 1, 1, 0, 0, 0)}


def test_same_predictions_give_the_same_zip_bytes(predictions: tuple, tmp_path: Path) -> None:
    pred, _, _ = predictions
    a = write_drive_submission(pred, tmp_path / "a.zip").read_bytes()
    b = write_drive_submission(pred, tmp_path / "b.zip", case_ids=list(reversed(IDS))).read_bytes()
    assert a == b


def test_zip_round_trip(predictions: tuple, tmp_path: Path) -> None:
    pred, masks, probs = predictions
    plain = write_drive_submission(pred, tmp_path / "plain.zip")
    with_masks = write_drive_submission(pred, tmp_path / "masks.zip", include_masks=True)
    with zipfile.ZipFile(with_masks) as archive:
        assert archive.namelist()[3:] == ["masks/01_test.png", "masks/02_test.png", "masks/10_test.png"]
    back_masks, back_probs = read_drive_submission(with_masks, IDS)
    plain_masks, plain_probs = read_drive_submission(plain, IDS)
    for i, case_id in enumerate(IDS):
        assert np.array_equal(back_masks[i], masks[case_id])
        assert np.array_equal(back_probs[i], plain_probs[i])
        assert np.abs(back_probs[i] - probs[case_id]).max() <= 0.5 / 255 + 1e-6
        # Without masks/ the masks are the probability maps at 0.5.
        assert np.array_equal(plain_masks[i], (plain_probs[i] >= 0.5).astype(np.uint8))
    with pytest.raises(SubmissionError, match=r"no 20_test\.png"):
        read_drive_submission(plain, ["20_test"])


def test_invalid_predictions_leave_no_zip(predictions: tuple, tmp_path: Path) -> None:
    pred, _, _ = predictions
    out = tmp_path / "sub.zip"
    write_png(pred / "02_test.png", np.zeros((584, 500), np.uint8))
    with pytest.raises(SubmissionError, match=r"02_test\.png is 500x584"):
        write_drive_submission(pred, out)
    assert not out.exists() and not list(tmp_path.glob(".sub.zip*"))
    with pytest.raises(SubmissionError, match="no probability maps"):
        write_drive_submission(tmp_path / "empty", out)
