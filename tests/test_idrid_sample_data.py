"""The synthetic IDRiD data sets: layout, file formats, masks tied to the lesions, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.idrid.layout import (
    GRADING_COLUMNS,
    LESION_FOLDERS,
    LESION_KEYS,
    grading_image_dir,
    grading_label_file,
    lesion_gt_dir,
    lesion_image_dir,
    list_idrid_grading_cases,
    list_idrid_lesion_cases,
    read_grading_labels,
    read_idrid_mask,
)
from eyegc.challenges.idrid.sample_data import (
    _Fundus,
    _grading_counts,
    make_idrid_grading_sample_data,
    make_idrid_sample_data,
)
from PIL import Image
from scipy import ndimage

REAL_MASK = (
    Path(__file__).resolve().parents[2]
    / "shared/data/IDRiD/A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/1. Microaneurysms"
    / "IDRiD_01_MA.tif"
)


def _make(root: Path, **kwargs: object) -> Path:
    root.mkdir(parents=True)
    make_idrid_sample_data(root, **kwargs)  # type: ignore[arg-type]
    return root


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("idrid") / "data", cases=4, test_cases=2, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_official_layout_and_names(sample: Path) -> None:
    assert sorted(p.name for p in lesion_image_dir(sample, "train").iterdir()) == [
        "IDRiD_01.jpg",
        "IDRiD_02.jpg",
        "IDRiD_03.jpg",
        "IDRiD_04.jpg",
    ]
    assert sorted(p.name for p in lesion_image_dir(sample, "test").iterdir()) == ["IDRiD_55.jpg", "IDRiD_56.jpg"]
    for split in ("train", "test"):
        folders = sorted(p.name for p in lesion_gt_dir(sample, split).iterdir())
        assert folders == [folder for folder, _ in LESION_FOLDERS.values()]
    se = lesion_gt_dir(sample, "train", "se")
    assert (se / "IDRiD_01_SE.tif").is_file() and not (se / "IDRiD_02_SE.tif").exists()
    assert (lesion_gt_dir(sample, "test", "se") / "IDRiD_55_SE.tif").is_file()
    assert not (lesion_gt_dir(sample, "test", "se") / "IDRiD_56_SE.tif").exists()
    for key in ("ma", "he", "ex", "od"):
        assert len(list(lesion_gt_dir(sample, "train", key).glob("*.tif"))) == 4


def test_file_formats_mimic_the_official_ones(sample: Path) -> None:
    with Image.open(lesion_image_dir(sample, "train") / "IDRiD_01.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1072, 712))
    with Image.open(lesion_gt_dir(sample, "train", "ex") / "IDRiD_01_EX.tif") as mask:
        ours = (mask.format, mask.mode, mask.tag_v2.get(262), mask.tag_v2.get(258), mask.getpalette()[:6])
        assert set(np.unique(np.asarray(mask)).tolist()) == {0, 1}
    assert ours == ("TIFF", "P", 3, (1,), [0, 0, 0, 255, 0, 0])
    if REAL_MASK.is_file():  # the organisers' own mask, when the real data is at hand
        with Image.open(REAL_MASK) as real:
            assert ours == (real.format, real.mode, real.tag_v2.get(262), real.tag_v2.get(258), real.getpalette()[:6])


def test_masks_are_tied_to_the_drawn_lesions(sample: Path) -> None:
    cases = list_idrid_lesion_cases(sample, "train", classes=(*LESION_KEYS, "od"))
    for case in cases:
        image = np.asarray(Image.open(case.image)).astype(np.float32)
        assert case.labels is not None
        masks = {k: read_idrid_mask(p, image.shape[:2]) > 0 for k, p in case.labels.items() if p is not None}
        assert sum(m.astype(int) for m in masks.values()).max() == 1  # classes never overlap
        ring_of = {
            k: ndimage.binary_dilation(m, iterations=6) & ~ndimage.binary_dilation(m, iterations=3)
            for k, m in masks.items()
        }
        for key, mask in masks.items():
            inside = image[mask].mean(axis=0)
            around = image[ring_of[key]].mean(axis=0)
            if key in ("ma", "he"):  # dark red: darker than the retina around them
                assert inside.sum() < around.sum() - 30, key
            elif key == "ex":  # bright yellow: much greener than the orange retina
                assert inside[1] > around[1] + 60 and inside[0] > 200, key
            else:  # soft exudates and the optic disc: pale and bright
                assert inside.sum() > around.sum() + 60, key


def test_lesion_sizes(sample: Path) -> None:
    case = list_idrid_lesion_cases(sample, "train")[0]
    assert case.labels is not None
    labels, count = ndimage.label(read_idrid_mask(case.labels["ma"]))
    diameters = 2 * np.sqrt(np.bincount(labels.ravel())[1:] / np.pi)
    assert count >= 5 and diameters.min() >= 2.5 and diameters.max() <= 9.0
    he = read_idrid_mask(case.labels["he"])
    assert he.sum() / ndimage.label(he)[1] > 4 * np.pi * 2.5**2  # haemorrhages are larger blobs


def test_deterministic_and_independent_of_case_count(sample: Path, tmp_path: Path) -> None:
    again = _make(tmp_path / "again", cases=4, test_cases=2, seed=3)
    assert _files(again) == _files(sample)
    fewer = _make(tmp_path / "fewer", cases=2, test_cases=2, seed=3)
    files = _files(fewer)
    reference = _files(sample)
    assert files and all(reference[name] == data for name, data in files.items())
    other = _make(tmp_path / "other", cases=1, test_cases=0, seed=4)
    name = "A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg"
    assert _files(other)[name] != reference[name]


def test_without_optic_disc_and_limits(tmp_path: Path) -> None:
    root = _make(tmp_path / "no_od", cases=1, test_cases=1, seed=0, with_od=False, height=120, width=180)
    assert not lesion_gt_dir(root, "train", "od").exists()
    assert len(list_idrid_lesion_cases(root, "test")) == 1
    with pytest.raises(ValueError, match="54 training and 27 testing"):
        make_idrid_sample_data(tmp_path / "x", cases=55, test_cases=0)
    with pytest.raises(ValueError, match="27 testing"):
        make_idrid_sample_data(tmp_path / "x", cases=1, test_cases=28)
    with pytest.raises(ValueError, match=">= 0"):
        make_idrid_sample_data(tmp_path / "x", cases=-1, test_cases=0)


def test_official_size(tmp_path: Path) -> None:
    root = _make(tmp_path / "full", cases=1, test_cases=0, seed=0, height=2848, width=4288)
    with Image.open(lesion_image_dir(root, "train") / "IDRiD_01.jpg") as image:
        assert image.size == (4288, 2848)
    mask = read_idrid_mask(lesion_gt_dir(root, "train", "ma") / "IDRiD_01_MA.tif", (2848, 4288))
    labels, count = ndimage.label(mask)
    diameters = 2 * np.sqrt(np.bincount(labels.ravel())[1:] / np.pi)
    assert count >= 5 and diameters.max() > 9.0  # lesions scale with the image


# -- grading ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grading(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idrid_b") / "data"
    root.mkdir()
    make_idrid_grading_sample_data(root, cases=10, test_cases=5, seed=0)
    return root


def test_grading_label_files_in_the_official_format(grading: Path) -> None:
    train = grading_label_file(grading, "train").read_bytes()
    test = grading_label_file(grading, "test").read_bytes()
    assert train.startswith(
        b"Image name,Retinopathy grade,Risk of macular edema,,,,,,,,,\r\nIDRiD_001,0,0,,,,,,,,,\r\n"
    )
    assert test.startswith(b"Image name,Retinopathy grade,Risk of macular edema\r\nIDRiD_001,0,0\r\n")
    assert train.endswith(b",,,,,,,,,\r\n") and test.count(b"\r\n") == 6
    labels = read_grading_labels(grading_label_file(grading, "train"))
    assert labels.columns == GRADING_COLUMNS and len(labels) == 10
    assert {dr for dr, _ in labels.values()} == {0, 1, 2, 3, 4}
    assert {dme for _, dme in labels.values()} == {0, 1, 2}
    assert all(dme == 0 for dr, dme in labels.values() if dr <= 1)  # as in the real data


def test_grading_images(grading: Path) -> None:
    cases = list_idrid_grading_cases(grading, "test")
    assert [c.case_id for c in cases] == [f"IDRiD_{i:03d}" for i in range(1, 6)]
    with Image.open(grading_image_dir(grading, "train") / "IDRiD_001.jpg") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (536, 356))


def test_grades_are_learnable() -> None:
    # Lesion area grows with the retinopathy grade; exudates sit by the fovea only at DME risk 2.
    areas = {}
    for dr, dme in ((0, 0), (1, 0), (2, 1), (3, 2), (4, 2)):
        total = 0.0
        for seed in range(3):
            rng = np.random.default_rng([seed, dr])
            fundus = _Fundus(rng, 356, 536)
            _, masks = fundus.draw(_grading_counts(rng, dr, dme), dme=dme)
            total += sum(int(masks[k].sum()) for k in LESION_KEYS)
            ex = np.argwhere(masks["ex"])
            near = len(ex) and np.hypot(*(ex - fundus.fovea).T).min() < 2 * fundus.disc_radius
            assert (dme == 0) == (len(ex) == 0) and bool(near) == (dme == 2)
        areas[dr] = total
    assert areas[0] == 0 and areas[0] < areas[1] < areas[2] < areas[3] < areas[4]


def test_grading_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="413 training and 103 testing"):
        make_idrid_grading_sample_data(tmp_path, cases=414, test_cases=0)
