"""Tests of the synthetic DRAC22 Task 1 data set (layout, format, determinism, learnability)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.drac22.layout import CLASS_FOLDERS, gt_class_dir, image_dir
from eyegc.challenges.drac22.sample_data import _case_classes, make_drac22_sample_data
from PIL import Image
from scipy import ndimage

SPLITS = ("train", "test")


def _make(root: Path, cases: int, test_cases: int, seed: int) -> Path:
    root.mkdir()
    make_drac22_sample_data(root, cases=cases, test_cases=test_cases, seed=seed)
    return root


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("drac22") / "data", cases=6, test_cases=3, seed=0)


@pytest.fixture(scope="module")
def fewer_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("drac22") / "data", cases=2, test_cases=3, seed=0)


def _names(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in image_dir(root, split).glob("*.png"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _masks(root: Path, split: str, name: str) -> dict[str, np.ndarray]:
    paths = {key: gt_class_dir(root, split, key) / name for key in CLASS_FOLDERS}
    return {key: _load(p) > 0 for key, p in paths.items() if p.exists()}


def test_exact_folder_layout(sample: Path) -> None:
    seg = sample / "A. Segmentation"
    assert sorted(p.name for p in sample.iterdir()) == ["A. Segmentation"]
    assert sorted(p.name for p in seg.iterdir()) == ["1. Original Images", "2. Groundtruths"]
    for top in ("1. Original Images", "2. Groundtruths"):
        assert sorted(p.name for p in (seg / top).iterdir()) == ["a. Training Set", "b. Testing Set"]
    for split_dir in ("a. Training Set", "b. Testing Set"):
        assert sorted(p.name for p in (seg / "2. Groundtruths" / split_dir).iterdir()) == [
            "1. Intraretinal Microvascular Abnormalities",
            "2. Nonperfusion Areas",
            "3. Neovascularization",
        ]
    assert len(_names(sample, "train")) == 6
    assert len(_names(sample, "test")) == 3


def test_image_and_mask_format(sample: Path) -> None:
    for split in SPLITS:
        for name in _names(sample, split):
            with Image.open(image_dir(sample, split) / name) as image:
                assert image.format == "PNG" and image.mode == "L" and image.size == (1024, 1024)
            assert _load(image_dir(sample, split) / name).dtype == np.uint8
            for key in CLASS_FOLDERS:
                path = gt_class_dir(sample, split, key) / name
                if not path.exists():
                    continue
                with Image.open(path) as mask:
                    assert mask.mode == "L" and mask.size == (1024, 1024)
                values = set(np.unique(_load(path)).tolist())
                assert values <= {0, 255} and 255 in values, path
        for key in CLASS_FOLDERS:
            orphans = {p.name for p in gt_class_dir(sample, split, key).glob("*.png")}
            assert orphans <= set(_names(sample, split))


def test_names(sample: Path) -> None:
    train = [p.removesuffix(".png") for p in _names(sample, "train")]
    test = [p.removesuffix(".png") for p in _names(sample, "test")]
    assert {"086", "402", "1299"} <= set(test)
    for stem in train + test:
        assert stem.isdigit() and len(stem) >= 3 and stem == f"{int(stem):03d}"
        assert 1 <= int(stem) <= 1500
    numbers = [int(s) for s in train + test]
    assert len(set(numbers)) == len(numbers)
    assert min(int(s) for s in train) < 100 and max(int(s) for s in train) >= 1000


def test_absent_masks_and_class_coverage(sample: Path) -> None:
    absent = 0
    for split, minimum in (("train", 2), ("test", 1)):
        names = _names(sample, split)
        for key in CLASS_FOLDERS:
            present = sum((gt_class_dir(sample, split, key) / n).exists() for n in names)
            assert present >= minimum, (split, key)
            absent += len(names) - present
    assert absent > 0


def test_class_rates_follow_real_data() -> None:
    counts = dict.fromkeys(CLASS_FOLDERS, 0)
    n = 2000
    for index in range(10, 10 + n):
        for key in _case_classes(np.random.default_rng([0, 0, index]), "train", index):
            counts[key] += 1
    rates = {key: c / n for key, c in counts.items()}
    assert rates["irma"] == pytest.approx(0.65, abs=0.05)
    assert rates["npa"] == pytest.approx(0.80, abs=0.05)
    assert rates["nv"] == pytest.approx(0.35, abs=0.05)


def test_irma_overlaps_npa_somewhere(sample: Path) -> None:
    overlaps = 0
    for split in SPLITS:
        for name in _names(sample, split):
            masks = _masks(sample, split, name)
            if "irma" in masks and "npa" in masks:
                overlaps += int((masks["irma"] & masks["npa"]).any())
    assert overlaps >= 1


def test_deterministic_and_prefix_stable(sample: Path, fewer_cases: Path) -> None:
    full, few = _files(sample), _files(fewer_cases)
    test_part = {k: v for k, v in full.items() if "b. Testing Set" in k}
    # The test split does not depend on `cases`, byte for byte.
    assert {k: v for k, v in few.items() if "b. Testing Set" in k} == test_part
    # The first training cases are the same files whatever `cases` is, so a rerun is identical.
    train_few = {k: v for k, v in few.items() if "a. Training Set" in k}
    assert train_few and all(full.get(k) == v for k, v in train_few.items())


def test_same_seed_same_bytes_other_seed_differs(sample: Path, tmp_path: Path) -> None:
    first = _make(tmp_path / "a", cases=1, test_cases=1, seed=1)
    again = _make(tmp_path / "b", cases=1, test_cases=1, seed=1)
    assert _files(first) == _files(again)
    name = "086.png"
    assert (image_dir(first, "test") / name).read_bytes() != (image_dir(sample, "test") / name).read_bytes()
    train_images = {p.read_bytes() for p in image_dir(sample, "train").glob("*.png")}
    assert (image_dir(first, "train") / _names(first, "train")[0]).read_bytes() not in train_images


def test_lesions_are_visible_where_masks_are(sample: Path) -> None:
    checked = dict.fromkeys(CLASS_FOLDERS, 0)
    for split in SPLITS:
        for name in _names(sample, split):
            image = _load(image_dir(sample, split) / name).astype(float)
            masks = _masks(sample, split, name)
            if "nv" in masks:
                assert image[masks["nv"]].mean() > image.mean() + 60, name
                checked["nv"] += 1
            if "irma" in masks:
                assert image[masks["irma"]].mean() > image.mean() + 30, name
                checked["irma"] += 1
            if "npa" in masks:
                npa = masks["npa"]
                ring = ndimage.binary_dilation(npa, iterations=20) & ~ndimage.binary_dilation(npa, iterations=3)
                assert image[npa].mean() < image[ring].mean() - 8, name
                checked["npa"] += 1
    assert all(checked.values())


def test_rejects_negative_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_drac22_sample_data(tmp_path, cases=-1)
