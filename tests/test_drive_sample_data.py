"""The synthetic DRIVE data set: official layout and file formats, determinism, image/mask agreement."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.drive.layout import (
    estimate_fov,
    list_drive_cases,
    read_drive_fov,
    read_drive_image,
    read_drive_mask,
)
from eyegc.challenges.drive.sample_data import make_drive_case, make_drive_sample_data
from PIL import Image

REAL_DRIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "DRIVE"


def _make(root: Path, cases: int, test_cases: int, seed: int) -> Path:
    root.mkdir(parents=True)
    make_drive_sample_data(root, cases=cases, test_cases=test_cases, seed=seed)
    return root


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("drive") / "data", cases=3, test_cases=2, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_exact_layout_and_names(sample: Path) -> None:
    assert sorted(_files(sample)) == [
        "test/1st_manual/01_manual1.gif",
        "test/1st_manual/02_manual1.gif",
        "test/images/01_test.tif",
        "test/images/02_test.tif",
        "test/mask/01_test_mask.gif",
        "test/mask/02_test_mask.gif",
        "training/1st_manual/21_manual1.gif",
        "training/1st_manual/22_manual1.gif",
        "training/1st_manual/23_manual1.gif",
        "training/images/21_training.tif",
        "training/images/22_training.tif",
        "training/images/23_training.tif",
        "training/mask/21_training_mask.gif",
        "training/mask/22_training_mask.gif",
        "training/mask/23_training_mask.gif",
    ]


def test_file_formats_like_the_real_ones(sample: Path) -> None:
    image = Image.open(sample / "training" / "images" / "21_training.tif")
    assert (image.format, image.mode, image.size) == ("TIFF", "RGB", (565, 584))
    assert image.info.get("compression") == "tiff_lzw"
    for gif in ("training/1st_manual/21_manual1.gif", "training/mask/21_training_mask.gif"):
        mask = Image.open(sample / gif)
        assert (mask.format, mask.mode, mask.size) == ("GIF", "L", (565, 584))
        assert set(np.unique(np.asarray(mask))) == {0, 255}


@pytest.mark.real_data
def test_formats_match_the_real_files(sample: Path) -> None:
    if not (REAL_DRIVE / "training" / "images").is_dir():
        pytest.skip(f"real DRIVE data not found at {REAL_DRIVE}")
    for relative in ("images/21_training.tif", "1st_manual/21_manual1.gif", "mask/21_training_mask.gif"):
        real = Image.open(REAL_DRIVE / "training" / relative)
        ours = Image.open(sample / "training" / relative)
        assert (ours.format, ours.mode, ours.size) == (real.format, real.mode, real.size)
        assert ours.info.get("compression") == real.info.get("compression")
        if relative.endswith(".gif"):
            assert set(np.unique(np.asarray(ours))) == set(np.unique(np.asarray(real))) == {0, 255}


def test_readable_by_the_layout_reader(sample: Path) -> None:
    for split, count in (("train", 3), ("test", 2)):
        cases = list_drive_cases(sample, split)
        assert len(cases) == count
        for case in cases:
            image = read_drive_image(case.image)
            vessels = read_drive_mask(case.labels["vessel"]).astype(bool)
            fov = read_drive_fov(case, fov_missing="error")
            assert 0.66 < fov.mean() < 0.72  # a ~540 px circle, as in DRIVE
            assert 0.04 < vessels.mean() < 0.15
            assert not (vessels & ~fov).any()
            # Vessels are darker than the background, most clearly in green.
            background = fov & ~vessels
            green_drop = image[1][background].mean() - image[1][vessels].mean()
            assert green_drop > 15
            assert green_drop > image[0][background].mean() - image[0][vessels].mean()
            # The estimated FOV matches the drawn one.
            assert np.mean(estimate_fov(image) != fov) < 0.002


def test_deterministic_and_per_case(sample: Path, tmp_path: Path) -> None:
    again = _make(tmp_path / "again", cases=3, test_cases=2, seed=0)
    assert _files(again) == _files(sample)
    fewer = _make(tmp_path / "fewer", cases=1, test_cases=2, seed=0)
    assert _files(fewer)["training/images/21_training.tif"] == _files(sample)["training/images/21_training.tif"]
    assert _files(fewer)["test/images/02_test.tif"] == _files(sample)["test/images/02_test.tif"]
    other = _make(tmp_path / "other", cases=1, test_cases=0, seed=1)
    assert _files(other)["training/images/21_training.tif"] != _files(sample)["training/images/21_training.tif"]
    assert not (other / "test").exists()


def test_limits() -> None:
    with pytest.raises(ValueError, match="20 images per split"):
        make_drive_sample_data(Path("unused"), cases=21, test_cases=0)
    with pytest.raises(ValueError, match=">= 0"):
        make_drive_sample_data(Path("unused"), cases=-1, test_cases=0)


def test_fast_enough() -> None:
    start = time.perf_counter()
    for i in range(3):
        make_drive_case(np.random.default_rng([0, 0, i]))
    assert (time.perf_counter() - start) / 3 < 0.6  # ~0.1 s on one core; generous for slow CI
