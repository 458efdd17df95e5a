"""IDRiD prediction folders and submission files (docs/REFERENCE.md §4).

Lesion segmentation (sub-challenge A). ``eyegc predict`` writes, at each image's original size::

    OUT/IDRiD_55_MA.tif  IDRiD_55_HE.tif  IDRiD_55_EX.tif  IDRiD_55_SE.tif  [IDRiD_55_OD.tif]
        8-bit probability maps, value = round(p * 255), deflate-compressed single-channel TIFF
    OUT/masks/IDRiD_55_MA.tif ...
        the thresholded, postprocessed masks (0/255), same format

The submission is a zip of the probability maps under the official names, grouped by lesion
folder (``1. Microaneurysms/IDRiD_55_MA.tif``, ...): the organisers scored AUPR, which needs
grey-level result images per lesion type. The exact upload format of the closed challenge is
unconfirmed; the zip is deterministic (sorted names, fixed timestamps), so the same predictions
always give the same bytes.

Disease grading (sub-challenge B). ``eyegc predict`` writes one JSON file per image
(``eyegc.common.classification``); the submission is a CSV in the label files' own format:
``Image name,Retinopathy grade,Risk of macular edema``, names without ``.jpg``, rows in name order
and CRLF line ends, as in the official files.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.challenges.idrid.layout import (
    GRADING_COLUMNS,
    GRADING_HEADS,
    LESION_FOLDERS,
    LESION_KEYS,
    read_grading_labels,
    sorted_case_ids,
)
from eyegc.common.classification import max_num_classes, read_classification_cases
from eyegc.common.datafiles import check_mask_values
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.imageio import atomic_output_file
from eyegc.common.lazy import LazySequence
from eyegc.common.plugin import ClassSpec
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

__all__ = [
    "MASKS_DIR",
    "OFFICIAL_LESION_TEST_CASES",
    "lesion_prediction_case_ids",
    "quantize_probabilities",
    "read_idrid_grading_predictions",
    "read_idrid_grading_submission",
    "read_idrid_lesion_masks",
    "read_idrid_lesion_probabilities",
    "write_idrid_grading_submission",
    "write_idrid_lesion_prediction",
    "write_idrid_lesion_submission",
]

#: Sub-folder of a lesion prediction folder that holds the thresholded masks.
MASKS_DIR = "masks"
OFFICIAL_LESION_TEST_CASES = 27
_ZIP_DATE = (2018, 4, 4, 0, 0, 0)  # fixed, so that the same maps always give the same zip bytes
_TIFF_COMPRESSION = "tiff_adobe_deflate"  # lossless; full-size maps shrink from 12 MB to well under 1 MB


def quantize_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as stored: uint8 ``round(p * 255)`` (values outside are clipped)."""
    array = np.asarray(probabilities)
    if array.dtype == np.uint8:
        return array
    return np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def _map_name(case_id: str, class_key: str) -> str:
    return f"{case_id}_{LESION_FOLDERS[class_key][1]}.tif"


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Write an (H, W) uint8 TIFF through a temporary file, so an interrupted run leaves no half file."""
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(array).save(tmp, format="TIFF", compression=_TIFF_COMPRESSION)
    tmp.replace(path)


def write_idrid_lesion_prediction(
    out: Path,
    case_id: str,
    masks: np.ndarray,
    probabilities: np.ndarray,
    class_keys: Sequence[str] = LESION_KEYS,
) -> None:
    """Write one case's probability maps ``out/<case_id>_<MA|HE|EX|SE|OD>.tif`` and masks ``out/masks/...``.

    Args:
        out: the prediction folder.
        case_id: the image name (``IDRiD_55``).
        masks: ``(C, H, W)`` 0/1 masks (any value above zero is lesion).
        probabilities: ``(C, H, W)`` float probabilities in [0, 1] (or already quantised uint8).
        class_keys: the class of each channel.
    """
    masks = np.asarray(masks)
    probabilities = np.asarray(probabilities)
    if masks.ndim != 3 or masks.shape != probabilities.shape or masks.shape[0] != len(class_keys):
        raise ValueError(
            f"masks {masks.shape} and probabilities {probabilities.shape} must both be "
            f"({len(class_keys)}, H, W) for classes {list(class_keys)}"
        )
    out = Path(out)
    (out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    quantised = quantize_probabilities(probabilities)
    for index, key in enumerate(class_keys):
        _write_tiff(out / _map_name(case_id, key), np.ascontiguousarray(quantised[index]))
        _write_tiff(out / MASKS_DIR / _map_name(case_id, key), (masks[index] > 0).astype(np.uint8) * 255)


def lesion_prediction_case_ids(pred: Path, class_keys: Sequence[str] = LESION_KEYS) -> list[str]:
    """Image names with at least one probability map in a prediction folder, in natural order."""
    names: set[str] = set()
    suffixes = {f"_{LESION_FOLDERS[key][1]}.tif": key for key in class_keys}
    for path in Path(pred).glob("*.tif"):
        for suffix in suffixes:
            if path.name.endswith(suffix) and not path.name.startswith("."):
                names.add(path.name[: -len(suffix)])
    return sorted_case_ids(sorted(names))


def _decode_map(data: bytes | Path, where: str) -> np.ndarray:
    """One single-channel 8-bit map as (H, W) uint8; palette and 1-bit files give their indices."""
    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read {where}: the file is corrupt, truncated or not a TIFF ({exc})") from None
    if mode not in ("L", "P", "1"):
        raise DataError(
            f"{where} is a {mode} image; IDRiD result maps are single-channel 8-bit "
            "(write them with `eyegc predict idrid-lesions`)"
        )
    return array.astype(np.uint8)


def _check_shape(array: np.ndarray, where: str, shape: tuple[int, int] | None) -> None:
    if shape is not None and array.shape != tuple(shape):
        raise DataError(
            f"{where} is {array.shape[1]}x{array.shape[0]} (W x H); its image is {shape[1]}x{shape[0]} "
            "(predictions must have the original image size)"
        )


class _LesionFolder:
    """Reads one case's maps or masks from a prediction folder, checking names and sizes."""

    def __init__(self, pred: Path, case_ids: Sequence[str], class_keys: Sequence[str], masks: bool) -> None:
        self.folder = Path(pred) / MASKS_DIR if masks else Path(pred)
        self.case_ids = list(case_ids)
        self.class_keys = list(class_keys)
        self.masks = masks
        if not Path(pred).is_dir():
            raise DataError(f"prediction folder not found: {pred} (write it with `eyegc predict idrid-lesions`)")
        # Every file is checked for existence up front: a missing case fails before any scoring.
        for case_id in self.case_ids:
            for key in self.class_keys:
                path = self.folder / _map_name(case_id, key)
                if not path.is_file():
                    what = "mask" if masks else "probability map"
                    raise DataError(
                        f"no prediction for case {case_id}: the {what} {path} is missing "
                        "(run `eyegc predict idrid-lesions` on its image)"
                    )

    def load(self, index: int, shape: tuple[int, int] | None) -> np.ndarray:
        case_id = self.case_ids[index]
        channels = []
        for key in self.class_keys:
            path = self.folder / _map_name(case_id, key)
            array = _decode_map(path, str(path))
            _check_shape(array, str(path), shape if shape is not None else (channels[0].shape if channels else None))
            if self.masks:
                check_mask_values(array, path, what="prediction mask")
                array = (array > 0).astype(np.uint8)
            channels.append(array)
        return np.stack(channels)


class _LesionZip:
    """Reads one case's probability maps from a submission zip (``<lesion folder>/<name>.tif``)."""

    def __init__(self, path: Path, case_ids: Sequence[str], class_keys: Sequence[str]) -> None:
        self.path = Path(path)
        self.case_ids = list(case_ids)
        self.class_keys = list(class_keys)
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot open submission {self.path}: {exc}") from None
        for case_id in self.case_ids:
            for key in self.class_keys:
                member = _zip_member(case_id, key)
                if member not in names:
                    raise DataError(f"{self.path} has no {member} (no prediction for case {case_id})")

    def load(self, index: int, shape: tuple[int, int] | None) -> np.ndarray:
        case_id = self.case_ids[index]
        channels = []
        with zipfile.ZipFile(self.path) as archive:
            for key in self.class_keys:
                member = _zip_member(case_id, key)
                where = f"{member} in {self.path}"
                array = _decode_map(archive.read(member), where)
                _check_shape(array, where, shape if shape is not None else (channels[0].shape if channels else None))
                channels.append(array)
        return np.stack(channels)


def _zip_member(case_id: str, class_key: str) -> str:
    return f"{LESION_FOLDERS[class_key][0]}/{_map_name(case_id, class_key)}"


def _is_zip(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".zip"


def read_idrid_lesion_probabilities(
    pred: Path,
    case_ids: Sequence[str],
    class_keys: Sequence[str] = LESION_KEYS,
    shapes: Sequence[tuple[int, int]] | None = None,
) -> Sequence[np.ndarray]:
    """The ``(C, H, W)`` uint8 probability maps (``round(p * 255)``) of each case, read lazily.

    ``pred`` is a prediction folder or a submission zip. Every file's presence is checked now;
    a case's maps are decoded only when indexed (never cached), so a metric can walk a full-size
    test set in one case's memory. ``shapes`` are the expected (H, W) per case, if known.

    Raises:
        DataError: a map is missing (now), or unreadable, not single-channel 8-bit, or of the
            wrong size (when indexed). The message names the file.
    """
    source: _LesionFolder | _LesionZip
    if _is_zip(pred):
        source = _LesionZip(pred, case_ids, class_keys)
    else:
        source = _LesionFolder(pred, case_ids, class_keys, masks=False)
    expected = list(shapes) if shapes is not None else None
    return LazySequence(len(case_ids), lambda i: source.load(i, expected[i] if expected else None))


def read_idrid_lesion_masks(
    pred: Path,
    case_ids: Sequence[str],
    class_keys: Sequence[str] = LESION_KEYS,
    shapes: Sequence[tuple[int, int]] | None = None,
    lazy: bool = False,
) -> Sequence[np.ndarray]:
    """The ``(C, H, W)`` uint8 0/1 masks of each case from ``pred/masks``.

    A submission zip holds no masks: there the masks are the probability maps at 0.5
    (value >= 128). ``lazy=True`` returns a sequence that reads a case on access (full-size
    test sets); otherwise a list.

    Raises:
        DataError: a mask is missing, unreadable, not binary, or of the wrong size.
    """
    expected = list(shapes) if shapes is not None else None
    if _is_zip(pred):
        maps = read_idrid_lesion_probabilities(pred, case_ids, class_keys, shapes)
        cases: Sequence[np.ndarray] = LazySequence(len(case_ids), lambda i: (maps[i] >= 128).astype(np.uint8))
    else:
        source = _LesionFolder(pred, case_ids, class_keys, masks=True)
        cases = LazySequence(len(case_ids), lambda i: source.load(i, expected[i] if expected else None))
    return cases if lazy else list(cases)


def write_idrid_lesion_submission(
    pred: Path,
    out: Path,
    case_ids: Sequence[str] | None = None,
    class_keys: Sequence[str] = LESION_KEYS,
    overwrite: bool = False,
    **_ignored: Any,
) -> Path:
    """Write the lesion submission zip: ``<lesion folder>/<case>_<SUFFIX>.tif`` probability maps.

    Every map is read and checked (single-channel 8-bit, the same size for all classes of a
    case) before it is stored; on any error no file is left. Members are sorted and carry a
    fixed timestamp, so the same maps always give the same zip bytes.

    Args:
        pred: prediction folder written by ``eyegc predict idrid-lesions``.
        out: the zip to write.
        case_ids: the images to include (default: every image with a map in ``pred``).
        class_keys: the classes to include (``od`` too where the task predicts the optic disc).
        overwrite: replace an existing ``out``.

    Returns:
        The path written.

    Raises:
        SubmissionError: no maps, or a missing, unreadable or inconsistent map (named).
    """
    pred = Path(pred)
    if not pred.is_dir():
        raise SubmissionError(f"prediction folder not found: {pred} (write it with `eyegc predict idrid-lesions`)")
    ids = sorted_case_ids(list(case_ids) if case_ids is not None else lesion_prediction_case_ids(pred, class_keys))
    if not ids:
        raise SubmissionError(f"{pred} holds no probability maps (<image>_MA.tif ...); run `eyegc predict` first")
    members = sorted((_zip_member(case_id, key), case_id, key) for case_id in ids for key in class_keys)
    if len(ids) != OFFICIAL_LESION_TEST_CASES:
        tqdm.write(f"note: {len(ids)} images; the official IDRiD lesion test set has {OFFICIAL_LESION_TEST_CASES}")
    sizes: dict[str, tuple[int, int]] = {}
    try:
        with (
            atomic_output_file(out, overwrite=overwrite) as tmp,
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive,
        ):
            for member, case_id, key in tqdm(members, desc="idrid submission", unit="map", leave=False):
                path = pred / _map_name(case_id, key)
                if not path.is_file():
                    raise DataError(
                        f"no prediction for case {case_id}: {path} is missing (run `eyegc predict idrid-lesions`)"
                    )
                data = path.read_bytes()
                array = _decode_map(data, str(path))
                _check_shape(array, str(path), sizes.get(case_id))
                sizes[case_id] = array.shape
                info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
    except DataError as exc:
        raise SubmissionError(str(exc)) from None
    return Path(out)


# -- grading ----------------------------------------------------------------------------------


def _check_columns(columns: Sequence[str]) -> tuple[str, str, str]:
    names = tuple(str(c).strip() for c in columns)
    if len(names) != 3 or not all(names) or any(re.search(r'[,"\r\n]', n) for n in names):
        raise SubmissionError(
            f"the grading CSV needs three plain column names (image, retinopathy grade, macular edema risk); "
            f"got {list(columns)}"
        )
    return names  # type: ignore[return-value]


def write_idrid_grading_submission(
    pred: Path,
    out: Path,
    columns: Sequence[str] = GRADING_COLUMNS,
    case_ids: Sequence[str] | None = None,
    heads: Sequence[ClassSpec] = GRADING_HEADS,
    overwrite: bool = False,
    **_ignored: Any,
) -> Path:
    """Write the grading CSV from a folder of per-case JSON predictions.

    One row per image, sorted by name, names without ``.jpg``; ``columns`` are the header (pass
    ``read_grading_labels(...).columns`` to reuse a label file's own names); CRLF line ends as
    in the official files. Nothing is written unless every prediction reads.

    Raises:
        SubmissionError: no predictions, or a missing or malformed prediction file (named).
    """
    names = _check_columns(columns)
    pred = Path(pred)
    if not pred.is_dir():
        raise SubmissionError(f"prediction folder not found: {pred} (write it with `eyegc predict idrid-grading`)")
    if case_ids is None:
        case_ids = [p.stem for p in pred.glob("*.json") if not p.name.startswith(".")]
    ids = sorted_case_ids(list(case_ids))
    if not ids:
        raise SubmissionError(f"{pred} holds no predictions (<image>.json); run `eyegc predict` first")
    try:
        grades, _ = read_classification_cases(pred, ids, heads)
    except DataError as exc:
        raise SubmissionError(str(exc)) from None
    lines = [",".join(names)] + [f"{case_id},{g[0]},{g[1]}" for case_id, g in zip(ids, grades.tolist(), strict=True)]
    with atomic_output_file(out, overwrite=overwrite) as tmp:
        tmp.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return Path(out)


def read_idrid_grading_submission(
    csv_path: Path, case_ids: Sequence[str], heads: Sequence[ClassSpec] = GRADING_HEADS
) -> tuple[np.ndarray, np.ndarray]:
    """Read a grading CSV (the submission, or any file in the label format) for ``case_ids``.

    Returns:
        ``grades`` ``(N, 2)`` int64 and one-hot ``probabilities`` ``(N, 2, 5)`` float32, like
        ``read_classification_cases``. Rows for other images are ignored.

    Raises:
        DataError: the file is malformed (see ``read_grading_labels``) or lacks a case's row.
    """
    labels = read_grading_labels(csv_path)
    grades = np.zeros((len(case_ids), len(heads)), dtype=np.int64)
    probabilities = np.zeros((len(case_ids), len(heads), max_num_classes(heads)), dtype=np.float32)
    for n, case_id in enumerate(case_ids):
        if case_id not in labels:
            raise DataError(f"{csv_path} has no row for {case_id}; every test image needs a prediction")
        grades[n] = labels[case_id]
        probabilities[n, np.arange(len(heads)), grades[n]] = 1.0
    return grades, probabilities


def read_idrid_grading_predictions(
    pred: Path, case_ids: Sequence[str], heads: Sequence[ClassSpec] = GRADING_HEADS
) -> tuple[np.ndarray, np.ndarray]:
    """Grades and probabilities from a JSON prediction folder or from a grading CSV file."""
    pred = Path(pred)
    if pred.is_file():
        return read_idrid_grading_submission(pred, case_ids, heads)
    if not pred.is_dir():
        raise DataError(f"prediction folder or CSV not found: {pred} (write it with `eyegc predict idrid-grading`)")
    return read_classification_cases(pred, case_ids, heads)
