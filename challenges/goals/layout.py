"""The GOALS folder layout (docs/REFERENCE.md §3), its readers, and the glaucoma label sheet.

Official training layout::

    Train/Image/0001.png ... 0100.png          1100 wide x 800 high B-scans
    Train/Layer_Masks/0001.png ...             0 RNFL, 80 GCIPL, 160 choroid, 255 everything else
    Train/Train_GC_GT.xlsx                     columns ImgName, GC_Label (0 normal, 1 glaucoma)

The held-out split (``"test"`` in eyegc; it has ground truth so that it can be scored locally)
mirrors it under ``Validation/``: ``Validation/Image``, ``Validation/Layer_Masks`` and
``Validation/Validation_GC_GT.xlsx``. The real GOALS validation and test sets came without public
ground truth; put whatever held-out cases you have ground truth for there. To predict the
official test images, point ``eyegc predict --images`` at ``Test/Image``.

The label sheet is looked up as ``<Split>/<Split>_GC_GT.xlsx`` or the same name with ``.csv`` (both
is an error), then any single ``*GC_GT.xlsx`` / ``*GC_GT.csv`` in the split folder (e.g. ``Val_GC_GT.xlsx``).
The real sheet stores ``ImgName`` as integers (1, 2, ...); names with or without ``.png`` and
with or without zero padding all match the image ``0001.png``. Case ids are the image file
stems (``"0001"``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eyegc.common.datafiles import decode_table_text, index_files, split_folder
from eyegc.common.errors import DataError
from eyegc.common.plugin import Case

__all__ = [
    "GC_LABEL_COLUMN",
    "IMAGE_DIR",
    "IMAGE_SIZE",
    "IMG_NAME_COLUMN",
    "MASK_DIR",
    "SPLIT_DIRS",
    "gc_labels_path",
    "image_dir",
    "list_goals_glaucoma_cases",
    "list_goals_layer_cases",
    "mask_dir",
    "name_key",
    "read_gc_labels",
    "sorted_case_ids",
    "split_dir",
]

#: (height, width) of every GOALS B-scan and mask.
IMAGE_SIZE = (800, 1100)
#: eyegc split name -> the split folder under the data root.
SPLIT_DIRS = {"train": "Train", "test": "Validation"}
IMAGE_DIR = "Image"
MASK_DIR = "Layer_Masks"
IMG_NAME_COLUMN = "ImgName"
GC_LABEL_COLUMN = "GC_Label"


def split_dir(root: Path, split: str) -> Path:
    """The split folder (``Train`` or ``Validation``) under a GOALS data root."""
    return Path(root) / split_folder(split, SPLIT_DIRS)


def image_dir(root: Path, split: str) -> Path:
    """Folder of the split's B-scans."""
    return split_dir(root, split) / IMAGE_DIR


def mask_dir(root: Path, split: str) -> Path:
    """Folder of the split's layer masks."""
    return split_dir(root, split) / MASK_DIR


def name_key(name: Any) -> str:
    """The matching key of an image name: ``1``, ``1.0``, ``"1"``, ``"0001"``, ``"0001.png"`` -> ``"0001"``.

    Numeric names are compared by value and zero-padded to the four digits GOALS uses; other
    names keep their text (without a ``.png`` suffix and surrounding spaces).
    """
    if isinstance(name, float) and name.is_integer():
        name = int(name)
    text = str(name).strip()
    if text.lower().endswith(".png"):
        text = text[:-4].strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and number >= 0 and "e" not in text.lower():
        return f"{int(number):04d}"
    return text


def sorted_case_ids(case_ids: Iterable[str]) -> list[str]:
    """Case ids by numeric value where numeric (``0002`` < ``0010``), then by text."""

    def key(case_id: str) -> tuple[int, float, str]:
        try:
            return 0, float(int(case_id)), case_id
        except ValueError:
            return 1, 0.0, case_id

    return sorted(case_ids, key=key)


def gc_labels_path(root: Path, split: str) -> Path | None:
    """The split's glaucoma label sheet (see the module docstring for the lookup order), or None.

    Raises:
        DataError: both ``<Split>_GC_GT.xlsx`` and ``.csv``, or several candidate sheets and none
            with the expected name.
    """
    folder = split_dir(root, split)
    named = [path for suffix in (".xlsx", ".csv") if (path := folder / f"{folder.name}_GC_GT{suffix}").is_file()]
    if len(named) > 1:
        # Two sheets that may disagree: scoring against either one silently would be a guess.
        raise DataError(f"{folder} holds both {named[0].name} and {named[1].name}; keep one label sheet")
    if named:
        return named[0]
    if not folder.is_dir():
        return None
    found = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in (".xlsx", ".csv") and p.stem.upper().endswith("GC_GT")
    )
    if len(found) > 1:
        raise DataError(
            f"{folder} holds several label sheets ({', '.join(p.name for p in found)}); keep one, "
            f"or name it {folder.name}_GC_GT.xlsx"
        )
    return found[0] if found else None


# -- the label sheet ------------------------------------------------------------------------------


def _header_key(text: Any) -> str:
    return "".join(ch for ch in str(text or "").lower() if ch.isalnum())


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _rows_xlsx(path: Path) -> list[tuple[int, list[Any]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a corrupt or non-xlsx file
        raise DataError(f"cannot read {path} as an Excel .xlsx sheet ({type(exc).__name__}: {exc})") from None
    try:
        sheet = workbook.worksheets[0]
        return [(n, list(row)) for n, row in enumerate(sheet.iter_rows(values_only=True), start=1)]
    finally:
        workbook.close()


def _rows_csv(path: Path) -> list[tuple[int, list[Any]]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror})") from None
    text = decode_table_text(data, str(path))
    lines = text.splitlines()
    try:
        dialect = csv.Sniffer().sniff(lines[0] if lines else "", delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    return [(n, row) for n, row in enumerate(csv.reader(lines, delimiter=delimiter), start=1)]


def _label_value(value: Any, path: Path, row: int) -> int:
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or math.isnan(number) or number not in (0.0, 1.0):
        raise DataError(
            f"{path}, row {row}: {GC_LABEL_COLUMN} is {value!r}; it must be 0 (normal) or 1 (glaucoma). Fix that cell."
        )
    return int(number)


def read_gc_labels(path: Path) -> dict[str, int]:
    """Read a glaucoma label sheet (``.xlsx`` or ``.csv``) as ``{name key: 0|1}``.

    The header row is the first non-blank row; its ``ImgName`` and ``GC_Label`` columns are found
    ignoring case, spaces and underscores. Blank rows are skipped; labels stored as floats
    (``1.0``) or text (``"1"``) are accepted. Keys are :func:`name_key` of ``ImgName``
    (``"0001"`` for ``1``, ``"0001"`` and ``"0001.png"``).

    Raises:
        DataError: unreadable file, missing columns, a label other than 0/1, a row with a name but
            no label (or the reverse), or a name listed twice. The message names the file and row.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label sheet not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        rows = _rows_xlsx(path)
    elif suffix == ".csv":
        rows = _rows_csv(path)
    else:
        raise DataError(f"{path}: a GOALS label sheet must be .xlsx or .csv")
    rows = [(n, cells) for n, cells in rows if not all(_is_blank(c) for c in cells)]
    if not rows:
        raise DataError(f"{path} is empty; it needs a header row with {IMG_NAME_COLUMN} and {GC_LABEL_COLUMN}")
    header_row, header = rows[0]
    keys = [_header_key(c) for c in header]
    wanted = {_header_key(IMG_NAME_COLUMN): IMG_NAME_COLUMN, _header_key(GC_LABEL_COLUMN): GC_LABEL_COLUMN}
    missing = [name for key, name in wanted.items() if key not in keys]
    if missing:
        raise DataError(
            f"{path}, row {header_row}: no column {' or '.join(missing)} in the header "
            f"{[str(c) for c in header if not _is_blank(c)]}; "
            f"the sheet needs columns {IMG_NAME_COLUMN}, {GC_LABEL_COLUMN}"
        )
    name_col, label_col = keys.index(_header_key(IMG_NAME_COLUMN)), keys.index(_header_key(GC_LABEL_COLUMN))
    labels: dict[str, int] = {}
    first_row: dict[str, int] = {}
    for row, cells in rows[1:]:
        name = cells[name_col] if name_col < len(cells) else None
        value = cells[label_col] if label_col < len(cells) else None
        if _is_blank(name) and _is_blank(value):
            continue
        if _is_blank(name):
            raise DataError(f"{path}, row {row}: a label without an {IMG_NAME_COLUMN}; fill in the image name")
        if _is_blank(value):
            raise DataError(f"{path}, row {row}: image {name} has no {GC_LABEL_COLUMN}; fill in 0 or 1")
        key = name_key(name)
        if key in labels:
            raise DataError(
                f"{path}, row {row}: image {name} is listed twice (first in row {first_row[key]}); keep one row"
            )
        labels[key] = _label_value(value, path, row)
        first_row[key] = row
    if not labels:
        raise DataError(f"{path} has a header but no labelled rows")
    return labels


# -- cases ----------------------------------------------------------------------------------------


def _images(root: Path, split: str) -> dict[str, Path]:
    folder = image_dir(root, split)
    if not folder.is_dir():
        raise DataError(
            f"no GOALS images folder at {folder}; --data/--gt must be the folder that holds "
            f"'{SPLIT_DIRS[split]}/{IMAGE_DIR}' (try `eyegc sample-data goals-layers OUT` for an example layout)"
        )
    files = index_files(folder, (".png",), what="GOALS B-scan")
    if not files:
        raise DataError(f"{folder} holds no .png images")
    keys: dict[str, str] = {}
    for stem in sorted(files):
        key = name_key(stem)
        if key in keys:
            raise DataError(f"{folder}: {files[keys[key]].name} and {files[stem].name} name the same image; remove one")
        keys[key] = stem
    return files


def list_goals_layer_cases(root: Path, split: str = "train", require_labels: bool = True) -> list[Case]:
    """The cases of a split with their layer masks (``labels = {"layers": mask path}``).

    Without a ``Layer_Masks`` folder the cases carry ``labels=None`` (allowed only when
    ``require_labels`` is False).

    Raises:
        DataError: no images, no mask folder when labels are required, an image without a mask,
            or a mask without an image.
    """
    files = _images(root, split)
    masks_folder = mask_dir(root, split)
    if not masks_folder.is_dir():
        if require_labels:
            raise DataError(f"no layer-mask folder at {masks_folder} (needed for split {split!r})")
        return [Case(case_id=c, image=files[c]) for c in sorted_case_ids(files)]
    masks = index_files(masks_folder, (".png",), what="GOALS layer mask")
    lacking = [c for c in sorted_case_ids(files) if c not in masks]
    if lacking:
        raise DataError(
            f"{masks_folder} has no mask for image(s) {', '.join(f'{c}.png' for c in lacking[:5])}"
            f"{' ...' if len(lacking) > 5 else ''}; every GOALS image needs its layer mask"
        )
    orphans = [m for m in sorted_case_ids(masks) if m not in files]
    if orphans:
        raise DataError(
            f"{masks_folder} has masks with no image in {image_dir(root, split)}: "
            f"{', '.join(masks[m].name for m in orphans[:5])}"
        )
    return [Case(case_id=c, image=files[c], labels={"layers": masks[c]}) for c in sorted_case_ids(files)]


def list_goals_glaucoma_cases(root: Path, split: str = "train", require_labels: bool = True) -> list[Case]:
    """The cases of a split with their glaucoma label (``labels = {"glaucoma": 0|1}``).

    Raises:
        DataError: no images, no label sheet when labels are required, an image without a label,
            or a label for an image that is not in the folder.
    """
    files = _images(root, split)
    sheet = gc_labels_path(root, split)
    if sheet is None:
        if require_labels:
            folder = split_dir(root, split)
            raise DataError(
                f"no glaucoma label sheet in {folder} (expected {folder.name}_GC_GT.xlsx or .csv, "
                f"columns {IMG_NAME_COLUMN}, {GC_LABEL_COLUMN})"
            )
        return [Case(case_id=c, image=files[c]) for c in sorted_case_ids(files)]
    labels = read_gc_labels(sheet)
    by_key = {name_key(stem): stem for stem in files}
    lacking = [stem for key, stem in by_key.items() if key not in labels]
    if lacking:
        lacking = sorted_case_ids(lacking)
        raise DataError(
            f"{sheet} has no {GC_LABEL_COLUMN} for image(s) {', '.join(f'{c}.png' for c in lacking[:5])}"
            f"{' ...' if len(lacking) > 5 else ''}; add a row per image"
        )
    unknown = sorted(key for key in labels if key not in by_key)
    if unknown:
        raise DataError(
            f"{sheet} labels image(s) {', '.join(unknown[:5])} that are not in {image_dir(root, split)}; "
            "remove those rows or add the images"
        )
    return [Case(case_id=c, image=files[c], labels={"glaucoma": labels[name_key(c)]}) for c in sorted_case_ids(files)]
