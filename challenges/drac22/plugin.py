"""The DRAC22 plugins on ultra-wide OCT angiography (docs/REFERENCE.md §2): Task 1 lesion segmentation,
Task 2 image quality and Task 3 diabetic retinopathy grading."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from eyegc.challenges.drac22.grading_layout import (
    DR_GRADING,
    IMAGE_QUALITY,
    GradingLayout,
    list_drac22_grading_cases,
)
from eyegc.challenges.drac22.grading_submission import (
    read_drac22_grading_submission,
    write_drac22_grading_submission,
)
from eyegc.challenges.drac22.layout import CLASS_FOLDERS, list_drac22_cases
from eyegc.challenges.drac22.metric import Drac22GradingMetric, Drac22SegmentationMetric
from eyegc.challenges.drac22.submission import (
    IMAGE_SIZE,
    read_drac22_prediction_folder,
    read_drac22_submission,
    write_drac22_prediction,
    write_drac22_submission,
)
from eyegc.common.datafiles import binary_mask
from eyegc.common.errors import DataError
from eyegc.common.imageio import read_image_array
from eyegc.common.plugin import Case, ClassSpec, ModelDefaults, Socket
from eyegc.common.task_kinds import ClassificationTask, SegmentationTask, classifier_defaults

__all__ = ["Drac22Grading", "Drac22Task1", "drac22_task1", "drac22_task2", "drac22_task3", "read_octa_image"]

_CLASS_NAMES = {
    "irma": "Intraretinal Microvascular Abnormalities",
    "npa": "Nonperfusion Areas",
    "nv": "Neovascularization",
}


def read_octa_image(path: Path) -> np.ndarray:
    """A DRAC22 image, 1024×1024 single-channel uint8, as ``(1, 1024, 1024)`` (a grey image saved as RGB is taken).

    Raises:
        DataError: unreadable, or not an 8-bit single-channel image of the official size.
    """
    image = read_image_array(path)
    if image.shape[0] == 3 and np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2]):
        image = image[:1]  # a grey image saved as RGB
    if image.shape[0] != 1 or image.dtype != np.uint8:
        raise DataError(
            f"{path}: DRAC22 images are 8-bit single-channel; got {image.shape[0]} channel(s) of {image.dtype}"
        )
    if image.shape[1:] != IMAGE_SIZE:
        raise DataError(
            f"{path} is {image.shape[2]}x{image.shape[1]}; DRAC22 images are {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]} "
            "(resize it, or check that it is a DRAC22 image)"
        )
    return image


@dataclass(frozen=True)
class Drac22Task1(SegmentationTask):
    """DRAC22 Task 1: IRMA, NPA and NV as three overlapping sigmoid channels on 1024×1024 OCTA.

    The container sockets are unconfirmed (DRAC22 took file uploads, not algorithms); these slugs
    are this project's choice and can be changed by constructing the plugin with other sockets.
    """

    name: str = "drac22-task1"
    challenge: str = "drac22"
    title: str = "DRAC22 Task 1 — lesion segmentation (IRMA, NPA, NV) in UW-OCTA"
    classes: tuple[ClassSpec, ...] = tuple(
        ClassSpec(key=k, name=_CLASS_NAMES[k], folder=folder) for k, folder in CLASS_FOLDERS.items()
    )
    in_channels: int = 1
    image_size: tuple[int, int] | None = IMAGE_SIZE
    defaults: ModelDefaults = field(
        default_factory=lambda: ModelDefaults(
            network="UNet",
            network_kwargs={"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
            patch_size=256,
            working_scale=0.5,
            batch_size=8,
            epochs=100,
            learning_rate=2e-3,
            loss="dice_bce",
            folds=5,
            patches_per_image=4,
        )
    )
    metric: Drac22SegmentationMetric = field(default_factory=Drac22SegmentationMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="uw-octa-image", relative_path="images/uw-octa-image"),)
    output_sockets: tuple[Socket, ...] = (
        Socket("irma-segmentation", "images/irma-segmentation", kind="Segmentation", class_key="irma"),
        Socket("npa-segmentation", "images/npa-segmentation", kind="Segmentation", class_key="npa"),
        Socket("nv-segmentation", "images/nv-segmentation", kind="Segmentation", class_key="nv"),
    )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """Cases of a split from the official layout (absent mask file = empty mask)."""
        return list_drac22_cases(root, split, require_labels=require_labels, allow_missing_class=allow_missing_class)

    def read_image(self, path: Path) -> np.ndarray:
        """A 1024×1024 single-channel uint8 image as ``(1, 1024, 1024)`` (see :func:`read_octa_image`)."""
        return read_octa_image(path)

    def read_target(self, case: Case) -> np.ndarray:
        """The three masks of a case as ``(3, 1024, 1024)`` uint8 0/1; an absent file is all zeros.

        Raises:
            DataError: a mask of another size, or with values other than 0/255 or 0/1 (as predictions).
        """
        return self.read_class_masks(
            case, IMAGE_SIZE, lambda path, shape: binary_mask(read_image_array(path), path, shape)
        )

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/<official class folder>/<case_id>.png`` (0/255) for every class, empty ones too."""
        write_drac22_prediction(out, case_id, masks)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
        """Masks from a prediction folder or from an official submission zip."""
        pred = Path(pred)
        if pred.is_file() and pred.suffix.lower() == ".zip":
            return read_drac22_submission(pred, case_ids)
        return read_drac22_prediction_folder(pred, case_ids)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """The official zip (``team`` required): ``<team>/1.nii.gz``, ``2.nii.gz``, ``3.nii.gz``."""
        return write_drac22_submission(pred, out, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic OCTA cases in the official layout, with a testing set that has ground truth."""
        from eyegc.challenges.drac22.sample_data import make_drac22_sample_data

        make_drac22_sample_data(out, cases=cases, test_cases=test_cases, seed=seed)


@dataclass(frozen=True)
class Drac22Grading(ClassificationTask):
    """DRAC22 Task 2 (image quality) or Task 3 (DR grade): one head of three grades per 1024×1024 image.

    Ranked by quadratic weighted kappa, ties by the one-vs-one AUC (:class:`Drac22GradingMetric`);
    submitted as one CSV (:func:`write_drac22_grading_submission`). ``layout`` says where the images
    and label CSVs are (their names are configurable by constructing the plugin with another).
    The sockets are this project's choice (DRAC22 took file uploads, not algorithms).
    """

    report_plots: ClassVar[tuple[str, ...]] = ("confusion",)
    submission_name: ClassVar[str] = "submission CSV"
    submission_suffix: ClassVar[str] = ".csv"
    name: str = "drac22-task3"
    challenge: str = "drac22"
    title: str = "DRAC22 Task 3 — diabetic retinopathy grade (0 normal, 1 NPDR, 2 PDR), kappa"
    layout: GradingLayout = DR_GRADING
    classes: tuple[ClassSpec, ...] = (ClassSpec(key="grade", name="DR grade", num_classes=3),)
    in_channels: int = 1
    image_size: tuple[int, int] | None = IMAGE_SIZE
    defaults: ModelDefaults = field(default_factory=lambda: classifier_defaults((512, 512)))
    metric: Drac22GradingMetric = field(default_factory=Drac22GradingMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="uw-octa-image", relative_path="images/uw-octa-image"),)
    output_sockets: tuple[Socket, ...] = (
        Socket("dr-grade", "dr-grade.json", super_kind="Value", kind="Integer", class_key="grade", content="grade"),
        Socket(
            "dr-grade-probabilities",
            "dr-grade-probabilities.json",
            super_kind="Value",
            kind="Anything",
            class_key="grade",
            content="probabilities",
        ),
    )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """Cases of a split with their grade from the split's label CSV (``allow_missing_class`` is ignored)."""
        return list_drac22_grading_cases(root, self.layout, split, require_labels, head=self.classes[0].key)

    def read_image(self, path: Path) -> np.ndarray:
        """A 1024×1024 single-channel uint8 image as ``(1, 1024, 1024)`` (see :func:`read_octa_image`)."""
        return read_octa_image(path)

    def read_submission(self, path: Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Grades and probabilities from the submission CSV (every case exactly once)."""
        return read_drac22_grading_submission(path, case_ids, int(self.classes[0].num_classes or 3))

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """The submission CSV (``case,class,P0,P1,P2``); ``images=DIR`` checks every test image is there once."""
        return write_drac22_grading_submission(pred, out, self.classes, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic OCTA images whose look follows the grade, with both label CSVs."""
        from eyegc.challenges.drac22.sample_data import make_drac22_grading_sample_data

        make_drac22_grading_sample_data(out, self.layout, cases=cases, test_cases=test_cases, seed=seed)


#: The registered instances (entry points ``eyegc.tasks: drac22-task1``, ``drac22-task2``, ``drac22-task3``).
drac22_task1 = Drac22Task1()
drac22_task2 = Drac22Grading(
    name="drac22-task2",
    title="DRAC22 Task 2 — image quality (0 poor, 1 good, 2 excellent), kappa",
    layout=IMAGE_QUALITY,
    classes=(ClassSpec(key="quality", name="Image quality", num_classes=3),),
    metric=Drac22GradingMetric(head="quality"),
    output_sockets=(
        Socket(
            "image-quality",
            "image-quality.json",
            super_kind="Value",
            kind="Integer",
            class_key="quality",
            content="grade",
        ),
        Socket(
            "image-quality-probabilities",
            "image-quality-probabilities.json",
            super_kind="Value",
            kind="Anything",
            class_key="quality",
            content="probabilities",
        ),
    ),
)
drac22_task3 = Drac22Grading()
