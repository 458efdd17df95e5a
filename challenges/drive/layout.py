"""The official DRIVE folder layout (docs/REFERENCE.md §5), its reader and the DRIVE file readers.

A DRIVE root holds ``training/`` and/or ``test/``, each with::

    images/21_training.tif        RGB colour fundus photograph, 565 wide × 584 high
    1st_manual/21_manual1.gif     vessel mask of the first observer, 0/255 (the ground truth)
    mask/21_training_mask.gif     field-of-view (FOV) mask, 0/255

(``test/images/01_test.tif``, ``test/1st_manual/01_manual1.gif``, ``test/mask/01_test_mask.gif``).
The case id is the image stem (``21_training``, ``01_test``).

Choices:

* Split names are ``train`` (folder ``training``) and ``test``.
* ``root`` may also be the split folder itself (``.../DRIVE/training`` for ``train``): a folder
  named like the requested split that holds ``images/`` is accepted as that split.
* A case's labels are ``{"vessel": <manual GIF>, "fov": <FOV GIF or None>}`` (``"fov"`` is there so
  that data fingerprints cover it); :func:`fov_path` finds the FOV file from the image path for any
  case, labelled or not.
* A missing FOV mask is, by default, estimated from the image (:func:`estimate_fov`: red channel
  above 20, opened, holes filled, largest component), which reproduces the official masks of 14
  of the 20 training images exactly and the others to within 0.8% of pixels; ``fov_missing="error"``
  raises a DataError instead.
* GIF files are read with Pillow (SimpleITK has no GIF reader); other mask formats (PNG, ...)
  through :mod:`eyegc.common.imageio`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from eyegc.common.datafiles import binary_mask, index_files, split_folder
from eyegc.common.errors import DataError
from eyegc.common.imageio import read_image_array
from eyegc.common.plugin import Case
from eyegc.common.preprocessing import estimate_fov
from PIL import Image, UnidentifiedImageError

__all__ = [
    "FOV_DIR",
    "IMAGES_DIR",
    "IMAGE_SIZE",
    "MANUAL_DIR",
    "SPLIT_DIRS",
    "estimate_fov",
    "fov_path",
    "list_drive_cases",
    "manual_name",
    "read_drive_fov",
    "read_drive_image",
    "read_drive_mask",
    "split_dir",
]

#: (height, width) of every DRIVE image and mask.
IMAGE_SIZE = (584, 565)
#: split name -> the folder under the DRIVE root.
SPLIT_DIRS = {"train": "training", "test": "test"}
IMAGES_DIR = "images"
MANUAL_DIR = "1st_manual"
FOV_DIR = "mask"
#: Red-channel level above which a pixel is inside the estimated field of view.
_IMAGE_SUFFIXES = (".tif", ".tiff")
_NAME = re.compile(r"^(\d+)_(training|test)$")
_MANUAL_NAME = re.compile(r"^(\d+)_manual1$")


def _split_folder_name(split: str) -> str:
    return split_folder(split, SPLIT_DIRS)


def split_dir(root: Path, split: str) -> Path:
    """The folder of one split: ``root/training`` or ``root/test``, or ``root`` itself when it is that folder.

    Raises:
        DataError: the root holds neither split folder, or is the other split's folder.
    """
    root = Path(root)
    name = _split_folder_name(split)
    if (root / name).is_dir():
        return root / name
    if (root / IMAGES_DIR).is_dir():
        if root.name == name:
            return root
        raise DataError(
            f"{root} looks like one DRIVE split folder ({root.name!r}), not the {name!r} folder that split "
            f"{split!r} needs; pass the DRIVE root that holds 'training/' and/or 'test/'"
        )
    raise DataError(
        f"no DRIVE {name!r} folder in {root}; --data/--gt must be the DRIVE root, which holds 'training/' "
        "and/or 'test/' (each with images/, 1st_manual/, mask/) — try `eyegc sample-data drive-vessels OUT` "
        "for an example layout"
    )


def manual_name(case_id: str) -> str:
    """``"21_training"`` -> ``"21_manual1.gif"``: the first observer's vessel mask file name."""
    match = _NAME.match(case_id)
    number = match.group(1) if match else case_id
    return f"{number}_manual1.gif"


def fov_path(case: Case) -> Path:
    """The case's FOV mask file (``<split>/mask/<case_id>_mask.gif``); it may not exist."""
    if case.labels is not None and isinstance(case.labels.get("fov"), Path):
        return case.labels["fov"]
    return Path(case.image).parent.parent / FOV_DIR / f"{case.case_id}_mask.gif"


def list_drive_cases(root: Path, split: str = "train", require_labels: bool = True) -> list[Case]:
    """Read the cases of one split from the official layout, sorted by image number.

    Labels are ``{"vessel": Path, "fov": Path | None}`` where the manual mask exists, else ``None``
    (only allowed without ``require_labels``).

    Raises:
        DataError: no split folder (the root must hold ``training/`` and/or ``test/``), no or an
            empty ``images/`` folder, an image not named ``NN_training.tif``/``NN_test.tif``, or (with
            ``require_labels``) a missing ``1st_manual`` folder or manual mask (the message names it).
    """
    folder = split_dir(root, split)
    images = folder / IMAGES_DIR
    if not images.is_dir():
        raise DataError(f"no images folder at {images}; a DRIVE split folder holds images/, 1st_manual/, mask/")
    files = index_files(images, _IMAGE_SUFFIXES, what="DRIVE image", case_id=_image_case_id)
    if not files:
        raise DataError(f"{images} holds no .tif images (DRIVE images are named like 21_training.tif)")
    manual_dir = folder / MANUAL_DIR
    has_labels = manual_dir.is_dir()
    if require_labels and not has_labels:
        raise DataError(f"no ground-truth folder at {manual_dir} (needed for split {split!r})")
    manuals = index_files(manual_dir, (".gif",), "DRIVE manual vessel mask", _manual_number) if has_labels else {}
    fov_dir = folder / FOV_DIR
    fovs = index_files(fov_dir, (".gif",), "DRIVE field-of-view mask", _fov_case_id) if fov_dir.is_dir() else {}
    cases = []
    for number, case_id in sorted((_number(c), c) for c in files):
        path = files[case_id]
        labels = None
        if has_labels:
            manual = manuals.get(str(number))
            if manual is not None:
                labels = {"vessel": manual, "fov": fovs.get(case_id)}
            elif require_labels:
                raise DataError(
                    f"no vessel mask for {path.name}: expected {manual_dir / manual_name(case_id)} "
                    "(the first observer's manual segmentation)"
                )
        cases.append(Case(case_id=case_id, image=path, labels=labels))
    return cases


def _number(case_id: str) -> int:
    match = _NAME.match(case_id)
    return int(match.group(1)) if match else -1


def _image_case_id(path: Path, stem: str) -> str:
    if not _NAME.match(stem):
        raise DataError(
            f"{path}: DRIVE images are named NN_training.tif or NN_test.tif (e.g. 21_training.tif); rename it"
        )
    return stem


def _manual_number(path: Path, stem: str) -> str:
    """The image number of a manual mask: ``21_manual1`` -> ``"21"`` (``021_manual1`` too)."""
    match = _MANUAL_NAME.match(stem)
    if not match:
        raise DataError(f"{path}: DRIVE manual masks are named NN_manual1.gif (e.g. 21_manual1.gif); rename it")
    return str(int(match.group(1)))


def _fov_case_id(path: Path, stem: str) -> str:
    if not (stem.endswith("_mask") and _NAME.match(stem[: -len("_mask")])):
        raise DataError(
            f"{path}: DRIVE field-of-view masks are named <image name>_mask.gif (e.g. 21_training_mask.gif); rename it"
        )
    return stem[: -len("_mask")]


def _check_size(path: Path, shape: tuple[int, ...], what: str) -> None:
    if tuple(shape) != IMAGE_SIZE:
        raise DataError(
            f"{path} is {shape[1]}x{shape[0]} (W x H); DRIVE {what} are {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} "
            "(check that it is a DRIVE file, or resize it)"
        )


def read_drive_image(path: Path, channels: Literal["rgb", "green"] = "rgb") -> np.ndarray:
    """Read a DRIVE fundus image as ``(3, 584, 565)`` (``"rgb"``) or ``(1, 584, 565)`` (``"green"``) uint8.

    Raises:
        DataError: unreadable, not 8-bit RGB, or not 565×584.
    """
    path = Path(path)
    if channels not in ("rgb", "green"):
        raise ValueError(f"channels must be 'rgb' or 'green', got {channels!r}")
    image = read_image_array(path)
    if image.shape[0] == 4:
        image = image[:3]  # RGBA: the alpha channel carries no fundus information
    if image.shape[0] != 3 or image.dtype != np.uint8:
        raise DataError(
            f"{path}: DRIVE images are 8-bit RGB colour photographs; got {image.shape[0]} channel(s) of {image.dtype}"
        )
    _check_size(path, image.shape[1:], "images")
    return image[1:2] if channels == "green" else image


def _read_gif(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    try:
        with Image.open(path) as handle:
            handle.seek(0)
            array = np.asarray(handle.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read {path}: the file is corrupt, truncated or not a GIF image ({exc})") from None
    return array


def read_drive_mask(path: Path) -> np.ndarray:
    """Read a DRIVE vessel or FOV mask (GIF 0/255, or any readable mask) as ``(584, 565)`` uint8 0/1.

    Raises:
        DataError: unreadable, not 565×584, or values other than 0/255 or 0/1 (the official GIFs
            hold 0/255; predictions are held to the same rule).
    """
    path = Path(path)
    array = _read_gif(path) if path.suffix.lower() == ".gif" else read_image_array(path)
    _check_size(path, array.shape[-2:], "masks")
    return binary_mask(array, path)


def read_drive_fov(case: Case, fov_missing: Literal["estimate", "error"] = "estimate") -> np.ndarray:
    """The case's field of view as ``(584, 565)`` bool.

    Args:
        case: a case from :func:`list_drive_cases`.
        fov_missing: ``"estimate"`` computes the FOV from the image (:func:`estimate_fov`) when the
            mask file is absent; ``"error"`` raises instead.

    Raises:
        DataError: the FOV mask is unreadable or the wrong size, or absent with ``fov_missing="error"``.
    """
    if fov_missing not in ("estimate", "error"):
        raise ValueError(f"fov_missing must be 'estimate' or 'error', got {fov_missing!r}")
    path = fov_path(case)
    if path.is_file():
        fov = read_drive_mask(path).astype(bool)
        where = str(path)
    elif fov_missing == "error":
        raise DataError(f"no field-of-view mask for {case.image.name}: expected {path}")
    else:
        fov = estimate_fov(read_drive_image(case.image))
        where = f"the field of view estimated from {case.image} (no {path})"
    if not fov.any():
        # An empty FOV would drop the case from every metric and change the mean without a word.
        raise DataError(f"{where}: the field of view is empty (all 0); use the case's own FOV mask (0/255)")
    return fov
