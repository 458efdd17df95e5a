"""IDRiD prediction folders and submission files: lesion maps and zip, grading CSV."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.idrid.layout import GRADING_HEADS, LESION_KEYS, parse_grading_labels
from eyegc.challenges.idrid.submission import (
    MASKS_DIR,
    lesion_prediction_case_ids,
    quantize_probabilities,
    read_idrid_grading_predictions,
    read_idrid_grading_submission,
    read_idrid_lesion_masks,
    read_idrid_lesion_probabilities,
    write_idrid_grading_submission,
    write_idrid_lesion_prediction,
    write_idrid_lesion_submission,
)
from eyegc.common.classification import write_classification_case
from eyegc.common.errors import DataError, EyegcError, SubmissionError
from PIL import Image

IDS = ["IDRiD_56", "IDRiD_55"]  # deliberately not in order
SHAPE = (60, 90)


@pytest.fixture
def lesions(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred"
    probabilities, masks = {}, {}
    for n, case_id in enumerate(IDS):
        p = rng.random((4, *SHAPE)).astype(np.float32)
        p[:, 0, :3] = [0.0, 1.0, 0.5 / 255]  # the ends of the range and a rounding tie
        p[n, 10:20, 10:20] = 0.97  # a per-case signature
        probabilities[case_id] = p
        masks[case_id] = (p > 0.5).astype(np.uint8)
        write_idrid_lesion_prediction(pred, case_id, masks[case_id], p, LESION_KEYS)
    return pred, probabilities, masks


def test_prediction_folder_layout(lesions: tuple[Path, dict, dict]) -> None:
    pred, _, _ = lesions
    names = sorted(p.name for p in pred.iterdir())
    assert names == sorted([f"{c}_{s}.tif" for c in IDS for s in ("MA", "HE", "EX", "SE")] + [MASKS_DIR])
    assert sorted(p.name for p in (pred / MASKS_DIR).iterdir()) == sorted(n for n in names if n != MASKS_DIR)
    with Image.open(pred / "IDRiD_55_MA.tif") as image:
        assert (image.format, image.mode, image.size) == ("TIFF", "L", (90, 60))
        assert image.tag_v2.get(259) == 8  # deflate
    assert lesion_prediction_case_ids(pred) == ["IDRiD_55", "IDRiD_56"]


def test_probability_round_trip(lesions: tuple[Path, dict, dict]) -> None:
    pred, probabilities, masks = lesions
    maps = read_idrid_lesion_probabilities(pred, IDS, LESION_KEYS, shapes=[SHAPE, SHAPE])
    assert not isinstance(maps, list) and len(maps) == 2
    for case_id, stored in zip(IDS, maps, strict=True):
        assert stored.dtype == np.uint8 and stored.shape == (4, *SHAPE)
        assert np.array_equal(stored, np.round(probabilities[case_id] * 255).astype(np.uint8))
        assert np.array_equal(stored, quantize_probabilities(probabilities[case_id]))
        assert stored[0, 0, :2].tolist() == [0, 255]
    read_masks = read_idrid_lesion_masks(pred, IDS, LESION_KEYS)
    assert isinstance(read_masks, list)
    for case_id, mask in zip(IDS, read_masks, strict=True):
        assert np.array_equal(mask, masks[case_id])


def test_probabilities_are_read_lazily(lesions: tuple[Path, dict, dict]) -> None:
    pred, _, _ = lesions
    maps = read_idrid_lesion_probabilities(pred, IDS)
    Image.fromarray(np.full(SHAPE, 7, np.uint8)).save(pred / "IDRiD_55_HE.tif")  # changed after the call
    assert int(maps[1][1].max()) == 7 and int(maps[-1][1].min()) == 7
    with pytest.raises(IndexError):
        maps[2]


def test_missing_and_bad_maps(lesions: tuple[Path, dict, dict]) -> None:
    pred, _, _ = lesions
    (pred / "IDRiD_56_SE.tif").unlink()
    with pytest.raises(DataError, match=r"IDRiD_56_SE\.tif is missing \(run `eyegc predict"):
        read_idrid_lesion_probabilities(pred, IDS)
    with pytest.raises(DataError, match="IDRiD_57"):
        read_idrid_lesion_masks(pred, ["IDRiD_57"])
    maps = read_idrid_lesion_probabilities(pred, ["IDRiD_55"], shapes=[(61, 90)])
    with pytest.raises(DataError, match=r"IDRiD_55_MA\.tif is 90x60 \(W x H\); its image is 90x61"):
        maps[0]
    Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(pred / "IDRiD_55_EX.tif")
    with pytest.raises(DataError, match="RGB image; IDRiD result maps are single-channel"):
        read_idrid_lesion_probabilities(pred, ["IDRiD_55"])[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / "IDRiD_55_EX.tif")
    with pytest.raises(DataError, match=r"IDRiD_55_EX\.tif is 10x10"):
        read_idrid_lesion_probabilities(pred, ["IDRiD_55"])[0]
    Image.fromarray(np.full(SHAPE, 3, np.uint8)).save(pred / MASKS_DIR / "IDRiD_55_HE.tif")
    with pytest.raises(DataError, match="a prediction mask holds only the values 0/255 or 0/1"):
        read_idrid_lesion_masks(pred, ["IDRiD_55"])
    with pytest.raises(DataError, match="prediction folder not found"):
        read_idrid_lesion_probabilities(pred / "absent", IDS)


def test_write_prediction_checks_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(4, H, W\)"):
        write_idrid_lesion_prediction(tmp_path, "IDRiD_55", np.zeros((3, 5, 5)), np.zeros((3, 5, 5)))


def test_optic_disc_channel(tmp_path: Path) -> None:
    keys = (*LESION_KEYS, "od")
    p = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    write_idrid_lesion_prediction(tmp_path, "IDRiD_55", p > 0.5, p, keys)
    assert (tmp_path / "IDRiD_55_OD.tif").is_file()
    assert read_idrid_lesion_probabilities(tmp_path, ["IDRiD_55"], keys)[0].shape == (5, 8, 8)


# -- the lesion submission zip ------------------------------------------------------------------


def test_zip_names_bytes_and_determinism(lesions: tuple[Path, dict, dict], tmp_path: Path) -> None:
    pred, probabilities, _ = lesions
    first = write_idrid_lesion_submission(pred, tmp_path / "a.zip")
    second = write_idrid_lesion_submission(pred, tmp_path / "b.zip", case_ids=list(reversed(IDS)))
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == [
            "1. Microaneurysms/IDRiD_55_MA.tif",
            "1. Microaneurysms/IDRiD_56_MA.tif",
            "2. Haemorrhages/IDRiD_55_HE.tif",
            "2. Haemorrhages/IDRiD_56_HE.tif",
            "3. Hard Exudates/IDRiD_55_EX.tif",
            "3. Hard Exudates/IDRiD_56_EX.tif",
            "4. Soft Exudates/IDRiD_55_SE.tif",
            "4. Soft Exudates/IDRiD_56_SE.tif",
        ]
        info = archive.getinfo("2. Haemorrhages/IDRiD_56_HE.tif")
        assert info.date_time == (2018, 4, 4, 0, 0, 0) and info.compress_type == zipfile.ZIP_STORED
        assert archive.read(info) == (pred / "IDRiD_56_HE.tif").read_bytes()
    # Evaluation can read the zip back: probabilities lazily, masks at 0.5.
    maps = read_idrid_lesion_probabilities(first, IDS)
    assert np.array_equal(maps[0], quantize_probabilities(probabilities["IDRiD_56"]))
    masks = read_idrid_lesion_masks(first, IDS)
    assert np.array_equal(masks[1], (quantize_probabilities(probabilities["IDRiD_55"]) >= 128).astype(np.uint8))


def test_zip_leaves_nothing_on_error(lesions: tuple[Path, dict, dict], tmp_path: Path) -> None:
    pred, _, _ = lesions
    out = tmp_path / "sub.zip"
    (pred / "IDRiD_56_EX.tif").unlink()
    with pytest.raises(SubmissionError, match=r"IDRiD_56_EX\.tif is missing"):
        write_idrid_lesion_submission(pred, out)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred / "IDRiD_56_EX.tif")
    with pytest.raises(SubmissionError, match="5x5"):
        write_idrid_lesion_submission(pred, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]
    with pytest.raises(SubmissionError, match="no probability maps"):
        write_idrid_lesion_submission(pred, out, case_ids=[])
    (pred / "IDRiD_56_EX.tif").unlink()
    write_idrid_lesion_submission(pred, out, case_ids=["IDRiD_55"])
    with pytest.raises(EyegcError, match="already exists"):
        write_idrid_lesion_submission(pred, out, case_ids=["IDRiD_55"])
    write_idrid_lesion_submission(pred, out, case_ids=["IDRiD_55"], overwrite=True)


# -- grading ------------------------------------------------------------------------------------

GRADES = {"IDRiD_010": (4, 2), "IDRiD_002": (0, 0), "IDRiD_001": (2, 1)}


@pytest.fixture
def grading_pred(tmp_path: Path) -> Path:
    pred = tmp_path / "pred"
    for case_id, (dr, dme) in GRADES.items():
        probabilities = np.zeros((2, 5), np.float32)
        probabilities[0, dr] = probabilities[1, dme] = 0.9
        write_classification_case(pred, case_id, GRADING_HEADS, np.array([dr, dme]), probabilities)
    return pred


def test_grading_csv_bytes_and_round_trip(grading_pred: Path, tmp_path: Path) -> None:
    out = write_idrid_grading_submission(grading_pred, tmp_path / "grades.csv")
    assert out.read_bytes() == (
        b"Image name,Retinopathy grade,Risk of macular edema\r\nIDRiD_001,2,1\r\nIDRiD_002,0,0\r\nIDRiD_010,4,2\r\n"
    )
    ids: Sequence[str] = ["IDRiD_010", "IDRiD_001"]
    grades, probabilities = read_idrid_grading_submission(out, ids)
    assert grades.tolist() == [[4, 2], [2, 1]]
    assert probabilities.shape == (2, 2, 5) and probabilities[0, 0, 4] == 1.0 and probabilities[0, 1].sum() == 1.0
    folder_grades, _ = read_idrid_grading_predictions(grading_pred, ids)
    csv_grades, _ = read_idrid_grading_predictions(out, ids)
    assert folder_grades.tolist() == csv_grades.tolist() == grades.tolist()


def test_grading_csv_in_the_label_files_columns(grading_pred: Path, tmp_path: Path) -> None:
    columns = parse_grading_labels(" Image No , DR grade ,Risk of DME \r\nIDRiD_001,1,0\r\n").columns
    out = write_idrid_grading_submission(grading_pred, tmp_path / "g.csv", columns=columns, case_ids=["IDRiD_002"])
    assert out.read_bytes() == b"Image No,DR grade,Risk of DME\r\nIDRiD_002,0,0\r\n"
    with pytest.raises(SubmissionError, match="three plain column names"):
        write_idrid_grading_submission(grading_pred, tmp_path / "h.csv", columns=("a", "b,c", "d"))


def test_grading_errors(grading_pred: Path, tmp_path: Path) -> None:
    out = tmp_path / "grades.csv"
    with pytest.raises(SubmissionError, match=r"IDRiD_003\.json: no prediction"):
        write_idrid_grading_submission(grading_pred, out, case_ids=["IDRiD_001", "IDRiD_003"])
    (grading_pred / "IDRiD_002.json").write_text("{not json")
    with pytest.raises(SubmissionError, match=r"IDRiD_002\.json"):
        write_idrid_grading_submission(grading_pred, out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pred"]
    with pytest.raises(SubmissionError, match="prediction folder not found"):
        write_idrid_grading_submission(tmp_path / "absent", out)
    out.write_bytes(b"Image name,Retinopathy grade,Risk of macular edema\r\nIDRiD_001,2,1\r\n")
    with pytest.raises(DataError, match="no row for IDRiD_002"):
        read_idrid_grading_submission(out, ["IDRiD_001", "IDRiD_002"])
    with pytest.raises(DataError, match="not found"):
        read_idrid_grading_predictions(tmp_path / "absent", ["IDRiD_001"])
