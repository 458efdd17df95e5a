"""DRIVE prediction folders and the submission zip.

A prediction folder (what ``eyegc predict drive-vessels`` writes) holds, per case:

* ``<case_id>.png`` — the vessel probability map, 8-bit grey, ``round(p * 255)``;
* ``masks/<case_id>.png`` — the final binary vessel mask, 0/255.

The submission zip holds the probability maps named as the test images (``01_test.png`` …
``20_test.png``) at its top level, optionally with the binary masks under ``masks/``. The DRIVE
challenge took result images; this exact upload format is this project's choice (docs/REFERENCE.md §5
settles no file format), so check the challenge page before uploading. A zip without ``masks/``
is read back with masks = probability >= 0.5.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from eyegc.challenges.drive.layout import IMAGE_SIZE
from eyegc.challenges.drive.metric import quantise_probabilities
from eyegc.common.datafiles import check_mask_values
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.imageio import atomic_output_file, read_image_array, write_png
from eyegc.common.lazy import LazySequence
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

__all__ = [
    "MASKS_DIR",
    "OFFICIAL_TEST_IDS",
    "prediction_case_ids",
    "read_drive_masks",
    "read_drive_probabilities",
    "read_drive_submission",
    "write_drive_prediction",
    "write_drive_submission",
]

MASKS_DIR = "masks"
#: The case ids of the official DRIVE test set.
OFFICIAL_TEST_IDS = tuple(f"{i:02d}_test" for i in range(1, 21))
#: Threshold that turns a zip's probability maps into masks when it holds no ``masks/``.
SUBMISSION_THRESHOLD = 0.5
_ZIP_DATE = (2004, 1, 1, 0, 0, 0)  # fixed so that the same predictions always give the same zip bytes
_PREDICT_HINT = "write it with `eyegc predict drive-vessels`"


def _as_plane(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != IMAGE_SIZE:
        raise ValueError(f"{what} must be (1, {IMAGE_SIZE[0]}, {IMAGE_SIZE[1]}), got {array.shape}")
    return array


def write_drive_prediction(out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
    """Write ``out/<case_id>.png`` (probabilities as ``round(p * 255)``) and ``out/masks/<case_id>.png`` (0/255).

    Args:
        out: the prediction folder (created if needed).
        case_id: the image stem (``01_test``).
        masks: ``(1, 584, 565)`` 0/1 vessel mask.
        probabilities: ``(1, 584, 565)`` float vessel probabilities in [0, 1].
    """
    out = Path(out)
    mask = _as_plane(masks, "masks")
    probs = _as_plane(probabilities, "probabilities")
    (out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    write_png(out / f"{case_id}.png", quantise_probabilities(probs))
    write_png(out / MASKS_DIR / f"{case_id}.png", (mask > 0).astype(np.uint8) * 255)


def _sort_key(case_id: str) -> tuple[int, str]:
    match = re.match(r"^(\d+)", case_id)
    return (int(match.group(1)) if match else 1 << 30, case_id)


def prediction_case_ids(pred: Path) -> list[str]:
    """Case ids of the probability maps in a prediction folder, by image number."""
    return sorted((p.stem for p in Path(pred).glob("*.png") if not p.name.startswith(".")), key=_sort_key)


def _check_plane(array: np.ndarray, source: str) -> np.ndarray:
    if array.shape[0] != 1 or array.dtype != np.uint8:
        raise DataError(
            f"{source}: DRIVE predictions are 8-bit single-channel PNGs; got {array.shape[0]} channel(s) of "
            f"{array.dtype} — {_PREDICT_HINT}"
        )
    if array.shape[1:] != IMAGE_SIZE:
        raise DataError(
            f"{source} is {array.shape[2]}x{array.shape[1]} (W x H); DRIVE predictions are "
            f"{IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} like the images"
        )
    return array


def _binary(array: np.ndarray, source: str) -> np.ndarray:
    check_mask_values(array, source, what="prediction mask")
    return (array > 0).astype(np.uint8)


def _existing(pred: Path, case_ids: Sequence[str], sub: str | None) -> list[Path]:
    pred = Path(pred)
    if not pred.is_dir():
        raise DataError(f"prediction folder not found: {pred} — {_PREDICT_HINT}")
    folder = pred / sub if sub else pred
    paths = [folder / f"{case_id}.png" for case_id in case_ids]
    for case_id, path in zip(case_ids, paths, strict=True):
        if not path.is_file():
            raise DataError(f"no prediction for case {case_id}: {path} is missing — {_PREDICT_HINT}")
    return paths


def read_drive_masks(pred: Path, case_ids: Sequence[str]) -> LazySequence[np.ndarray]:
    """The ``(1, 584, 565)`` uint8 0/1 masks of ``case_ids`` from ``pred/masks/`` (decoded on access).

    Raises:
        DataError: a file is missing (checked at once), or, on access, unreadable, the wrong size
            or not binary.
    """
    paths = _existing(pred, case_ids, MASKS_DIR)
    return LazySequence(
        len(paths), lambda i: _binary(_check_plane(read_image_array(paths[i]), str(paths[i])), str(paths[i]))
    )


def read_drive_probabilities(pred: Path, case_ids: Sequence[str]) -> LazySequence[np.ndarray]:
    """The ``(1, 584, 565)`` float32 probabilities (``uint8 / 255``) of ``case_ids`` (decoded on access).

    Raises:
        DataError: a file is missing (checked at once), or, on access, unreadable or the wrong size.
    """
    paths = _existing(pred, case_ids, None)
    return LazySequence(
        len(paths), lambda i: _check_plane(read_image_array(paths[i]), str(paths[i])).astype(np.float32) / 255.0
    )


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_drive_submission(
    pred: Path,
    out: Path,
    case_ids: Sequence[str] | None = None,
    include_masks: bool = False,
    overwrite: bool = False,
) -> Path:
    """Validate a prediction folder and write the submission zip (deterministic bytes).

    Every file is read and checked before anything is written; on any error no file is left.

    Args:
        pred: prediction folder written by ``eyegc predict drive-vessels``.
        out: the zip to write.
        case_ids: the cases to include (default: every probability map in ``pred``).
        include_masks: also store the binary masks as ``masks/<case_id>.png``.
        overwrite: replace an existing ``out``.

    Returns:
        The path written.

    Raises:
        SubmissionError: no predictions, or a missing, unreadable or malformed file.
    """
    ids = sorted(case_ids if case_ids is not None else prediction_case_ids(pred), key=_sort_key)
    if not ids:
        raise SubmissionError(f"{pred} holds no probability maps (<case_id>.png) — {_PREDICT_HINT}")
    members: list[tuple[str, bytes]] = []
    try:
        probabilities = read_drive_probabilities(pred, ids)
        masks = read_drive_masks(pred, ids) if include_masks else None
        for i, case_id in enumerate(tqdm(ids, desc="check drive predictions", unit="case", leave=False)):
            members.append((f"{case_id}.png", _png_bytes(quantise_probabilities(probabilities[i][0]))))
            if masks is not None:
                members.append((f"{MASKS_DIR}/{case_id}.png", _png_bytes(masks[i][0] * np.uint8(255))))
    except DataError as exc:
        raise SubmissionError(str(exc)) from None
    if sorted(ids) != sorted(OFFICIAL_TEST_IDS):
        tqdm.write(f"note: {len(ids)} cases; the official DRIVE test set is 01_test … 20_test")
    members.sort(key=lambda m: (m[0].startswith(f"{MASKS_DIR}/"), _sort_key(m[0].split("/")[-1])))
    with atomic_output_file(out, overwrite=overwrite) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return Path(out)


def _decode_png(data: bytes, source: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as handle:
            array = np.asarray(handle)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise DataError(f"{source} is not a readable PNG image") from None
    return _check_plane(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0), source)


def read_drive_submission(
    path: Path, case_ids: Sequence[str]
) -> tuple[LazySequence[np.ndarray], LazySequence[np.ndarray]]:
    """Masks ``(1, H, W)`` uint8 and probabilities ``(1, H, W)`` float32 of ``case_ids`` from a submission zip.

    Masks come from ``masks/<case_id>.png`` when the zip has them, else probability >= 0.5.

    Raises:
        SubmissionError: the zip cannot be opened or lacks a case's probability map.
        DataError: on access, a member is unreadable or malformed.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            contents = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"cannot open submission {path}: {exc}") from None
    for case_id in case_ids:
        if f"{case_id}.png" not in contents:
            raise SubmissionError(f"{path} has no {case_id}.png (the probability map of case {case_id})")
    has_masks = all(f"{MASKS_DIR}/{c}.png" in contents for c in case_ids)
    ids = list(case_ids)

    def probabilities(i: int) -> np.ndarray:
        name = f"{ids[i]}.png"
        return _decode_png(contents[name], f"{name} in {path}").astype(np.float32) / 255.0

    def masks(i: int) -> np.ndarray:
        if has_masks:
            name = f"{MASKS_DIR}/{ids[i]}.png"
            return _binary(_decode_png(contents[name], f"{name} in {path}"), f"{name} in {path}")
        return (probabilities(i) >= SUBMISSION_THRESHOLD).astype(np.uint8)

    return LazySequence(len(ids), masks), LazySequence(len(ids), probabilities)
