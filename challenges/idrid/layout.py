"""The official IDRiD folder layouts (docs/REFERENCE.md §4) and their readers.

Sub-challenge A (lesion segmentation)::

    A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg ...      b. Testing Set/IDRiD_55.jpg ...
    A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/1. Microaneurysms/IDRiD_01_MA.tif
                                                                   /2. Haemorrhages/IDRiD_01_HE.tif
                                                                   /3. Hard Exudates/IDRiD_01_EX.tif
                                                                   /4. Soft Exudates/IDRiD_01_SE.tif
                                                                   /5. Optic Disc/IDRiD_01_OD.tif

A missing mask file means that lesion is absent from the image (soft exudates are absent from
about half of the images). The organisers' masks are 1-bit palette TIFFs holding 0/1 (SimpleITK
expands them to RGBA with an opaque alpha channel), so :func:`read_idrid_mask` reads them with
Pillow, palette indices and all.

Sub-challenge B (disease grading)::

    B. Disease Grading/1. Original Images/a. Training Set/IDRiD_001.jpg ...  b. Testing Set/IDRiD_001.jpg ...
    B. Disease Grading/2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv
                                      /b. IDRiD_Disease Grading_Testing Labels.csv

The label files have the columns ``Image name``, ``Retinopathy grade`` (0-4) and ``Risk of macular
edema`` (0-2), names without ``.jpg``, CRLF line ends, and (training file) nine empty trailing
columns; :func:`read_grading_labels` reads them and any reasonable variant.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eyegc.common.datafiles import binary_mask, class_folders, decode_table_text, index_files, split_folder
from eyegc.common.errors import DataError
from eyegc.common.imageio import split_image_suffix
from eyegc.common.plugin import Case, ClassSpec
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DME_GRADES",
    "DR_GRADES",
    "GRADING_COLUMNS",
    "GRADING_DIR",
    "GRADING_HEADS",
    "GRADING_LABEL_FILES",
    "IMAGE_SUFFIXES",
    "LESION_FOLDERS",
    "LESION_KEYS",
    "LESION_NAMES",
    "MASK_SUFFIXES",
    "SEGMENTATION_DIR",
    "SPLIT_DIRS",
    "GradingLabels",
    "grading_image_dir",
    "grading_label_file",
    "lesion_gt_dir",
    "lesion_image_dir",
    "lesion_mask_name",
    "list_idrid_grading_cases",
    "list_idrid_lesion_cases",
    "list_image_files",
    "parse_grading_labels",
    "read_grading_labels",
    "read_idrid_mask",
    "sorted_case_ids",
]

SEGMENTATION_DIR = "A. Segmentation"
GRADING_DIR = "B. Disease Grading"
IMAGES_DIR = "1. Original Images"
LESION_GT_DIR = "2. All Segmentation Groundtruths"
GRADING_GT_DIR = "2. Groundtruths"
SPLIT_DIRS = {"train": "a. Training Set", "test": "b. Testing Set"}
#: class key -> (the organisers' ground-truth folder, the suffix of its mask names: IDRiD_01_MA.tif).
LESION_FOLDERS: dict[str, tuple[str, str]] = {
    "ma": ("1. Microaneurysms", "MA"),
    "he": ("2. Haemorrhages", "HE"),
    "ex": ("3. Hard Exudates", "EX"),
    "se": ("4. Soft Exudates", "SE"),
    "od": ("5. Optic Disc", "OD"),
}
#: The four lesion types scored by sub-challenge A; the optic disc is optional.
LESION_KEYS: tuple[str, ...] = ("ma", "he", "ex", "se")
LESION_NAMES = {
    "ma": "Microaneurysms",
    "he": "Haemorrhages",
    "ex": "Hard Exudates",
    "se": "Soft Exudates",
    "od": "Optic Disc",
}
#: Image files accepted in an images folder (matched case-insensitively; IDRiD ships .jpg).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff", ".png")
#: Mask files accepted in a ground-truth folder (IDRiD ships .tif).
MASK_SUFFIXES = (".tif", ".tiff", ".png")
GRADING_LABEL_FILES = {
    "train": "a. IDRiD_Disease Grading_Training Labels.csv",
    "test": "b. IDRiD_Disease Grading_Testing Labels.csv",
}
#: The official header of the grading label files (and of the grading submission CSV).
GRADING_COLUMNS: tuple[str, str, str] = ("Image name", "Retinopathy grade", "Risk of macular edema")
DR_GRADES = 5
DME_GRADES = 3
#: The two classification heads of sub-challenge B, in the label files' column order.
GRADING_HEADS: tuple[ClassSpec, ...] = (
    ClassSpec(key="dr", name="Retinopathy grade", num_classes=DR_GRADES),
    ClassSpec(key="dme", name="Risk of macular edema", num_classes=DME_GRADES),
)
_EXPECTED_HEADER = ",".join(GRADING_COLUMNS)


def _split_dir(split: str) -> str:
    return split_folder(split, SPLIT_DIRS)


def lesion_image_dir(root: Path, split: str) -> Path:
    """Folder of a split's original images of sub-challenge A under an IDRiD data root."""
    return Path(root) / SEGMENTATION_DIR / IMAGES_DIR / _split_dir(split)


def lesion_gt_dir(root: Path, split: str, class_key: str | None = None) -> Path:
    """A split's ground-truth folder of sub-challenge A, or one class's folder inside it."""
    folder = Path(root) / SEGMENTATION_DIR / LESION_GT_DIR / _split_dir(split)
    return folder if class_key is None else folder / LESION_FOLDERS[class_key][0]


def lesion_mask_name(case_id: str, class_key: str) -> str:
    """The official mask file name: ``("IDRiD_01", "ma")`` -> ``"IDRiD_01_MA.tif"``."""
    return f"{case_id}_{LESION_FOLDERS[class_key][1]}.tif"


def grading_image_dir(root: Path, split: str) -> Path:
    """Folder of a split's original images of sub-challenge B under an IDRiD data root."""
    return Path(root) / GRADING_DIR / IMAGES_DIR / _split_dir(split)


def grading_label_file(root: Path, split: str) -> Path:
    """The official grading label CSV of a split."""
    _split_dir(split)
    return Path(root) / GRADING_DIR / GRADING_GT_DIR / GRADING_LABEL_FILES[split]


def _natural_key(name: str) -> tuple[object, ...]:
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def sorted_case_ids(case_ids: Sequence[str]) -> list[str]:
    """Case ids in natural order (``IDRiD_2`` before ``IDRiD_10``; zero-padded names sort as usual)."""
    return sorted(case_ids, key=_natural_key)


def list_image_files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Map stem -> file for the images in ``folder`` (:func:`eyegc.common.datafiles.index_files`' rules).

    Hidden files, junk and files that are not images are ignored; suffixes match in any case.

    Raises:
        DataError: two files share a stem (``IDRiD_01.jpg`` and ``IDRiD_01.png``), or an image of
            another type (``IDRiD_01.gif``).
    """
    return index_files(folder, suffixes, what="IDRiD image")


def read_idrid_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as ``(H, W)`` uint8 0/1; any value above zero is lesion.

    Reads with Pillow: the organisers' 1-bit palette TIFFs give their palette indices (0/1);
    8-bit grey masks (0/255 or 0/1) and colour masks (any colour channel above zero, alpha
    ignored) work too. ``eyegc.common.imageio.read_mask`` must not be used on the official masks:
    SimpleITK expands the palette to RGBA and the opaque alpha channel makes every pixel lesion.

    Raises:
        DataError: the file is missing, unreadable, its size differs from ``shape``, or it holds
            values other than 0/1 or 0/255 (the official masks hold palette indices 0/1).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read {path}: the file is corrupt, truncated or not an image ({exc})") from None
    if mode in ("RGBA", "LA", "PA"):
        array = array[..., :-1]
    if array.ndim == 3:
        array = array.max(axis=-1)
    return binary_mask(array, path, shape)


def _lesion_masks(folder: Path, class_key: str, images: Mapping[str, Path], image_folder: Path) -> dict[str, Path]:
    """Map case id -> mask file of one lesion folder, checking names, types, duplicates and orphans."""
    suffix = f"_{LESION_FOLDERS[class_key][1]}"

    def case_id(path: Path, stem: str) -> str:
        if not stem.upper().endswith(suffix):
            raise DataError(
                f"{path}: masks in '{folder.name}' are named <image name>{suffix}.tif (e.g. IDRiD_01{suffix}.tif); "
                "rename the file or move it to its lesion's folder"
            )
        image = stem[: -len(suffix)]
        if image not in images:
            raise DataError(
                f"{path} belongs to no image: {image_folder} has no {image}.jpg; remove the mask or add its image"
            )
        return image

    return index_files(folder, MASK_SUFFIXES, what="IDRiD ground-truth mask", case_id=case_id)


def list_idrid_lesion_cases(
    root: Path,
    split: str = "train",
    require_labels: bool = True,
    classes: Sequence[str] = LESION_KEYS,
    *,
    allow_missing_class: bool = False,
) -> list[Case]:
    """Read the cases of one split of sub-challenge A from the official layout.

    ``labels`` maps each class key of ``classes`` to its mask file, or to ``None`` when the file is
    absent (the lesion is absent from the image). Where the split has no ground-truth folder and
    ``require_labels`` is False, ``labels`` is None. ``allow_missing_class`` lets a class folder be
    missing (every mask of that class is then absent).

    Raises:
        DataError: the images folder is missing or holds no image; a requested class folder
            (unless allowed) or (with ``require_labels``) the ground-truth folder is missing; a
            mask is misnamed, of another type, one of two for an image, or belongs to no image.
        ValueError: ``classes`` names an unknown class.
    """
    unknown = [key for key in classes if key not in LESION_FOLDERS]
    if unknown:
        raise ValueError(f"unknown IDRiD lesion classes {unknown}; choose from {list(LESION_FOLDERS)}")
    root = Path(root)
    folder = lesion_image_dir(root, split)
    if not folder.is_dir():
        raise DataError(
            f"no IDRiD lesion images folder at {folder}; --data/--gt must be the folder that holds "
            f"'{SEGMENTATION_DIR}' (try `eyegc sample-data idrid-lesions OUT` for an example layout)"
        )
    images = list_image_files(folder)
    if not images:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); copy the IDRiD images there")
    gt_root = lesion_gt_dir(root, split)
    if not gt_root.is_dir():
        if require_labels:
            raise DataError(
                f"no ground-truth folder at {gt_root} (needed for the {split!r} split); it holds one folder "
                f"per lesion type: {', '.join(LESION_FOLDERS[k][0] for k in classes)}"
            )
        return [Case(case_id=c, image=images[c], labels=None) for c in sorted_case_ids(list(images))]
    od_folder = lesion_gt_dir(root, split, "od")
    if "od" in classes and not od_folder.is_dir() and not allow_missing_class:
        raise DataError(
            f"no ground-truth class folder '{od_folder.name}' in {gt_root}; this task also segments the optic "
            "disc: add the organisers' optic disc masks there, use the task without the optic disc, or pass "
            "--allow-missing-class to go on without it (scored as n/a)"
        )
    folders = class_folders(
        gt_root,
        {key: LESION_FOLDERS[key][0] for key in classes},
        allow_missing_class,
        known=[name for name, _ in LESION_FOLDERS.values()],
    )
    masks = {key: {} if f is None else _lesion_masks(f, key, images, folder) for key, f in folders.items()}
    return [
        Case(case_id=case_id, image=images[case_id], labels={key: masks[key].get(case_id) for key in classes})
        for case_id in sorted_case_ids(list(images))
    ]


@dataclass(frozen=True)
class GradingLabels(Mapping[str, tuple[int, int]]):
    """The labels of one grading CSV: image name -> (retinopathy grade, risk of macular edema).

    Behaves as a read-only mapping; ``columns`` keeps the file's own header names (stripped), so a
    submission can be written in the label file's own columns.
    """

    columns: tuple[str, str, str]
    labels: dict[str, tuple[int, int]] = field(default_factory=dict)
    path: Path | None = None

    def __getitem__(self, name: str) -> tuple[int, int]:
        return self.labels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)


def _looks_like(cell: str, kind: str) -> bool:
    text = cell.lower()
    if kind == "dr":
        return "retino" in text or text in ("dr", "dr grade", "grade")
    return "macula" in text or "edema" in text or "oedema" in text or "dme" in text


def _grade(cell: str, limit: int, what: str, where: str) -> int:
    text = cell.strip()
    try:
        value = float(text)
        if not value.is_integer():
            raise ValueError
    except ValueError:
        raise DataError(f"{where}: {what} {text!r} is not an integer 0-{limit - 1}; fix the cell") from None
    grade = int(value)
    if not 0 <= grade < limit:
        raise DataError(f"{where}: {what} {grade} is outside 0-{limit - 1}; fix the cell")
    return grade


def parse_grading_labels(text: str, source: Path | str = "<grading labels>") -> GradingLabels:
    """Parse the text of a grading CSV (see :func:`read_grading_labels`); ``source`` names it in errors."""
    lines = text.lstrip("\ufeff").splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max(",;\t", key=first.count) if first else ","
    header: tuple[str, str, str] | None = None
    header_line = 0
    labels: dict[str, tuple[int, int]] = {}
    seen: dict[str, int] = {}
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1):
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()  # empty trailing columns (the official training file has nine)
        if not cells:
            continue  # blank line
        where = f"{source}, line {number}"
        if header is None:
            if len(cells) != 3 or not all(cells):
                raise DataError(
                    f"{where}: the header must have three columns ({_EXPECTED_HEADER}); got {','.join(cells)!r}"
                )
            if re.fullmatch(r"\d+(\.0*)?", cells[1]):
                raise DataError(f"{where}: the file has no header row; add the line '{_EXPECTED_HEADER}' first")
            if _looks_like(cells[1], "dme") and _looks_like(cells[2], "dr"):
                raise DataError(
                    f"{where}: columns 2 and 3 are swapped; the order is {_EXPECTED_HEADER} (got {','.join(cells)})"
                )
            header = (cells[0], cells[1], cells[2])
            header_line = number
            continue
        if len(cells) != 3:
            raise DataError(
                f"{where}: expected 3 cells (image name, retinopathy grade, risk of macular edema); "
                f"got {len(cells)}: {','.join(cells)!r}"
            )
        stem, suffix = split_image_suffix(cells[0])
        name = stem if suffix.lower() in IMAGE_SUFFIXES else cells[0]
        if not name:
            raise DataError(f"{where}: empty image name")
        if name in seen:
            raise DataError(f"{where}: {name} is listed twice (also on line {seen[name]}); keep one row per image")
        dr = _grade(cells[1], DR_GRADES, header[1], where)
        dme = _grade(cells[2], DME_GRADES, header[2], where)
        seen[name] = number
        labels[name] = (dr, dme)
    if header is None:
        raise DataError(f"{source} is empty; a grading CSV starts with the header '{_EXPECTED_HEADER}'")
    if not labels:
        raise DataError(f"{source} has a header (line {header_line}) but no label rows")
    return GradingLabels(columns=header, labels=labels, path=None if isinstance(source, str) else Path(source))


def read_grading_labels(csv_path: Path) -> GradingLabels:
    """Read an IDRiD grading CSV: image name (without ``.jpg``) -> (DR grade 0-4, DME risk 0-2).

    Copes with a UTF-8 byte-order mark, CRLF or LF line ends, spaces around cells and header
    names, empty trailing columns, blank lines, names with or without an image suffix, and
    ``;`` or tab as the delimiter. The header (first non-blank line) is required.

    Raises:
        DataError: the file is missing, has no header or no rows, a row is malformed, a grade is
            outside its range, or an image is listed twice (the message names file and line).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"grading label file not found: {path}")
    return parse_grading_labels(decode_table_text(path.read_bytes(), str(path)), path)


def list_idrid_grading_cases(root: Path, split: str = "train", require_labels: bool = True) -> list[Case]:
    """Read the cases of one split of sub-challenge B: ``labels = {"dr": int, "dme": int}``.

    Without ``require_labels`` a missing label file (or a missing row) gives ``labels=None``.
    A label row whose image is absent is not an error (the official CSV lists all 413/103 images,
    and a partial copy of the images is common): it is skipped with a warning.

    Raises:
        DataError: the images folder is missing or empty, or (with ``require_labels``) the label
            file is missing or lacks an image's row.
    """
    root = Path(root)
    folder = grading_image_dir(root, split)
    if not folder.is_dir():
        raise DataError(
            f"no IDRiD grading images folder at {folder}; --data/--gt must be the folder that holds "
            f"'{GRADING_DIR}' (try `eyegc sample-data idrid-grading OUT` for an example layout)"
        )
    images = list_image_files(folder)
    if not images:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); copy the IDRiD images there")
    label_file = grading_label_file(root, split)
    labels: Mapping[str, tuple[int, int]] = {}
    if label_file.is_file():
        labels = read_grading_labels(label_file)
    elif require_labels:
        raise DataError(f"no grading label file at {label_file} (needed for the {split!r} split)")
    ids = sorted_case_ids(list(images))
    if labels:
        missing = [case_id for case_id in ids if case_id not in labels]
        if missing and require_labels:
            raise DataError(
                f"{label_file} has no row for {len(missing)} image(s) of {folder}: {', '.join(missing[:5])}; "
                "add their grades or remove the images"
            )
        extra = sorted_case_ids([name for name in labels if name not in images])
        if extra:
            warnings.warn(
                f"{label_file}: {len(extra)} labelled image(s) are not in {folder} and are skipped "
                f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''})",
                UserWarning,
                stacklevel=2,
            )
    cases = []
    for case_id in ids:
        grades = labels.get(case_id)
        case_labels = None if grades is None else {"dr": grades[0], "dme": grades[1]}
        cases.append(Case(case_id=case_id, image=images[case_id], labels=case_labels))
    return cases
