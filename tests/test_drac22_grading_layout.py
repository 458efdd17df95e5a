"""DRAC22 Tasks 2 and 3: the official layout, and label CSVs read whatever their header variant."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from eyegc.challenges.drac22.grading_layout import DR_GRADING, IMAGE_QUALITY, parse_label_csv
from eyegc.common.errors import DataError
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_data(get_task("drac22-task3"), tmp_path_factory.mktemp("t3") / "data", 4, 3, seed=1)


@pytest.fixture
def copy(sample: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sample, tmp_path / "data"))


def test_official_layout_names_and_header(sample: Path) -> None:
    folder = sample / "C. Diabetic Retinopathy Grading"
    assert (folder / "1. Original Images" / "a. Training Set").is_dir()
    assert (folder / "1. Original Images" / "b. Testing Set" / "086.png").is_file()
    label = folder / "2. Groundtruths" / "a. DRAC2022_ Diabetic Retinopathy Grading_Training Labels.csv"
    lines = label.read_text().splitlines()
    assert lines[0] == "image name,DR grade" and lines[1].endswith(".png,0")
    cases = get_task("drac22-task3").list_cases(sample, "test")
    assert [c.case_id for c in cases] == ["086", "402", "1299"]  # the names the real test set holds, in order
    assert sorted(c.labels["grade"] for c in cases) == [0, 1, 2]  # three cases cover every grade


@pytest.mark.parametrize(
    "text",
    [
        "image name,DR grade\n086.png,2\n402.png,0\n",
        "\ufeffImage Name , DR Grade \r\n086.png , 2\r\n402.png,0\r\n",  # BOM, CRLF, spaces, capitals
        "image_name;dr_grade\n086;2\n402;0.0\n",  # underscores, ';', names without .png, 0.0
        "DR grade,image name\n2,086.png\n0,402.png\n",  # columns swapped
        "086.png,2\n402.png,0\n",  # no header row
        "image,label,notes\n086.png,2,blurry\n\n402.png,0,\n",  # other names, an extra column, a blank line
    ],
)
def test_header_variants_read_alike(text: str) -> None:
    assert parse_label_csv(text, DR_GRADING, "labels.csv") == {"086": 2, "402": 0}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("image name,DR grade\n086.png,3\n", "labels.csv, line 2: grade '3' is not an integer 0-2"),
        ("image name,DR grade\n086.png,x\n", "grade 'x' is not an integer 0-2"),
        ("image name,DR grade\n086.png,1\n086,2\n", "line 3: 086 is listed twice (also on line 2)"),
        ("image name,DR grade\n", "has a header but no label rows"),
        ("", "labels.csv is empty"),
        ("image name,quality,other\n086.png,1,2\n", "no grade column in the header"),
    ],
)
def test_bad_label_files_name_file_and_line(text: str, says: str) -> None:
    with pytest.raises(DataError, match=re.escape(says)):
        parse_label_csv(text, DR_GRADING, "labels.csv")


def test_quality_labels_use_their_own_column() -> None:
    text = "image name,image quality level,DR grade\n086.png,1,2\n"
    assert parse_label_csv(text, IMAGE_QUALITY) == {"086": 1}
    assert parse_label_csv(text, DR_GRADING) == {"086": 2}


def test_a_differently_named_label_file_is_found_when_it_is_the_only_one(copy: Path) -> None:
    folder = copy / "C. Diabetic Retinopathy Grading" / "2. Groundtruths"
    (folder / DR_GRADING.label_files["train"]).rename(folder / "DRAC2022_DR_Grading_Training_Labels.csv")
    assert len(get_task("drac22-task3").list_cases(copy, "train")) == 4
    (folder / "training labels (copy).csv").write_text("image name,DR grade\n")
    with pytest.raises(DataError, match="several train label CSVs"):
        get_task("drac22-task3").list_cases(copy, "train")


def test_missing_labels_and_images(copy: Path) -> None:
    plugin = get_task("drac22-task3")
    folder = copy / "C. Diabetic Retinopathy Grading"
    label = folder / "2. Groundtruths" / DR_GRADING.label_files["test"]
    label.write_text("image name,DR grade\n086.png,1\n")
    with pytest.raises(DataError, match="has no row for 2 image"):
        plugin.list_cases(copy, "test")
    assert [c.labels for c in plugin.list_cases(copy, "test", require_labels=False)][1] is None
    label.unlink()
    with pytest.raises(DataError, match="no label file at"):
        plugin.list_cases(copy, "test")
    with pytest.raises(DataError, match=r"no DRAC22 images folder at .*B\. Image Quality Assessment"):
        get_task("drac22-task2").list_cases(copy, "train")


def test_a_label_row_without_its_image_is_skipped_with_a_warning(copy: Path) -> None:
    folder = copy / "C. Diabetic Retinopathy Grading" / "2. Groundtruths"
    label = folder / DR_GRADING.label_files["test"]
    label.write_text(label.read_text() + "999.png,1\n")
    with pytest.warns(UserWarning, match=r"1 labelled image.* are not in .* skipped \(999\)"):
        assert len(get_task("drac22-task3").list_cases(copy, "test")) == 3


def test_names_that_lost_their_zero_padding_are_matched_by_number(copy: Path) -> None:
    label = copy / "C. Diabetic Retinopathy Grading" / "2. Groundtruths" / DR_GRADING.label_files["test"]
    label.write_text("image name,DR grade\n86,2\n402.png,0\n1299.png,1\n")  # a spreadsheet's 086 -> 86
    assert [c.labels["grade"] for c in get_task("drac22-task3").list_cases(copy, "test")] == [2, 0, 1]


def test_a_headerless_first_row_with_a_bad_grade_is_reported_as_such() -> None:
    with pytest.raises(DataError, match=re.escape("labels.csv, line 1: grade 'x' is not an integer 0-2")):
        parse_label_csv("086.png,x\n402.png,0\n", DR_GRADING, "labels.csv")


def test_split_words_are_whole_words_and_utf16_reads(copy: Path) -> None:
    folder = copy / "C. Diabetic Retinopathy Grading" / "2. Groundtruths"
    train = folder / DR_GRADING.label_files["train"]
    text = train.read_text()
    train.unlink()
    (folder / "train_labels_latest.csv").write_bytes(text.replace(",", "\t").encode("utf-16"))  # Excel's Unicode text
    assert len(get_task("drac22-task3").list_cases(copy, "train")) == 4  # "latest" does not make it a test file
    (folder / DR_GRADING.label_files["test"]).unlink()
    with pytest.raises(DataError, match="no label file at"):
        get_task("drac22-task3").list_cases(copy, "test")
