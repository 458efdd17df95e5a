"""The IDRiD layout readers: lesion cases, masks, grading label CSVs (synthetic and real data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.idrid.layout import (
    GRADING_COLUMNS,
    LESION_KEYS,
    grading_image_dir,
    grading_label_file,
    lesion_gt_dir,
    lesion_image_dir,
    list_idrid_grading_cases,
    list_idrid_lesion_cases,
    parse_grading_labels,
    read_grading_labels,
    read_idrid_mask,
    sorted_case_ids,
)
from eyegc.challenges.idrid.sample_data import make_idrid_grading_sample_data, make_idrid_sample_data
from eyegc.common.errors import DataError
from PIL import Image

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDRiD"
WITH_OD = (*LESION_KEYS, "od")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idrid") / "data"
    root.mkdir()
    make_idrid_sample_data(root, cases=3, test_cases=2, seed=0, height=178, width=268)
    return root


@pytest.fixture(scope="module")
def grading(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idrid_b") / "data"
    root.mkdir()
    make_idrid_grading_sample_data(root, cases=4, test_cases=2, seed=0, size=(96, 144))
    return root


@pytest.fixture
def copy(sample: Path, tmp_path: Path) -> Path:
    """A writable copy of the sample data."""
    return Path(shutil.copytree(sample, tmp_path / "copy"))


@pytest.fixture
def real() -> Path:
    if not (REAL / "A. Segmentation").is_dir():
        pytest.skip(f"real IDRiD data not found at {REAL}")
    return REAL


# -- lesion cases -------------------------------------------------------------------------------


def test_lists_training_cases_with_absent_soft_exudates(sample: Path) -> None:
    cases = list_idrid_lesion_cases(sample, "train")
    assert [c.case_id for c in cases] == ["IDRiD_01", "IDRiD_02", "IDRiD_03"]
    assert all(c.image.name == f"{c.case_id}.jpg" for c in cases)
    first, second = cases[0].labels, cases[1].labels
    assert first is not None and second is not None
    assert set(first) == set(LESION_KEYS)
    assert first["ma"].name == "IDRiD_01_MA.tif" and first["ma"].parent.name == "1. Microaneurysms"
    assert first["se"] is not None and first["se"].name == "IDRiD_01_SE.tif"
    assert second["se"] is None  # no SE file = no soft exudates in that image


def test_testing_split_and_optic_disc(sample: Path) -> None:
    cases = list_idrid_lesion_cases(sample, "test", classes=WITH_OD)
    assert [c.case_id for c in cases] == ["IDRiD_55", "IDRiD_56"]
    labels = cases[0].labels
    assert labels is not None and list(labels) == list(WITH_OD)
    assert labels["od"] is not None and labels["od"].name == "IDRiD_55_OD.tif"


def test_masks_read_as_binary_at_image_size(sample: Path) -> None:
    case = list_idrid_lesion_cases(sample, "train")[0]
    image = np.asarray(Image.open(case.image))
    assert case.labels is not None
    for key in LESION_KEYS:
        mask = read_idrid_mask(case.labels[key], image.shape[:2])
        assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1}


def test_without_ground_truth(copy: Path) -> None:
    shutil.rmtree(lesion_gt_dir(copy, "test"))
    with pytest.raises(DataError, match="no ground-truth folder"):
        list_idrid_lesion_cases(copy, "test")
    cases = list_idrid_lesion_cases(copy, "test", require_labels=False)
    assert [c.labels for c in cases] == [None, None]


def test_missing_images_folder_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"A\. Segmentation") as error:
        list_idrid_lesion_cases(tmp_path, "train")
    assert str(lesion_image_dir(tmp_path, "train")) in str(error.value)


def test_empty_images_folder_ignores_hidden_files(tmp_path: Path) -> None:
    folder = lesion_image_dir(tmp_path, "train")
    folder.mkdir(parents=True)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._IDRiD_01.jpg").write_bytes(b"\0\5\26\7")  # macOS resource fork
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        list_idrid_lesion_cases(tmp_path, "train")


def test_orphan_mask_is_an_error(copy: Path) -> None:
    orphan = lesion_gt_dir(copy, "train", "he") / "IDRiD_40_HE.tif"
    shutil.copy(lesion_gt_dir(copy, "train", "he") / "IDRiD_01_HE.tif", orphan)
    with pytest.raises(DataError, match=r"IDRiD_40_HE\.tif belongs to no image"):
        list_idrid_lesion_cases(copy, "train")


def test_misnamed_mask_is_an_error(copy: Path) -> None:
    shutil.copy(lesion_gt_dir(copy, "train", "he") / "IDRiD_01_HE.tif", lesion_gt_dir(copy, "train", "ma"))
    with pytest.raises(DataError, match=r"named <image name>_MA\.tif"):
        list_idrid_lesion_cases(copy, "train")


def test_missing_class_folder(copy: Path) -> None:
    shutil.rmtree(lesion_gt_dir(copy, "train", "se"))
    with pytest.raises(DataError, match=r"4\. Soft Exudates"):
        list_idrid_lesion_cases(copy, "train")
    shutil.rmtree(lesion_gt_dir(copy, "train", "od"))
    assert len(list_idrid_lesion_cases(copy, "train", classes=("ma", "he", "ex"))) == 3
    with pytest.raises(DataError, match="without the optic disc"):
        list_idrid_lesion_cases(copy, "train", classes=("ma", "od"))


def test_other_image_suffixes_and_junk_files(copy: Path) -> None:
    folder = lesion_image_dir(copy, "train")
    (folder / "IDRiD_02.jpg").rename(folder / "IDRiD_02.JPG")
    Image.open(folder / "IDRiD_03.jpg").save(folder / "IDRiD_03.png")
    (folder / "IDRiD_03.jpg").unlink()
    (folder / ".DS_Store").write_bytes(b"junk")
    (lesion_gt_dir(copy, "train", "ma") / ".DS_Store").write_bytes(b"junk")
    (lesion_gt_dir(copy, "train", "ma") / "Thumbs.db").write_bytes(b"junk")
    cases = list_idrid_lesion_cases(copy, "train")
    assert [c.image.name for c in cases] == ["IDRiD_01.jpg", "IDRiD_02.JPG", "IDRiD_03.png"]
    Image.open(folder / "IDRiD_03.png").save(folder / "IDRiD_03.jpeg")
    with pytest.raises(DataError, match="keep one file per image"):
        list_idrid_lesion_cases(copy, "train")


def test_unknown_split_and_class(sample: Path) -> None:
    with pytest.raises(DataError, match="unknown split"):
        list_idrid_lesion_cases(sample, "validation")
    with pytest.raises(ValueError, match="unknown IDRiD lesion classes"):
        list_idrid_lesion_cases(sample, "train", classes=("ma", "cotton"))


def test_sorted_case_ids_is_natural() -> None:
    assert sorted_case_ids(["IDRiD_10", "IDRiD_9", "IDRiD_055"]) == ["IDRiD_9", "IDRiD_10", "IDRiD_055"]


# -- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grey255", "grey01", "rgba", "palette1bit"])
def test_read_idrid_mask_formats(tmp_path: Path, kind: str) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 10:20] = 1
    path = tmp_path / "m.tif"
    if kind == "grey255":
        Image.fromarray(mask * 255).save(path)
    elif kind == "grey01":
        Image.fromarray(mask).save(tmp_path / "m.png")
        path = tmp_path / "m.png"
    elif kind == "rgba":  # what SimpleITK makes of the official palette masks: opaque alpha everywhere
        rgba = np.zeros((20, 30, 4), np.uint8)
        rgba[..., 0] = mask * 255
        rgba[..., 3] = 255
        Image.fromarray(rgba).save(path)
    else:
        from eyegc.challenges.idrid.sample_data import write_idrid_mask

        write_idrid_mask(path, mask)
    assert np.array_equal(read_idrid_mask(path, (20, 30)), mask)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_read_idrid_mask_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.tif"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    with pytest.raises(DataError, match="30x20"):
        read_idrid_mask(path, (40, 30))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="corrupt"):
        read_idrid_mask(path)
    with pytest.raises(DataError, match="not found"):
        read_idrid_mask(tmp_path / "absent.tif")


# -- grading labels -----------------------------------------------------------------------------


def test_parses_official_training_format() -> None:
    text = (
        "Image name,Retinopathy grade,Risk of macular edema,,,,,,,,,\r\n"
        "IDRiD_001,3,2,,,,,,,,,\r\n"
        "IDRiD_002,0,0,,,,,,,,, \r\n"
    )
    labels = parse_grading_labels(text)
    assert labels.columns == GRADING_COLUMNS
    assert dict(labels) == {"IDRiD_001": (3, 2), "IDRiD_002": (0, 0)}
    assert labels["IDRiD_001"] == (3, 2) and len(labels) == 2


def test_parses_messy_variants() -> None:
    text = (
        "\ufeff Image name , Retinopathy grade ,Risk of macular edema \n"
        "\n"
        "IDRiD_001.jpg, 4 , 1\n"
        "  \n"
        " IDRiD_002.JPG ,2,2.0,,\n"
        "IDRiD_003,1,0\n"
        ",,,\n"
    )
    labels = parse_grading_labels(text)
    assert labels.columns == ("Image name", "Retinopathy grade", "Risk of macular edema")
    assert dict(labels) == {"IDRiD_001": (4, 1), "IDRiD_002": (2, 2), "IDRiD_003": (1, 0)}
    semicolons = parse_grading_labels("Image;DR grade;DME\r\nIDRiD_001;1;0\r\n")
    assert semicolons.columns == ("Image", "DR grade", "DME") and semicolons["IDRiD_001"] == (1, 0)


def test_reads_bom_and_crlf_from_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbfImage name,Retinopathy grade,Risk of macular edema \r\nIDRiD_007.jpg,2,1\r\n")
    labels = read_grading_labels(path)
    assert labels.columns[2] == "Risk of macular edema"
    assert dict(labels) == {"IDRiD_007": (2, 1)} and labels.path == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Image name,Retinopathy grade,Risk of macular edema\nIDRiD_001,5,0\n", r"line 2: Retinopathy grade 5"),
        ("Image name,Retinopathy grade,Risk of macular edema\nIDRiD_001,1,3\n", r"line 2: Risk of macular edema 3"),
        ("Image name,Retinopathy grade,Risk of macular edema\nIDRiD_001,x,0\n", r"line 2: .*'x' is not an integer"),
        ("Image name,Retinopathy grade,Risk of macular edema\nIDRiD_001,1.5,0\n", "not an integer"),
        (
            "Image name,Retinopathy grade,Risk of macular edema\n\nIDRiD_001,1,0\nIDRiD_001.jpg,2,0\n",
            r"line 4: IDRiD_001 is listed twice \(also on line 3\)",
        ),
        ("IDRiD_001,1,0\nIDRiD_002,1,0\n", "no header row"),
        ("", "is empty"),
        ("Image name,Retinopathy grade,Risk of macular edema\r\n\r\n", "no label rows"),
        ("Image name,Retinopathy grade\nIDRiD_001,1\n", "header must have three columns"),
        ("Image name,Retinopathy grade,Risk of macular edema\nIDRiD_001,1\n", "line 2: expected 3 cells"),
        ("Image name,Risk of macular edema,Retinopathy grade\nIDRiD_001,1,0\n", "swapped"),
    ],
)
def test_bad_label_files(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_grading_labels(text, "labels.csv")


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_grading_labels(tmp_path / "absent.csv")


# -- grading cases ------------------------------------------------------------------------------


def test_lists_grading_cases(grading: Path) -> None:
    cases = list_idrid_grading_cases(grading, "train")
    assert [c.case_id for c in cases] == ["IDRiD_001", "IDRiD_002", "IDRiD_003", "IDRiD_004"]
    labels = read_grading_labels(grading_label_file(grading, "train"))
    assert [c.labels for c in cases] == [{"dr": labels[c.case_id][0], "dme": labels[c.case_id][1]} for c in cases]
    assert [c.case_id for c in list_idrid_grading_cases(grading, "test")] == ["IDRiD_001", "IDRiD_002"]


def test_grading_label_problems(grading: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(grading, tmp_path / "b"))
    label_file = grading_label_file(root, "train")
    original = label_file.read_bytes()
    # A label row without an image is skipped with a warning (partial copies of the images are common).
    (grading_image_dir(root, "train") / "IDRiD_004.jpg").unlink()
    with pytest.warns(UserWarning, match="IDRiD_004"):
        assert len(list_idrid_grading_cases(root, "train")) == 3
    # An image without a label row is an error when labels are required.
    label_file.write_bytes(b"\r\n".join(original.split(b"\r\n")[:3]) + b"\r\n")
    with pytest.raises(DataError, match="no row for 1 image"):
        list_idrid_grading_cases(root, "train")
    cases = list_idrid_grading_cases(root, "train", require_labels=False)
    assert cases[2].labels is None and cases[0].labels is not None
    label_file.unlink()
    with pytest.raises(DataError, match="no grading label file"):
        list_idrid_grading_cases(root, "train")
    assert all(c.labels is None for c in list_idrid_grading_cases(root, "train", require_labels=False))


def test_grading_without_images_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"B\. Disease Grading"):
        list_idrid_grading_cases(tmp_path, "test")


# -- the real data ------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_grading_label_files(real: Path) -> None:
    train = read_grading_labels(grading_label_file(real, "train"))
    test = read_grading_labels(grading_label_file(real, "test"))
    assert len(train) == 413 and len(test) == 103
    assert train.columns == test.columns == GRADING_COLUMNS
    assert list(train)[:2] == ["IDRiD_001", "IDRiD_002"] and list(train)[-1] == "IDRiD_413"
    assert train["IDRiD_001"] == (3, 2) and train["IDRiD_005"] == (4, 0) and train["IDRiD_006"] == (4, 1)
    assert train["IDRiD_405"] == (2, 1)  # its line ends with a stray space after the empty columns
    assert train["IDRiD_413"] == (2, 0)
    assert test["IDRiD_001"] == (4, 0) and test["IDRiD_008"] == (2, 2) and test["IDRiD_101"] == (1, 0)
    assert test["IDRiD_103"] == (0, 0)
    assert sum(1 for dr, _ in train.values() if dr == 0) == 134


@pytest.mark.real_data
def test_real_lesion_cases_and_masks(real: Path) -> None:
    cases = list_idrid_lesion_cases(real, "train")
    assert [c.case_id for c in cases] == ["IDRiD_01", "IDRiD_02", "IDRiD_03", "IDRiD_04"]
    assert [c.labels["se"] is not None for c in cases if c.labels] == [False, False, True, False]
    assert all(c.labels and all(c.labels[k] is not None for k in ("ma", "he", "ex")) for c in cases)
    labels = cases[0].labels
    assert labels is not None
    mask = read_idrid_mask(labels["ex"], (2848, 4288))  # a 1-bit palette TIFF holding 0/1
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1}
    assert 0 < int(mask.sum()) < mask.size // 20
