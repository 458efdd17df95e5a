"""GOALS layout, label sheets and layer-mask encoding: exact values, messy sheets, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eyegc.challenges.goals.encoding import (
    decode_layers,
    encode_layers,
    read_goals_image,
    read_layer_mask,
    write_layer_png,
)
from eyegc.challenges.goals.layout import (
    gc_labels_path,
    list_goals_glaucoma_cases,
    list_goals_layer_cases,
    name_key,
    read_gc_labels,
)
from eyegc.common.errors import DataError
from openpyxl import Workbook
from PIL import Image


def _official_map() -> np.ndarray:
    """A full-size 800x1100 mask holding all four official values in bands."""
    official = np.full((800, 1100), 255, dtype=np.uint8)
    official[200:240] = 0
    official[240:270] = 80
    official[400:520] = 160
    official[0, :4] = [0, 80, 160, 255]
    return official


def _xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


def _layout(root: Path, names: list[str], split: str = "Train", masks: bool = True) -> None:
    (root / split / "Image").mkdir(parents=True)
    if masks:
        (root / split / "Layer_Masks").mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros((800, 1100), np.uint8)).save(root / split / "Image" / f"{name}.png")
        if masks:
            Image.fromarray(_official_map()).save(root / split / "Layer_Masks" / f"{name}.png")


# -- encoding ---------------------------------------------------------------------------------------


def test_encoding_round_trip_is_byte_exact_at_original_size(tmp_path: Path) -> None:
    official = _official_map()
    indices = decode_layers(official)
    assert indices.shape == (1, 800, 1100) and indices.dtype == np.uint8
    assert indices[0, 0, :4].tolist() == [1, 2, 3, 0]  # RNFL, GCIPL, choroid, background
    assert np.array_equal(encode_layers(indices), official)
    assert np.array_equal(encode_layers(indices[0]), official)
    path = tmp_path / "0001.png"
    write_layer_png(path, indices)
    assert np.array_equal(np.asarray(Image.open(path)), official)  # the file holds the official values
    assert np.array_equal(read_layer_mask(path), indices)


def test_mask_with_foreign_values_names_the_file(tmp_path: Path) -> None:
    official = _official_map()
    official[5, 5] = 81  # e.g. interpolation after a resize
    path = tmp_path / "0007.png"
    Image.fromarray(official).save(path)
    with pytest.raises(DataError, match=r"0007\.png.*\[81\]"):
        read_layer_mask(path)
    with pytest.raises(ValueError):
        encode_layers(np.full((2, 2), 4, np.uint8))


def test_mask_of_wrong_size_names_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "0002.png"
    Image.fromarray(np.full((400, 550), 255, np.uint8)).save(path)
    with pytest.raises(DataError, match=r"0002\.png is 550x400.*1100x800"):
        read_layer_mask(path)
    assert read_layer_mask(path, shape=None).shape == (1, 400, 550)


def test_grey_saved_as_rgb_is_accepted_and_colour_is_not(tmp_path: Path) -> None:
    official = _official_map()
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([official] * 3, axis=-1)).save(rgb)
    assert np.array_equal(read_layer_mask(rgb), decode_layers(official))
    assert read_goals_image(rgb).shape == (1, 800, 1100)
    colour = np.stack([official] * 3, axis=-1)
    colour[0, 0, 1] = 7
    path = tmp_path / "colour.png"
    Image.fromarray(colour).save(path)
    with pytest.raises(DataError, match=r"colour\.png"):
        read_goals_image(path)


# -- label sheets -----------------------------------------------------------------------------------


def test_name_key_matches_every_spelling() -> None:
    for spelling in (1, 1.0, "1", "0001", "0001.png", " 0001.PNG ", "001"):
        assert name_key(spelling) == "0001"
    assert name_key("scan_a.png") == "scan_a"
    assert name_key(123) == "0123"


def test_xlsx_with_messy_header_floats_and_blank_rows(tmp_path: Path) -> None:
    path = _xlsx(
        tmp_path / "Train_GC_GT.xlsx",
        [
            [None, None],
            [" ImgName ", "GC_Label ", None],
            [1, 0],
            [None, None],
            ["0002.png", 1.0],
            [3.0, "1"],
            ["0004", 0],
        ],
    )
    assert read_gc_labels(path) == {"0001": 0, "0002": 1, "0003": 1, "0004": 0}


def test_csv_with_bom_spaces_and_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "Train_GC_GT.csv"
    path.write_text("\ufeff img name ; gc label \n0001.png;1\n\n2;0.0\n", encoding="utf-8")
    assert read_gc_labels(path) == {"0001": 1, "0002": 0}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["ImgName", "GC_Label"], [1, 2]], r"row 2: GC_Label is 2"),
        (
            [["ImgName", "GC_Label"], [1, 0], ["0001.png", 1]],
            r"row 3: image 0001.png is listed twice \(first in row 2\)",
        ),
        ([["ImgName", "GC_Label"], [1, None]], r"row 2: image 1 has no GC_Label"),
        ([["Name", "Label"], [1, 0]], r"row 1: no column ImgName or GC_Label"),
        ([["ImgName", "GC_Label"], [1, "yes"]], r"row 2: GC_Label is 'yes'"),
    ],
)
def test_bad_sheets_name_the_file_and_row(tmp_path: Path, rows: list[list[object]], message: str) -> None:
    path = _xlsx(tmp_path / "Train_GC_GT.xlsx", rows)
    with pytest.raises(DataError, match=rf"Train_GC_GT\.xlsx, {message}"):
        read_gc_labels(path)


def test_corrupt_xlsx_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "Train_GC_GT.xlsx"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"Train_GC_GT\.xlsx"):
        read_gc_labels(path)


# -- cases ------------------------------------------------------------------------------------------


def test_layer_and_glaucoma_cases_from_the_official_layout(tmp_path: Path) -> None:
    _layout(tmp_path, ["0002", "0001", "0010"])
    _xlsx(tmp_path / "Train" / "Train_GC_GT.xlsx", [["ImgName", "GC_Label"], [1, 0], [2, 1], [10, 1]])
    layers = list_goals_layer_cases(tmp_path, "train")
    assert [c.case_id for c in layers] == ["0001", "0002", "0010"]
    assert layers[0].labels == {"layers": tmp_path / "Train" / "Layer_Masks" / "0001.png"}
    glaucoma = list_goals_glaucoma_cases(tmp_path, "train")
    assert [(c.case_id, c.labels) for c in glaucoma] == [
        ("0001", {"glaucoma": 0}),
        ("0002", {"glaucoma": 1}),
        ("0010", {"glaucoma": 1}),
    ]


def test_csv_sheet_is_found_when_there_is_no_xlsx(tmp_path: Path) -> None:
    _layout(tmp_path, ["0101"], split="Validation")
    (tmp_path / "Validation" / "Val_GC_GT.csv").write_text("ImgName,GC_Label\n0101.png,1\n")
    assert gc_labels_path(tmp_path, "test") == tmp_path / "Validation" / "Val_GC_GT.csv"
    assert list_goals_glaucoma_cases(tmp_path, "test")[0].labels == {"glaucoma": 1}
    (tmp_path / "Validation" / "Validation_GC_GT.csv").write_text("ImgName,GC_Label\n0101.png,0\n")
    assert list_goals_glaucoma_cases(tmp_path, "test")[0].labels == {"glaucoma": 0}  # the official name wins


def test_image_without_label_and_label_without_image(tmp_path: Path) -> None:
    _layout(tmp_path, ["0001", "0002"])
    sheet = tmp_path / "Train" / "Train_GC_GT.xlsx"
    _xlsx(sheet, [["ImgName", "GC_Label"], [1, 0]])
    with pytest.raises(DataError, match=r"Train_GC_GT\.xlsx has no GC_Label for image\(s\) 0002\.png"):
        list_goals_glaucoma_cases(tmp_path, "train")
    _xlsx(sheet, [["ImgName", "GC_Label"], [1, 0], [2, 1], [3, 1]])
    with pytest.raises(DataError, match="0003 that are not in"):
        list_goals_glaucoma_cases(tmp_path, "train")


def test_missing_pieces_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no GOALS images folder"):
        list_goals_layer_cases(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        list_goals_layer_cases(tmp_path, "validation")
    _layout(tmp_path, ["0001", "0002"], masks=False)
    with pytest.raises(DataError, match="no layer-mask folder"):
        list_goals_layer_cases(tmp_path, "train")
    assert list_goals_layer_cases(tmp_path, "train", require_labels=False)[0].labels is None
    with pytest.raises(DataError, match="no glaucoma label sheet"):
        list_goals_glaucoma_cases(tmp_path, "train")
    (tmp_path / "Train" / "Layer_Masks").mkdir()
    Image.fromarray(_official_map()).save(tmp_path / "Train" / "Layer_Masks" / "0001.png")
    with pytest.raises(DataError, match=r"no mask for image\(s\) 0002\.png"):
        list_goals_layer_cases(tmp_path, "train")
