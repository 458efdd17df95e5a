"""The official DRAC22 Task 2 and Task 3 layouts (image quality, DR grade) and their label CSVs.

::

    B. Image Quality Assessment/                     (Task 2; Task 3: C. Diabetic Retinopathy Grading/)
      1. Original Images/a. Training Set/086.png ...  (b. Testing Set/ ...)
      2. Groundtruths/a. DRAC2022_ Image Quality Assessment_Training Labels.csv

The training CSVs' names and headers (``image name,image quality level`` and ``image name,DR
grade``, names with ``.png``) are those public DRAC22 code reads; the organisers never published
testing labels, so the testing CSV's name (``b. DRAC2022_ ..._Testing Labels.csv``) is this
project's choice. Both are read leniently: when the expected file is absent, the one CSV in
``2. Groundtruths`` whose name says Training (or Testing) is taken; header names are matched
ignoring case, spaces and underscores, a file without a header row is read as ``name,grade``;
names may carry ``.png`` or not, and a name that lost its zero padding (``86``) is matched by its number.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from eyegc.challenges.drac22.layout import IMAGES_DIR, SPLIT_DIRS, sorted_case_ids
from eyegc.common.datafiles import decode_table_text, index_files, split_folder
from eyegc.common.errors import DataError
from eyegc.common.imageio import split_image_suffix
from eyegc.common.plugin import Case

__all__ = [
    "DR_GRADING",
    "IMAGE_QUALITY",
    "GradingLayout",
    "list_drac22_grading_cases",
    "parse_label_csv",
    "read_label_csv",
]

GROUNDTRUTHS_DIR = "2. Groundtruths"
#: normalised header names of the image column, in order of preference.
_NAME_COLUMNS = ("image name", "image", "imagename", "name", "case", "file", "filename", "img", "imgname")
_SPLIT_WORDS = {"train": ("training", "train"), "test": ("testing", "test")}


@dataclass(frozen=True)
class GradingLayout:
    """Where one grading task keeps its images and labels, and what its label column is called."""

    #: the DRAC22 task number (2 image quality, 3 DR grade).
    task: int
    folder: str
    #: the label CSV's header as written (the public code's training files).
    header: tuple[str, str]
    #: split -> label file name in ``2. Groundtruths``.
    label_files: Mapping[str, str]
    #: normalised header names of the grade column, in order of preference.
    grade_columns: tuple[str, ...]
    grades: int = 3

    def image_dir(self, root: Path, split: str) -> Path:
        """The split's images folder under a data root."""
        return Path(root) / self.folder / IMAGES_DIR / split_folder(split, SPLIT_DIRS)

    def label_dir(self, root: Path) -> Path:
        """The folder of the label CSVs."""
        return Path(root) / self.folder / GROUNDTRUTHS_DIR

    def label_file(self, root: Path, split: str) -> Path:
        """The split's label CSV: the official name, else the one CSV there named for the split.

        Raises:
            DataError: several CSVs could be the split's (the message lists them).
        """
        expected = self.label_dir(root) / self.label_files[split]
        if expected.is_file() or not self.label_dir(root).is_dir():
            return expected
        words = set(_SPLIT_WORDS[split])
        found = [  # whole words: "latest" says nothing of a test split
            p
            for p in sorted(self.label_dir(root).glob("*"))
            if p.is_file() and p.suffix.lower() == ".csv" and words & set(re.split(r"[^a-z]+", p.stem.lower()))
        ]
        if len(found) > 1:
            names = ", ".join(repr(p.name) for p in found)
            raise DataError(f"{self.label_dir(root)} holds several {split} label CSVs ({names}); keep one")
        return found[0] if found else expected


#: DRAC22 Task 2: image quality, 0 poor, 1 good, 2 excellent.
IMAGE_QUALITY = GradingLayout(
    task=2,
    folder="B. Image Quality Assessment",
    header=("image name", "image quality level"),
    label_files={
        "train": "a. DRAC2022_ Image Quality Assessment_Training Labels.csv",
        "test": "b. DRAC2022_ Image Quality Assessment_Testing Labels.csv",
    },
    grade_columns=("image quality level", "quality level", "quality", "grade", "label", "class"),
)
#: DRAC22 Task 3: diabetic retinopathy, 0 normal, 1 NPDR, 2 PDR.
DR_GRADING = GradingLayout(
    task=3,
    folder="C. Diabetic Retinopathy Grading",
    header=("image name", "DR grade"),
    label_files={
        "train": "a. DRAC2022_ Diabetic Retinopathy Grading_Training Labels.csv",
        "test": "b. DRAC2022_ Diabetic Retinopathy Grading_Testing Labels.csv",
    },
    grade_columns=("dr grade", "grade", "dr", "label", "class"),
)


def _normal(text: str) -> str:
    """Lower case, ``_`` as a space, runs of spaces as one: ``Image_Name `` -> ``image name``."""
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip().lower()


def _grade(cell: str, grades: int, where: str) -> int:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer() or not 0 <= value < grades:
        raise DataError(f"{where}: grade {text!r} is not an integer 0-{grades - 1}; fix the cell")
    return int(value)


def _columns(header: list[str], layout: GradingLayout, where: str) -> tuple[int, int] | None:
    """The name and grade columns of a header row, or None when the row is data (no header)."""
    names = [_normal(cell) for cell in header]
    if not any(n in _NAME_COLUMNS or n in layout.grade_columns for n in names):
        return None  # no known column name: a data row (its grade is checked as any other's)
    name_col = next((names.index(n) for n in _NAME_COLUMNS if n in names), 0)
    grade_col = next((names.index(n) for n in layout.grade_columns if n in names and names.index(n) != name_col), None)
    if grade_col is None:
        others = [i for i, n in enumerate(names) if n and i != name_col]
        if len(others) != 1:
            wanted = "', '".join(layout.grade_columns[:2])
            raise DataError(f"{where}: no grade column in the header {','.join(header)!r} (expected '{wanted}')")
        grade_col = others[0]
    return name_col, grade_col


def parse_label_csv(text: str, layout: GradingLayout, source: str = "<labels>") -> dict[str, int]:
    """Case id (the image name without ``.png``) -> grade from a label CSV's text.

    Raises:
        DataError: no rows, a row without a name or grade, a grade outside the task's, an image twice.
    """
    lines = text.lstrip("\ufeff").splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max(",;\t", key=first.count) if first else ","
    try:
        rows = [
            (n, [c.strip() for c in row])
            for n, row in enumerate(csv.reader(lines, delimiter=delimiter), 1)
            if any(c.strip() for c in row)
        ]
    except csv.Error as exc:
        raise DataError(f"{source} is no readable CSV ({exc}); check its quotes") from None
    if not rows:
        raise DataError(f"{source} is empty; a label CSV holds 'image name,grade' rows")
    columns = _columns(rows[0][1], layout, f"{source}, line {rows[0][0]}")
    if columns is None:
        columns = (0, 1)  # no header row: name, grade
    else:
        rows = rows[1:]
    labels: dict[str, int] = {}
    seen: dict[str, int] = {}
    for number, cells in rows:
        where = f"{source}, line {number}"
        if len(cells) <= max(columns) or not cells[columns[0]]:
            raise DataError(f"{where}: expected an image name and a grade; got {','.join(cells)!r}")
        stem, suffix = split_image_suffix(cells[columns[0]])
        name = stem if suffix.lower() == ".png" else cells[columns[0]]
        if name in seen:
            raise DataError(f"{where}: {name} is listed twice (also on line {seen[name]}); keep one row per image")
        seen[name] = number
        labels[name] = _grade(cells[columns[1]], layout.grades, where)
    if not labels:
        raise DataError(f"{source} has a header but no label rows")
    return labels


def read_label_csv(path: Path, layout: GradingLayout) -> dict[str, int]:
    """Read a label CSV file (see :func:`parse_label_csv`).

    Raises:
        DataError: the file is missing, no text, or malformed (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file not found: {path}")
    return parse_label_csv(decode_table_text(path.read_bytes(), str(path)), layout, str(path))


def _match_labels(ids: list[str], labels: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """Grades by case id, and the label names no image has. A name that lost its zero padding (``86`` for
    ``086``, as a spreadsheet writes a number) is matched by its number when no row has the exact name."""
    by_number: dict[int, str] = {}
    for name in labels:
        if name.isdigit():
            by_number.setdefault(int(name), name)
    matched, used = {}, set()
    for case_id in ids:
        name = case_id if case_id in labels else by_number.get(int(case_id)) if case_id.isdigit() else None
        if name is not None:
            matched[case_id] = labels[name]
            used.add(name)
    return matched, [name for name in labels if name not in used]


def list_drac22_grading_cases(
    root: Path, layout: GradingLayout, split: str = "train", require_labels: bool = True, head: str = "grade"
) -> list[Case]:
    """The cases of one split, ``labels = {head: g}`` (``None`` without a label file when not required).

    A label row whose image is absent is skipped with a warning (a partial copy of the images is common).

    Raises:
        DataError: the images folder is missing or empty, an image is not a PNG or not named by an integer,
            or (with ``require_labels``) the label file is missing or lacks an image's row.
    """
    images = layout.image_dir(root, split)
    if not images.is_dir():
        raise DataError(
            f"no DRAC22 images folder at {images}; --data/--gt must be the folder that holds '{layout.folder}'"
        )
    files = index_files(images, (".png",), what="DRAC22 image")
    if not files:
        raise DataError(f"{images} holds no .png images")
    ids = sorted_case_ids(list(files))
    label_file = layout.label_file(root, split)
    labels: dict[str, int] = {}
    if label_file.is_file():
        labels = read_label_csv(label_file, layout)
    elif require_labels:
        raise DataError(f"no label file at {label_file} (needed for the {split!r} split)")
    labels, extra = _match_labels(ids, labels)
    missing = [case_id for case_id in ids if case_id not in labels]
    if label_file.is_file() and missing and require_labels:
        raise DataError(
            f"{label_file} has no row for {len(missing)} image(s) of {images}: {', '.join(missing[:5])}; "
            "add their grades or remove the images"
        )
    if extra:
        warnings.warn(
            f"{label_file}: {len(extra)} labelled image(s) are not in {images} and are skipped "
            f"({', '.join(extra[:5])})",
            UserWarning,
            stacklevel=2,
        )
    return [Case(case_id=c, image=files[c], labels=None if c not in labels else {head: labels[c]}) for c in ids]
