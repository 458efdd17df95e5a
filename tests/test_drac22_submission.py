"""The official DRAC22 submission zip: exact format, round trip, and validation before writing."""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from eyegc.challenges.drac22.layout import CLASS_FOLDERS
from eyegc.challenges.drac22.submission import (
    read_drac22_submission,
    write_drac22_prediction,
    write_drac22_submission,
)
from eyegc.common.errors import SubmissionError
from eyegc.common.imageio import write_png

IDS = ["1299", "086", "402"]  # deliberately not in numeric order


@pytest.fixture
def predictions(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred"
    masks = {}
    for i, case_id in enumerate(IDS):
        m = np.zeros((3, 1024, 1024), dtype=np.uint8)
        m[:, i * 100 : i * 100 + 50, :30] = 1  # a per-case signature to check slice order
        m[1] |= (rng.random((1024, 1024)) > 0.99).astype(np.uint8)
        masks[case_id] = m
        write_drac22_prediction(pred, case_id, m)
    return pred, masks


def test_zip_holds_exactly_the_official_files(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    out = write_drac22_submission(pred, tmp_path / "sub.zip", team="Team_X")
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["Team_X/1.nii.gz", "Team_X/2.nii.gz", "Team_X/3.nii.gz"]
        raw = gzip.decompress(archive.read("Team_X/2.nii.gz"))
    # NIfTI-1 header: sizeof_hdr 348, dim = [3, 1024, 1024, N], datatype 2 (uint8), bitpix 8
    assert struct.unpack("<i", raw[:4])[0] == 348
    dims = struct.unpack("<8h", raw[40:56])
    assert dims[:4] == (3, 1024, 1024, 3)
    datatype, bitpix = struct.unpack("<hh", raw[70:74])
    assert (datatype, bitpix) == (2, 8)
    pixdim = struct.unpack("<8f", raw[76:108])
    assert pixdim[1:4] == (1.0, 1.0, 1.0)


def test_round_trip_in_numeric_order(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, masks = predictions
    out = write_drac22_submission(pred, tmp_path / "sub.zip", team="T")
    with zipfile.ZipFile(out) as archive:
        (tmp_path / "1.nii.gz").write_bytes(archive.read("T/1.nii.gz"))
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "1.nii.gz")))
    assert volume.dtype == np.uint8 and volume.shape == (3, 1024, 1024)
    assert set(np.unique(volume)) == {0, 1}
    for slice_index, case_id in enumerate(["086", "402", "1299"]):  # 086 < 402 < 1299
        assert np.array_equal(volume[slice_index], masks[case_id][0])
    back = read_drac22_submission(out, IDS)
    for case_id, mask in zip(IDS, back, strict=True):
        assert np.array_equal(mask, masks[case_id])


def test_same_masks_give_the_same_zip_bytes(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    a = write_drac22_submission(pred, tmp_path / "a.zip", team="T").read_bytes()
    b = write_drac22_submission(pred, tmp_path / "b.zip", team="T").read_bytes()
    assert a == b


def _assert_refused(pred: Path, out: Path, match: str) -> None:
    with pytest.raises(SubmissionError, match=match):
        write_drac22_submission(pred, out, team="T")
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_wrong_size_is_refused_and_nothing_written(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    write_png(pred / CLASS_FOLDERS["nv"] / "402.png", np.zeros((512, 1024), dtype=np.uint8))
    _assert_refused(pred, tmp_path / "sub.zip", "402.png")


def test_missing_class_folder_is_refused(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    for p in (pred / CLASS_FOLDERS["npa"]).iterdir():
        p.unlink()
    (pred / CLASS_FOLDERS["npa"]).rmdir()
    _assert_refused(pred, tmp_path / "sub.zip", "Nonperfusion")


def test_missing_image_is_refused(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    (pred / CLASS_FOLDERS["irma"] / "086.png").unlink()
    _assert_refused(pred, tmp_path / "sub.zip", "case 086")


def test_non_binary_mask_is_refused(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    grey = np.zeros((1024, 1024), dtype=np.uint8)
    grey[:10, :10] = 128
    write_png(pred / CLASS_FOLDERS["irma"] / "1299.png", grey)
    _assert_refused(pred, tmp_path / "sub.zip", "a prediction mask holds only the values 0/255 or 0/1")


def test_bad_team_name_is_refused(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    with pytest.raises(SubmissionError, match="team name"):
        write_drac22_submission(pred, tmp_path / "sub.zip", team="a/b")


def test_existing_zip_is_kept_without_overwrite(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    out = tmp_path / "sub.zip"
    out.write_bytes(b"old")
    with pytest.raises(Exception, match="already exists"):
        write_drac22_submission(pred, out, team="T")
    assert out.read_bytes() == b"old"
    write_drac22_submission(pred, out, team="T", overwrite=True)
    assert zipfile.is_zipfile(out)


def test_submission_with_wrong_slice_count_is_refused(predictions: tuple[Path, dict], tmp_path: Path) -> None:
    pred, _ = predictions
    out = write_drac22_submission(pred, tmp_path / "sub.zip", team="T")
    with pytest.raises(SubmissionError, match="expected 4 slices"):
        read_drac22_submission(out, [*IDS, "999"])


@pytest.mark.parametrize(
    ("values", "shown"),
    [((0, 2), "0, 2"), ((0.0, 0.5), "0.0, 0.5"), ((-1, 0), "-1, 0")],
)
def test_submission_volume_with_other_values_is_refused(
    predictions: tuple[Path, dict], tmp_path: Path, values: tuple, shown: str
) -> None:
    pred, _ = predictions
    out = write_drac22_submission(pred, tmp_path / "sub.zip", team="T")
    volume = np.full((len(IDS), 1024, 1024), values[0], dtype=np.float32 if isinstance(values[0], float) else np.int16)
    volume[:, :5, :5] = values[1]
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "2.nii.gz"))
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(edited, "w") as target:
        for name in source.namelist():
            data = (tmp_path / "2.nii.gz").read_bytes() if name == "T/2.nii.gz" else source.read(name)
            target.writestr(name, data)
    expected = r"T/2\.nii\.gz in .*edited\.zip: a submission volume holds only"
    with pytest.raises(SubmissionError, match=expected) as error:
        read_drac22_submission(edited, IDS)
    assert f"this one holds {shown}" in str(error.value)
