"""The IDRiD plugins: lesion segmentation scored by pooled AUPR (A) and DR/DME grading (B) (docs/REFERENCE.md §4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from eyegc.challenges.idrid.layout import (
    GRADING_HEADS,
    LESION_FOLDERS,
    LESION_KEYS,
    LESION_NAMES,
    list_idrid_grading_cases,
    list_idrid_lesion_cases,
    read_idrid_mask,
)
from eyegc.challenges.idrid.metric import IdridGradingMetric, IdridLesionMetric
from eyegc.challenges.idrid.submission import (
    read_idrid_grading_submission,
    read_idrid_lesion_masks,
    read_idrid_lesion_probabilities,
    write_idrid_grading_submission,
    write_idrid_lesion_prediction,
    write_idrid_lesion_submission,
)
from eyegc.common.errors import DataError
from eyegc.common.imageio import read_image_array
from eyegc.common.plugin import Case, ClassSpec, ModelDefaults, Socket
from eyegc.common.task_kinds import FUNDUS_GRADING_TTA, ClassificationTask, SegmentationTask, classifier_defaults

__all__ = ["IdridGrading", "IdridLesions", "idrid_grading", "idrid_lesions", "idrid_lesions_od"]


def read_fundus(path: Path) -> np.ndarray:
    """A colour fundus photograph as ``(3, H, W)`` uint8 (a grey one is repeated to three channels).

    Raises:
        DataError: unreadable, or not an 8-bit colour or grey image.
    """
    image = read_image_array(path)
    if image.shape[0] == 4:
        image = image[:3]
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    if image.shape[0] != 3 or image.dtype != np.uint8:
        raise DataError(
            f"{path}: IDRiD images are 8-bit colour photographs; got {image.shape[0]} channel(s) of {image.dtype}"
        )
    return image


def _image_shape(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file header (no decoding of a 12-megapixel JPEG)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            width, height = handle.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read {path}: the file is corrupt, truncated or not an image ({exc})") from None
    return height, width


@dataclass(frozen=True)
class IdridLesions(SegmentationTask):
    """IDRiD A: MA, HE, EX, SE (and OD with ``with_od``) as overlapping sigmoid channels on colour fundus images.

    Images keep their own size (4288×2848 officially); training and inference run at
    ``working_scale`` (default 0.5) and probabilities are resized back to the original size.
    Predictions are 8-bit probability maps with official names (AUPR ranks scores, not masks)
    plus thresholded masks. The container sockets are this project's choice.
    """

    with_od: bool = False
    report_plots: ClassVar[tuple[str, ...]] = ("pr",)
    name: str = "idrid-lesions"
    challenge: str = "idrid"
    title: str = "IDRiD A — lesion segmentation (MA, HE, EX, SE), pooled AUPR"
    in_channels: int = 3
    image_size: tuple[int, int] | None = None
    defaults: ModelDefaults = field(
        default_factory=lambda: ModelDefaults(
            network="UNet",
            network_kwargs={"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2},
            patch_size=384,
            working_scale=0.5,
            batch_size=8,
            epochs=100,
            learning_rate=2e-3,
            loss="dice_bce",
            folds=5,
            patches_per_image=8,
        )
    )
    input_sockets: tuple[Socket, ...] = (Socket(slug="color-fundus-image", relative_path="images/color-fundus"),)

    @property
    def class_keys(self) -> tuple[str, ...]:
        """``ma, he, ex, se`` (+ ``od``)."""
        return (*LESION_KEYS, "od") if self.with_od else LESION_KEYS

    @property
    def classes(self) -> tuple[ClassSpec, ...]:  # type: ignore[override]
        """One class per lesion folder."""
        return tuple(ClassSpec(key=k, name=LESION_NAMES[k], folder=LESION_FOLDERS[k][0]) for k in self.class_keys)

    @property
    def metric(self) -> IdridLesionMetric:
        """Mean AUPR over MA, HE, EX, SE (OD is reported, not ranked)."""
        return IdridLesionMetric(classes=self.class_keys)

    @property
    def output_sockets(self) -> tuple[Socket, ...]:
        """One probability map per lesion."""
        return tuple(
            Socket(
                f"{k}-probability", f"images/{k}-probability-map", kind="Heat Map", class_key=k, content="probability"
            )
            for k in self.class_keys
        )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """Cases of ``A. Segmentation`` (a missing mask file = lesion absent)."""
        return list_idrid_lesion_cases(
            root, split, require_labels, self.class_keys, allow_missing_class=allow_missing_class
        )

    def read_image(self, path: Path) -> np.ndarray:
        """The colour photograph as ``(3, H, W)`` uint8."""
        return read_fundus(path)

    def read_target(self, case: Case) -> np.ndarray:
        """The lesion masks as ``(C, H, W)`` uint8 0/1 (masks of any bit depth, ``> 0``)."""
        self.ground_truth(case)  # before the image is opened: a test case has none
        return self.read_class_masks(case, _image_shape(case.image), read_idrid_mask)

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/<case>_<LESION>.tif`` 8-bit probability maps and ``out/masks/<case>_<LESION>.tif`` (0/255)."""
        write_idrid_lesion_prediction(out, case_id, masks, probabilities, class_keys=self.class_keys)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Masks, one case at a time, from a prediction folder or a submission zip."""
        return read_idrid_lesion_masks(pred, case_ids, class_keys=self.class_keys, lazy=True)

    def read_probabilities(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """8-bit probability maps, one case at a time (the AUPR streams them)."""
        return read_idrid_lesion_probabilities(pred, case_ids, class_keys=self.class_keys)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """A zip of the probability maps in official names, one folder per lesion."""
        return write_idrid_lesion_submission(pred, out, class_keys=self.class_keys, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic fundus images with lesions in the official layout (smaller than 4288×2848)."""
        from eyegc.challenges.idrid.sample_data import make_idrid_sample_data

        make_idrid_sample_data(out, cases=cases, test_cases=test_cases, seed=seed, with_od=self.with_od)


@dataclass(frozen=True)
class IdridGrading(ClassificationTask):
    """IDRiD B: one network, two heads: DR grade (0–4) and risk of macular edema (0–2)."""

    name: str = "idrid-grading"
    challenge: str = "idrid"
    title: str = "IDRiD B — DR grade and DME risk, joint accuracy"
    classes: tuple[ClassSpec, ...] = GRADING_HEADS
    in_channels: int = 3
    image_size: tuple[int, int] | None = None
    defaults: ModelDefaults = field(default_factory=lambda: classifier_defaults((512, 768)))
    allowed_tta: ClassVar[Mapping[str, tuple[str, ...]]] = FUNDUS_GRADING_TTA
    submission_name: ClassVar[str] = "CSV"
    submission_suffix: ClassVar[str] = ".csv"
    metric: IdridGradingMetric = field(default_factory=IdridGradingMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="color-fundus-image", relative_path="images/color-fundus"),)
    output_sockets: tuple[Socket, ...] = (
        Socket("dr-grade", "dr-grade.json", super_kind="Value", kind="Integer", class_key="dr", content="grade"),
        Socket("dme-risk", "dme-risk.json", super_kind="Value", kind="Integer", class_key="dme", content="grade"),
    )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """Cases of ``B. Disease Grading`` with their grades from the label CSV.

        Grades come from one CSV, not class folders: ``allow_missing_class`` is ignored.
        """
        return list_idrid_grading_cases(root, split, require_labels=require_labels)

    def read_image(self, path: Path) -> np.ndarray:
        """The colour photograph as ``(3, H, W)`` uint8."""
        return read_fundus(path)

    def read_submission(self, path: Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Grade pairs from the grading CSV (probabilities one-hot)."""
        return read_idrid_grading_submission(path, case_ids, self.classes)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """The grading CSV in the label file's own columns (``Image name``, ``Retinopathy grade``, …)."""
        return write_idrid_grading_submission(pred, out, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic fundus images whose lesion load follows the grade, with both label CSVs."""
        from eyegc.challenges.idrid.sample_data import make_idrid_grading_sample_data

        make_idrid_grading_sample_data(out, cases=cases, test_cases=test_cases, seed=seed)


#: The registered instances (entry points ``idrid-lesions``, ``idrid-lesions-od``, ``idrid-grading``).
idrid_lesions = IdridLesions()
idrid_lesions_od = IdridLesions(with_od=True, name="idrid-lesions-od", title="IDRiD A — lesions and optic disc")
idrid_grading = IdridGrading()
