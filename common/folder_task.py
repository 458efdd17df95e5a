"""A ready-made plugin for a segmentation challenge in a plain folder layout.

A new challenge whose data can be laid out (or linked) as::

    ROOT/<split>/images/<case>.png                 split: train, test
    ROOT/<split>/masks/<class key>/<case>.png      0/255 (or 0/1); an absent file is an empty mask

needs no code beyond one :class:`FolderSegmentationTask` (its name, classes and model defaults)
and one line under the ``eyegc.tasks`` entry-point group of its own package. Predictions are
``OUT/<class key>/<case>.png`` (0/255), the submission is a zip of that folder, and the metric is
:class:`~eyegc.common.evaluation.MeanOverlapMetric` (per image and class Dice and IoU, NaN where
the truth is empty, mean over images then classes; ranked by mean Dice). Every rule of the shared
readers applies (suffixes in any case, no duplicates, masks named after an image, binary values,
the image's size). Subclass it to change a piece: a challenge's own metric or submission format
replaces one method.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.datafiles import binary_mask, class_folders, index_files
from eyegc.common.errors import DataError
from eyegc.common.evaluation import MeanOverlapMetric
from eyegc.common.imageio import atomic_output_file, read_image_array, write_png
from eyegc.common.plugin import Case, ClassSpec, ModelDefaults, Socket, TaskKind
from eyegc.common.task_kinds import DIHEDRAL_TTA, SegmentationTask
from PIL import Image

__all__ = ["FolderSegmentationTask"]


def _small_unet() -> ModelDefaults:
    return ModelDefaults(
        network="UNet",
        network_kwargs={"channels": (16, 32, 64), "strides": (2, 2), "num_res_units": 1},
        patch_size=128,
        batch_size=8,
        epochs=50,
        learning_rate=2e-3,
        folds=5,
    )


@dataclass(frozen=True)
class FolderSegmentationTask(SegmentationTask):
    """A multi-label (sigmoid) segmentation task on the folder layout of this module.

    Sockets default to one image input ``<name>-image`` and one ``Segmentation`` output per class
    ``<class key>-segmentation``; map them to the platform's with ``./submit.sh --sockets``.
    """

    name: str
    challenge: str
    title: str
    classes: tuple[ClassSpec, ...]
    in_channels: int = 1
    image_size: tuple[int, int] | None = None
    kind: TaskKind = TaskKind.MULTILABEL_SEGMENTATION
    defaults: ModelDefaults = field(default_factory=_small_unet)
    allowed_tta: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DIHEDRAL_TTA))
    metric: Any = None
    input_sockets: tuple[Socket, ...] = ()
    output_sockets: tuple[Socket, ...] = ()

    def __post_init__(self) -> None:
        keys = tuple(c.key for c in self.classes)
        if self.metric is None:
            object.__setattr__(self, "metric", MeanOverlapMetric(keys))
        if not self.input_sockets:
            object.__setattr__(self, "input_sockets", (Socket(f"{self.name}-image", f"images/{self.name}-image"),))
        if not self.output_sockets:
            sockets = tuple(
                Socket(f"{k}-segmentation", f"images/{k}-segmentation", kind="Segmentation", class_key=k) for k in keys
            )
            object.__setattr__(self, "output_sockets", sockets)

    # -- data ------------------------------------------------------------------------------------

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """The cases of ``ROOT/<split>/images``, with ``ROOT/<split>/masks/<class>`` as ground truth."""
        images = Path(root) / split / "images"
        if not images.is_dir():
            raise DataError(f"no images folder at {images}; {self.name} reads ROOT/{split}/images/<case>.png")
        files = index_files(images, (".png",), what=f"{self.name} image")
        if not files:
            raise DataError(f"{images} holds no .png images")
        masks_root = Path(root) / split / "masks"
        if not masks_root.is_dir():
            if require_labels:
                raise DataError(f"no ground-truth folder at {masks_root} (needed for split {split!r})")
            return [Case(case_id=c, image=files[c]) for c in sorted(files)]
        folders = class_folders(masks_root, {c.key: c.key for c in self.classes}, allow_missing_class)
        masks: dict[str, dict[str, Path]] = {}
        for key, folder in folders.items():
            masks[key] = {} if folder is None else index_files(folder, (".png",), what=f"{self.name} mask")
            orphans = sorted(set(masks[key]) - set(files))
            if orphans:
                raise DataError(f"{folder} has masks with no image in {images}: {', '.join(orphans[:5])}")
        return [Case(case_id=c, image=files[c], labels={k: masks[k].get(c) for k in masks}) for c in sorted(files)]

    def read_image(self, path: Path) -> np.ndarray:
        """An image as ``(in_channels, H, W)``; a grey image saved as RGB counts as grey."""
        image = read_image_array(path)
        if (
            self.in_channels == 1
            and image.shape[0] == 3
            and (image[0] == image[1]).all()
            and (image[0] == image[2]).all()
        ):
            image = image[:1]
        if image.shape[0] != self.in_channels:
            raise DataError(f"{path}: {self.name} images have {self.in_channels} channel(s); got {image.shape[0]}")
        if self.image_size is not None and image.shape[1:] != self.image_size:
            raise DataError(
                f"{path} is {image.shape[2]}x{image.shape[1]}; "
                f"{self.name} images are {self.image_size[1]}x{self.image_size[0]}"
            )
        return image

    def read_target(self, case: Case) -> np.ndarray:
        """The masks of a case as ``(classes, H, W)`` uint8 0/1; an absent file is all zeros."""
        self.ground_truth(case)  # before the image is read: a test case has none
        shape = self.read_image(case.image).shape[1:]
        return self.read_class_masks(case, shape, lambda path, size: binary_mask(read_image_array(path), path, size))

    # -- predictions and submission -------------------------------------------------------------

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/<class key>/<case_id>.png`` (0/255) for every class."""
        for spec, mask in zip(self.classes, masks, strict=True):
            (Path(out) / spec.key).mkdir(parents=True, exist_ok=True)
            write_png(Path(out) / spec.key / f"{case_id}.png", (mask > 0).astype(np.uint8) * 255)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
        """Masks from a prediction folder or from a submission zip (the same files inside)."""
        pred = Path(pred)
        if pred.is_file() and pred.suffix.lower() == ".zip":
            with tempfile.TemporaryDirectory(prefix="eyegc-submission-") as folder:
                with zipfile.ZipFile(pred) as archive:
                    for member in archive.namelist():  # only the layout's own names: nothing escapes
                        parts = Path(member).parts
                        if len(parts) == 2 and parts[0] in {c.key for c in self.classes}:
                            (Path(folder) / parts[0]).mkdir(exist_ok=True)
                            (Path(folder) / member).write_bytes(archive.read(member))
                return self._read_folder(Path(folder), case_ids)
        return self._read_folder(pred, case_ids)

    def _read_folder(self, pred: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
        cases = []
        for case_id in case_ids:
            masks = []
            for spec in self.classes:
                path = pred / spec.key / f"{case_id}.png"
                if not path.is_file():
                    raise DataError(f"no prediction for case {case_id}: {path} is missing")
                masks.append(binary_mask(read_image_array(path), path, None))
            cases.append(np.stack(masks))
        return cases

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """A zip of the prediction folder's class folders; nothing is written if a mask is unreadable."""
        pred = Path(pred)
        ids = sorted({p.stem for spec in self.classes for p in (pred / spec.key).glob("*.png")})
        if not ids:
            raise DataError(f"{pred} holds no predictions (<class>/<case>.png)")
        masks = self._read_folder(pred, ids)  # every file checked before anything is written
        with (
            atomic_output_file(Path(out), overwrite=bool(options.get("overwrite"))) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
        ):
            for case_id, case_masks in zip(ids, masks, strict=True):
                for spec, mask in zip(self.classes, case_masks, strict=True):
                    buffer = io.BytesIO()
                    Image.fromarray(mask * 255).save(buffer, format="PNG")
                    archive.writestr(f"{spec.key}/{case_id}.png", buffer.getvalue())
        return Path(out)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Grey images with bright discs, one class per disc size, in this module's layout."""
        rng = np.random.default_rng(seed)
        size = self.image_size or (256, 256)
        yy, xx = np.mgrid[: size[0], : size[1]]
        unit = max(2, min(size) // 16)
        for split, count in (("train", cases), ("test", test_cases)):
            for n in range(count):
                image = rng.normal(60, 10, size).clip(0, 255)
                for c, spec in enumerate(self.classes):
                    radius = unit * (1 + c)
                    cy, cx = rng.integers(radius, size[0] - radius), rng.integers(radius, size[1] - radius)
                    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
                    image[disc] = 200
                    (Path(out) / split / "masks" / spec.key).mkdir(parents=True, exist_ok=True)
                    write_png(Path(out) / split / "masks" / spec.key / f"case{n:03d}.png", disc.astype(np.uint8) * 255)
                (Path(out) / split / "images").mkdir(parents=True, exist_ok=True)
                write_png(Path(out) / split / "images" / f"case{n:03d}.png", image.astype(np.uint8))
