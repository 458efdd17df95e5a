"""The official DRAC22 Task 1 folder layout (docs/REFERENCE.md §2) and its reader."""

from __future__ import annotations

from pathlib import Path

from eyegc.common.datafiles import class_folders, index_files, split_folder
from eyegc.common.errors import DataError
from eyegc.common.plugin import Case

__all__ = [
    "CLASS_FOLDERS",
    "SEGMENTATION_DIR",
    "SPLIT_DIRS",
    "gt_class_dir",
    "image_dir",
    "list_drac22_cases",
    "sorted_case_ids",
]

SEGMENTATION_DIR = "A. Segmentation"
IMAGES_DIR = "1. Original Images"
GROUNDTRUTHS_DIR = "2. Groundtruths"
SPLIT_DIRS = {"train": "a. Training Set", "test": "b. Testing Set"}
#: class key -> the organisers' ground-truth folder name (also the prediction folder name).
CLASS_FOLDERS = {
    "irma": "1. Intraretinal Microvascular Abnormalities",
    "npa": "2. Nonperfusion Areas",
    "nv": "3. Neovascularization",
}


def _split_dir(split: str) -> str:
    return split_folder(split, SPLIT_DIRS)


def image_dir(root: Path, split: str) -> Path:
    """Folder of the split's original images under a DRAC22 data root."""
    return Path(root) / SEGMENTATION_DIR / IMAGES_DIR / _split_dir(split)


def gt_class_dir(root: Path, split: str, class_key: str) -> Path:
    """Folder of one class's ground-truth masks under a DRAC22 data root."""
    return Path(root) / SEGMENTATION_DIR / GROUNDTRUTHS_DIR / _split_dir(split) / CLASS_FOLDERS[class_key]


def sorted_case_ids(case_ids: list[str]) -> list[str]:
    """Case ids in the organisers' slice order: by the numeric value of the name (086 < 402 < 1299)."""

    def key(case_id: str) -> tuple[int, str]:
        try:
            return int(case_id), case_id
        except ValueError:
            raise DataError(
                f"DRAC22 image names are integers (e.g. 086.png); got {case_id!r}. Rename the file."
            ) from None

    return sorted(case_ids, key=key)


def list_drac22_cases(
    root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
) -> list[Case]:
    """Read the cases of one split from the official layout.

    A class whose mask file is absent for an image is an all-zero mask for that image (the
    organisers omit empty masks). ``require_labels`` demands the ground-truth folder itself;
    ``allow_missing_class`` lets a class folder be missing (its masks are then all absent).
    Suffixes are matched in any case (``086.PNG``); hidden files are skipped.

    Raises:
        DataError: the images folder is missing or empty, a name is not an integer, two files are
            one image, a file is not a PNG, a class folder is missing (unless allowed), or a mask
            names an image that does not exist.
    """
    root = Path(root)
    images = image_dir(root, split)
    if not images.is_dir():
        raise DataError(
            f"no DRAC22 images folder at {images}; --data/--gt must be the folder that holds "
            f"'{SEGMENTATION_DIR}' (try `eyegc sample-data drac22-task1 OUT` for an example layout)"
        )
    files = index_files(images, (".png",), what="DRAC22 image")
    if not files:
        raise DataError(f"{images} holds no .png images")
    ids = sorted_case_ids(list(files))
    gt_root = gt_class_dir(root, split, "irma").parent
    if not gt_root.is_dir():
        if require_labels:
            raise DataError(f"no ground-truth folder at {gt_root} (needed for split {split!r})")
        return [Case(case_id=case_id, image=files[case_id]) for case_id in ids]
    folders = class_folders(gt_root, CLASS_FOLDERS, allow_missing_class)
    masks: dict[str, dict[str, Path]] = {}
    for key, folder in folders.items():
        masks[key] = {} if folder is None else index_files(folder, (".png",), what="DRAC22 ground-truth mask")
        orphans = [name for name in masks[key] if name not in files]
        if orphans:
            names = ", ".join(masks[key][name].name for name in sorted(orphans)[:5])
            raise DataError(f"{folder} has masks with no image in {images}: {names}")
    return [
        Case(case_id=case_id, image=files[case_id], labels={key: masks[key].get(case_id) for key in CLASS_FOLDERS})
        for case_id in ids
    ]
