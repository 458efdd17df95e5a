"""The DRIVE layout reader and file readers, on synthetic data and (when present) the real training set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.drive.layout import (
    IMAGE_SIZE,
    estimate_fov,
    fov_path,
    list_drive_cases,
    read_drive_fov,
    read_drive_image,
    read_drive_mask,
)
from eyegc.challenges.drive.sample_data import make_drive_sample_data
from eyegc.common.errors import DataError
from PIL import Image

REAL_DRIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drive") / "DRIVE"
    root.mkdir()
    make_drive_sample_data(root, cases=3, test_cases=2, seed=0)
    return root


@pytest.fixture
def copy(sample: Path, tmp_path: Path) -> Path:
    """A writable copy of the sample data set, to break."""
    return Path(shutil.copytree(sample, tmp_path / "DRIVE"))


def test_lists_cases_in_number_order_with_labels(sample: Path) -> None:
    train = list_drive_cases(sample, "train")
    assert [c.case_id for c in train] == ["21_training", "22_training", "23_training"]
    first = train[0]
    assert first.image == sample / "training" / "images" / "21_training.tif"
    assert first.labels == {
        "vessel": sample / "training" / "1st_manual" / "21_manual1.gif",
        "fov": sample / "training" / "mask" / "21_training_mask.gif",
    }
    assert fov_path(first) == sample / "training" / "mask" / "21_training_mask.gif"
    test = list_drive_cases(sample, "test")
    assert [c.case_id for c in test] == ["01_test", "02_test"]
    assert test[1].labels is not None and test[1].labels["vessel"].name == "02_manual1.gif"


def test_root_may_be_the_split_folder_itself(sample: Path) -> None:
    direct = list_drive_cases(sample / "training", "train")
    assert [c.case_id for c in direct] == ["21_training", "22_training", "23_training"]
    with pytest.raises(DataError, match="split folder"):
        list_drive_cases(sample / "training", "test")


def test_root_without_split_folders_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"training/.*test/"):
        list_drive_cases(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        list_drive_cases(tmp_path, "validation")


def test_empty_images_folder_is_refused(copy: Path) -> None:
    for path in (copy / "training" / "images").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"holds no \.tif images"):
        list_drive_cases(copy, "train")


def test_missing_manual_names_the_expected_file(copy: Path) -> None:
    (copy / "training" / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DataError, match=r"22_training\.tif.*1st_manual/22_manual1\.gif"):
        list_drive_cases(copy, "train")
    unlabelled = list_drive_cases(copy, "train", require_labels=False)
    assert [c.labels is None for c in unlabelled] == [False, True, False]


def test_unlabelled_split(copy: Path) -> None:
    shutil.rmtree(copy / "test" / "1st_manual")
    with pytest.raises(DataError, match="ground-truth folder"):
        list_drive_cases(copy, "test")
    cases = list_drive_cases(copy, "test", require_labels=False)
    assert [c.labels for c in cases] == [None, None]
    # The FOV is still found from the image's location.
    assert fov_path(cases[0]) == copy / "test" / "mask" / "01_test_mask.gif"
    assert read_drive_fov(cases[0]).shape == IMAGE_SIZE


def test_badly_named_image_is_refused(copy: Path) -> None:
    shutil.copy(copy / "training" / "images" / "21_training.tif", copy / "training" / "images" / "scan.tif")
    with pytest.raises(DataError, match=r"scan\.tif.*NN_training\.tif"):
        list_drive_cases(copy, "train")


def test_image_readers(sample: Path) -> None:
    case = list_drive_cases(sample, "train")[0]
    rgb = read_drive_image(case.image)
    green = read_drive_image(case.image, channels="green")
    assert rgb.shape == (3, *IMAGE_SIZE) and rgb.dtype == np.uint8
    assert green.shape == (1, *IMAGE_SIZE) and np.array_equal(green[0], rgb[1])
    vessel = read_drive_mask(case.labels["vessel"])
    assert vessel.shape == IMAGE_SIZE and vessel.dtype == np.uint8 and set(np.unique(vessel)) == {0, 1}


def test_wrong_sizes_name_the_file(copy: Path) -> None:
    image = copy / "training" / "images" / "21_training.tif"
    Image.open(image).crop((0, 0, 500, 584)).save(image)
    with pytest.raises(DataError, match=r"21_training\.tif is 500x584 .*565x584"):
        read_drive_image(image)
    mask = copy / "training" / "1st_manual" / "22_manual1.gif"
    Image.open(mask).resize((565, 600)).save(mask)
    with pytest.raises(DataError, match=r"22_manual1\.gif is 565x600"):
        read_drive_mask(mask)


def test_grey_image_and_corrupt_gif_are_refused(copy: Path) -> None:
    image = copy / "training" / "images" / "21_training.tif"
    Image.open(image).convert("L").save(image)
    with pytest.raises(DataError, match="8-bit RGB"):
        read_drive_image(image)
    gif = copy / "training" / "mask" / "22_training_mask.gif"
    gif.write_bytes(gif.read_bytes()[:40])
    with pytest.raises(DataError, match=r"22_training_mask\.gif"):
        read_drive_mask(gif)


def test_missing_fov_is_estimated_or_refused(copy: Path) -> None:
    case = list_drive_cases(copy, "train")[1]
    truth = read_drive_fov(case)
    fov_path(case).unlink()
    case = list_drive_cases(copy, "train")[1]
    assert case.labels is not None and case.labels["fov"] is None
    estimated = read_drive_fov(case)
    assert estimated.dtype == bool and np.mean(estimated != truth) < 0.005
    with pytest.raises(DataError, match=r"22_training_mask\.gif"):
        read_drive_fov(case, fov_missing="error")


def test_estimate_fov_keeps_the_largest_bright_region() -> None:
    image = np.zeros((3, 60, 60), np.uint8)
    image[0, 10:50, 10:50] = 200
    image[0, 20:25, 20:25] = 5  # a dark spot inside (a lesion) is filled
    image[0, 0:4, 55:59] = 200  # a bright speck outside is dropped
    fov = estimate_fov(image)
    assert fov[12:48, 12:48].all()  # the opening only rounds the square's corners
    assert not fov[:10].any() and not fov[:, 50:].any() and fov.sum() > 40 * 40 - 20


def _real() -> Path:
    if not (REAL_DRIVE / "training" / "images").is_dir():
        pytest.skip(f"real DRIVE data not found at {REAL_DRIVE}")
    return REAL_DRIVE


@pytest.mark.real_data
def test_real_training_set() -> None:
    root = _real()
    cases = list_drive_cases(root, "train")
    assert [c.case_id for c in cases] == [f"{i}_training" for i in range(21, 41)]
    assert len(list_drive_cases(root / "training", "train")) == 20
    for case in cases[:5]:
        image = read_drive_image(case.image)
        assert image.shape == (3, 584, 565) and image.dtype == np.uint8
        vessel = read_drive_mask(case.labels["vessel"])
        assert set(np.unique(vessel)) == {0, 1} and 0.05 < vessel.mean() < 0.15
        fov = read_drive_fov(case)
        assert 0.65 < fov.mean() < 0.72
        # The red-channel estimate reproduces the official FOV to within 1% of pixels.
        assert np.mean(estimate_fov(image) != fov) < 0.01
