"""DRAC22 Task 1 prediction folders and the official submission zip (docs/REFERENCE.md §2).

A prediction folder holds ``<official class folder>/<image name>.png`` masks (0/255) for every
image and class. The submission is a zip of ``<Team>/1.nii.gz``, ``2.nii.gz``, ``3.nii.gz``
(IRMA, NPA, NV): uint8 0/1 volumes of shape N×1024×1024, slices in numeric name order, written
with SimpleITK ``GetImageFromArray`` (spacing 1) as the organisers do.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from eyegc.challenges.drac22.layout import CLASS_FOLDERS, sorted_case_ids
from eyegc.common.datafiles import check_mask_values
from eyegc.common.errors import DataError, SubmissionError
from eyegc.common.imageio import atomic_output_file, read_image_array, write_png, write_sitk_image
from tqdm import tqdm

__all__ = [
    "IMAGE_SIZE",
    "OFFICIAL_TEST_CASES",
    "prediction_case_ids",
    "read_drac22_prediction_folder",
    "read_drac22_submission",
    "write_drac22_prediction",
    "write_drac22_submission",
]

IMAGE_SIZE = (1024, 1024)
OFFICIAL_TEST_CASES = 65
#: volume file name in the zip -> class key, in the organisers' class numbering.
VOLUME_NAMES = {"1.nii.gz": "irma", "2.nii.gz": "npa", "3.nii.gz": "nv"}
_ZIP_DATE = (2022, 9, 1, 0, 0, 0)  # fixed so that the same masks always give the same zip bytes


def write_drac22_prediction(out: Path, case_id: str, masks: np.ndarray) -> None:
    """Write one case's ``(3, H, W)`` 0/1 masks as ``out/<class folder>/<case_id>.png`` (0/255)."""
    for key, mask in zip(CLASS_FOLDERS, masks, strict=True):
        folder = Path(out) / CLASS_FOLDERS[key]
        folder.mkdir(parents=True, exist_ok=True)
        write_png(folder / f"{case_id}.png", (mask > 0).astype(np.uint8) * 255)


def prediction_case_ids(pred: Path) -> list[str]:
    """Image names found in a prediction folder (union over class folders), in numeric order."""
    names: set[str] = set()
    for folder_name in CLASS_FOLDERS.values():
        folder = Path(pred) / folder_name
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.png"))
    return sorted_case_ids(sorted(names))


def _read_binary_mask(path: Path) -> np.ndarray:
    array = read_image_array(path)
    if array.shape != (1, *IMAGE_SIZE):
        raise SubmissionError(
            f"{path} has shape {array.shape[1:]} with {array.shape[0]} channel(s); DRAC22 masks are "
            f"single-channel {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}"
        )
    check_mask_values(array, path, what="prediction mask")
    return (array[0] > 0).astype(np.uint8)


def read_drac22_prediction_folder(pred: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
    """Read ``(3, 1024, 1024)`` 0/1 masks for ``case_ids`` from a prediction folder.

    Raises:
        SubmissionError: a class folder or image is missing, a mask has the wrong size, or a mask
            is not binary. The message names the file.
    """
    pred = Path(pred)
    if not pred.is_dir():
        raise SubmissionError(f"prediction folder not found: {pred}")
    for folder_name in CLASS_FOLDERS.values():
        if not (pred / folder_name).is_dir():
            raise SubmissionError(
                f"{pred} has no class folder {folder_name!r}; a DRAC22 prediction folder needs all three "
                f"({', '.join(CLASS_FOLDERS.values())}) — write it with `eyegc predict drac22-task1`"
            )
    cases = []
    for case_id in case_ids:
        masks = []
        for folder_name in CLASS_FOLDERS.values():
            path = pred / folder_name / f"{case_id}.png"
            if not path.is_file():
                raise SubmissionError(f"no prediction for case {case_id}: {path} is missing")
            try:
                masks.append(_read_binary_mask(path))
            except DataError as exc:
                raise SubmissionError(str(exc)) from None
        cases.append(np.stack(masks))
    return cases


def _check_team(team: str | None) -> str:
    if team is None:
        raise SubmissionError(
            "the DRAC22 zip holds one folder named after the team: pass --team NAME (letters, digits, '_', '-', '.')"
        )
    if not team or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", team):
        raise SubmissionError(
            f"team name {team!r} must start with a letter or digit and use only letters, digits, '_', '-' or '.' "
            "(it becomes the folder name inside the zip)"
        )
    return team


def write_drac22_submission(
    pred: Path, out: Path, team: str | None = None, case_ids: Sequence[str] | None = None, overwrite: bool = False
) -> Path:
    """Validate a prediction folder and write the official submission zip.

    Every mask is read and checked before anything is written; on any error no file is left.

    Args:
        pred: prediction folder written by ``eyegc predict drac22-task1``.
        out: the zip to write.
        team: team name, the folder inside the zip (required: ``None`` is an error saying so).
        case_ids: the images to include (default: every image found in ``pred``).
        overwrite: replace an existing ``out``.

    Returns:
        The path written.
    """
    team = _check_team(team)
    ids = sorted_case_ids(list(case_ids) if case_ids is not None else prediction_case_ids(pred))
    if not ids:
        raise SubmissionError(f"{pred} holds no predicted masks")
    masks = read_drac22_prediction_folder(pred, ids)
    if len(ids) != OFFICIAL_TEST_CASES:
        tqdm.write(f"note: {len(ids)} images; the official DRAC22 test set has {OFFICIAL_TEST_CASES}")
    with (
        atomic_output_file(out, overwrite=overwrite) as tmp,
        tempfile.TemporaryDirectory() as work,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive,
    ):
        for index, (volume_name, _key) in enumerate(VOLUME_NAMES.items()):
            volume = np.stack([case[index] for case in masks]).astype(np.uint8)
            nii = Path(work) / volume_name
            write_sitk_image(sitk.GetImageFromArray(volume), nii)
            info = zipfile.ZipInfo(f"{team}/{volume_name}", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, nii.read_bytes())
    return Path(out)


def read_drac22_submission(path: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
    """Read a submission zip back as ``(3, H, W)`` masks per case, ``case_ids`` in numeric order.

    Raises:
        SubmissionError: the zip does not hold one team folder with 1/2/3.nii.gz, or a volume's
            slice count differs from the number of ground-truth cases.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"cannot open submission {path}: {exc}") from None
    with archive, tempfile.TemporaryDirectory() as work:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        teams = {n.split("/")[0] for n in names if n.count("/") == 1}
        if len(teams) != 1:
            raise SubmissionError(
                f"{path} must hold exactly one team folder with 1.nii.gz, 2.nii.gz, 3.nii.gz; found {names}"
            )
        team = teams.pop()
        volumes = []
        for volume_name in VOLUME_NAMES:
            member = f"{team}/{volume_name}"
            if member not in names:
                raise SubmissionError(f"{path} has no {member}")
            target = Path(work) / volume_name
            target.write_bytes(archive.read(member))
            try:
                volume = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
            except RuntimeError:
                raise SubmissionError(f"{member} in {path} is not a readable NIfTI volume") from None
            if volume.ndim != 3 or volume.shape != (len(case_ids), *IMAGE_SIZE):
                raise SubmissionError(
                    f"{member} in {path} has shape {volume.shape}; expected {len(case_ids)} slices "
                    f"(one per ground-truth image) of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}"
                )
            try:
                check_mask_values(volume, f"{member} in {path}", what="submission volume")
            except DataError as error:
                raise SubmissionError(str(error)) from None
            volumes.append(volume)
    ordered = sorted_case_ids(list(case_ids))
    by_id = {case_id: np.stack([v[i] for v in volumes]) for i, case_id in enumerate(ordered)}
    return [by_id[c] for c in case_ids]
