"""GOALS prediction folders and the submission zip: contents, round trip, determinism, validation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.goals.submission import (
    read_goals_classification_csv,
    read_goals_glaucoma_submission,
    read_goals_layer_predictions,
    write_goals_layer_prediction,
    write_goals_submission,
)
from eyegc.common.classification import write_classification_case
from eyegc.common.errors import DataError, EyegcError
from eyegc.common.plugin import ClassSpec
from PIL import Image

IDS = ["0103", "0101", "0102"]  # deliberately unsorted
LIKELIHOOD = {"0101": 0.25, "0102": 0.8731, "0103": 0.5}
GLAUCOMA_HEADS = (ClassSpec(key="glaucoma", name="Glaucoma", num_classes=2),)


def _index_map(seed: int) -> np.ndarray:
    index = np.zeros((1, 800, 1100), np.uint8)
    index[0, 300 + seed : 340, :] = 1
    index[0, 340:370, :] = 2
    index[0, 480 : 600 - seed, :] = 3
    return index


@pytest.fixture
def predictions(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    layers, glaucoma = tmp_path / "layers", tmp_path / "glaucoma"
    maps = {}
    for n, case_id in enumerate(IDS):
        maps[case_id] = _index_map(n)
        write_goals_layer_prediction(layers, case_id, maps[case_id])
        p = LIKELIHOOD[case_id]
        write_classification_case(glaucoma, case_id, GLAUCOMA_HEADS, np.array([int(p >= 0.5)]), np.array([[1 - p, p]]))
    return layers, glaucoma, maps


def test_prediction_folder_holds_official_pngs_and_reads_back(predictions: tuple[Path, Path, dict]) -> None:
    layers, _, maps = predictions
    png = np.asarray(Image.open(layers / "Layer_Segmentations" / "0101.png"))
    assert png.shape == (800, 1100) and set(np.unique(png).tolist()) == {0, 80, 160, 255}
    read = read_goals_layer_predictions(layers, IDS)
    assert all(np.array_equal(a, maps[c]) for a, c in zip(read, IDS, strict=True))
    with pytest.raises(DataError, match="0999"):
        read_goals_layer_predictions(layers, ["0999"])


def test_zip_contents_and_csv_rows(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, glaucoma, _ = predictions
    out = write_goals_submission(layers, tmp_path / "sub.zip", glaucoma_pred=glaucoma)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == [
            "Classification_Results.csv",
            "Layer_Segmentations/0101.png",
            "Layer_Segmentations/0102.png",
            "Layer_Segmentations/0103.png",
        ]
        text = archive.read("Classification_Results.csv").decode()
        assert all(info.date_time == (2022, 9, 1, 0, 0, 0) for info in archive.infolist())
    assert text == "ImgName,GC_Pred\n0101.png,0.250000\n0102.png,0.873100\n0103.png,0.500000\n"


def test_zip_round_trip_and_identical_bytes(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, glaucoma, maps = predictions
    first = write_goals_submission(None, tmp_path / "a.zip", layers_pred=layers, glaucoma_pred=glaucoma)
    second = write_goals_submission(glaucoma, tmp_path / "b.zip", layers_pred=layers)
    assert first.read_bytes() == second.read_bytes()
    back = read_goals_layer_predictions(first, IDS)
    assert all(np.array_equal(a, maps[c]) for a, c in zip(back, IDS, strict=True))
    probabilities = read_goals_classification_csv(first, IDS)
    assert probabilities.shape == (3, 1, 2)
    assert probabilities[:, 0, 1] == pytest.approx([LIKELIHOOD[c] for c in IDS])
    grades, _ = read_goals_glaucoma_submission(first, IDS)
    assert grades[:, 0].tolist() == [1, 0, 1]  # 0.5, 0.25, 0.8731 at threshold 0.5


def test_single_part_submissions_header_and_labels(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, glaucoma, _ = predictions
    only_layers = write_goals_submission(layers, tmp_path / "layers.zip")
    with zipfile.ZipFile(only_layers) as archive:
        assert "Classification_Results.csv" not in archive.namelist()
    only_csv = write_goals_submission(
        glaucoma, tmp_path / "cls.zip", header=("ImgName", "GC Pred"), glaucoma_value="label"
    )
    with zipfile.ZipFile(only_csv) as archive:
        assert archive.namelist() == ["Classification_Results.csv"]
        rows = archive.read("Classification_Results.csv").decode().splitlines()
    assert rows == ["ImgName,GC Pred", "0101.png,0.000000", "0102.png,1.000000", "0103.png,1.000000"]


def test_csv_reader_accepts_bare_names_and_rejects_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "Classification_Results.csv"
    path.write_text("ImgName,Pred\n101,0.1\n0102,0.9\n")
    assert read_goals_classification_csv(path, ["0101", "0102"])[:, 0, 1] == pytest.approx([0.1, 0.9])
    with pytest.raises(DataError, match="no row for case"):
        read_goals_classification_csv(path, ["0103"])
    path.write_text("ImgName,Pred\n0101.png,1.7\n")
    with pytest.raises(DataError, match=r"row 2: glaucoma likelihood 1.7"):
        read_goals_classification_csv(path, ["0101"])


def test_bad_png_stops_the_submission_and_leaves_nothing(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, glaucoma, _ = predictions
    bad = np.full((800, 1100), 255, np.uint8)
    bad[0, 0] = 42
    Image.fromarray(bad).save(layers / "Layer_Segmentations" / "0102.png")
    out = tmp_path / "sub.zip"
    with pytest.raises(DataError, match=r"0102\.png.*\[42\]"):
        write_goals_submission(layers, out, glaucoma_pred=glaucoma)
    Image.fromarray(np.full((400, 550), 255, np.uint8)).save(layers / "Layer_Segmentations" / "0102.png")
    with pytest.raises(DataError, match=r"0102\.png is 550x400.*1100x800"):
        write_goals_submission(layers, out)
    assert not out.exists() and not list(tmp_path.glob(".sub.zip*"))


def test_mismatched_parts_and_existing_output(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, glaucoma, _ = predictions
    (glaucoma / "0103.json").unlink()
    with pytest.raises(DataError, match=r"different images \(layers only: \['0103'\]"):
        write_goals_submission(layers, tmp_path / "sub.zip", glaucoma_pred=glaucoma)
    with pytest.raises(DataError, match="no glaucoma prediction for case 0103"):
        write_goals_submission(layers, tmp_path / "sub.zip", glaucoma_pred=glaucoma, case_ids=IDS)
    out = write_goals_submission(layers, tmp_path / "sub.zip")
    with pytest.raises(EyegcError, match="already exists"):
        write_goals_submission(layers, out)
    with pytest.raises(DataError, match="holds neither"):
        write_goals_submission(tmp_path, tmp_path / "other.zip")


def test_zip_with_a_top_folder_reads_back(predictions: tuple[Path, Path, dict], tmp_path: Path) -> None:
    layers, _, maps = predictions
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for case_id in IDS:
            data = (layers / "Layer_Segmentations" / f"{case_id}.png").read_bytes()
            archive.writestr(f"Team/Layer_Segmentations/{case_id}.png", data)
    path = tmp_path / "team.zip"
    path.write_bytes(buffer.getvalue())
    back = read_goals_layer_predictions(path, IDS)
    assert np.array_equal(back[1], maps[IDS[1]])


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"PK\x03\x04 a zip", "is a zip archive, not a CSV file"), (b"\x00\x01\x02", "is a binary file, not a CSV file")],
)
def test_a_classification_csv_that_is_no_text_is_one_line(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "sub.csv"  # e.g. the zip `eyegc submission` writes, saved under a .csv name
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{path} {says}"):
        read_goals_glaucoma_submission(path, ["0101"])
