"""The GOALS plugins: OCT layer segmentation and glaucoma classification (docs/REFERENCE.md §3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from eyegc.challenges.goals.encoding import (
    BACKGROUND_VALUE,
    LAYER_VALUES,
    read_goals_image,
    read_layer_mask,
)
from eyegc.challenges.goals.layout import IMAGE_SIZE, list_goals_glaucoma_cases, list_goals_layer_cases
from eyegc.challenges.goals.metric import GlaucomaMetric, GoalsLayerMetric
from eyegc.challenges.goals.postprocessing import anatomical_layers
from eyegc.challenges.goals.submission import (
    read_goals_glaucoma_submission,
    read_goals_layer_predictions,
    write_goals_layer_prediction,
    write_goals_submission,
)
from eyegc.common.plugin import Case, ClassSpec, ModelDefaults, Socket, TaskKind
from eyegc.common.task_kinds import FLIP_TTA, ClassificationTask, SegmentationTask, classifier_defaults

__all__ = ["GoalsGlaucoma", "GoalsLayers", "goals_glaucoma", "goals_layers"]

_LAYER_NAMES = {
    "rnfl": "Retinal nerve fibre layer",
    "gcipl": "Ganglion cell–inner plexiform layer",
    "choroid": "Choroid",
}
#: OCT B-scans are not symmetric top-bottom (vitreous above, sclera below): left-right flips only.


@dataclass(frozen=True)
class GoalsLayers(SegmentationTask):
    """GOALS task 1: background + RNFL, GCIPL, choroid as a 4-class softmax on 1100×800 B-scans.

    ``anatomical`` applies the layer-order postprocessing (per column: vitreous, RNFL, GCIPL,
    retina, choroid, sclera, each layer one band) to the probabilities instead of a plain argmax;
    a bundle's ``postprocessing.task_options.anatomical`` overrides it.
    """

    report_plots: ClassVar[tuple[str, ...]] = ("thickness",)
    name: str = "goals-layers"
    challenge: str = "goals"
    title: str = "GOALS task 1 — OCT layer segmentation (RNFL, GCIPL, choroid)"
    kind: ClassVar[TaskKind] = TaskKind.MULTICLASS_SEGMENTATION
    allowed_tta: ClassVar[Mapping[str, tuple[str, ...]]] = FLIP_TTA
    classes: tuple[ClassSpec, ...] = (
        ClassSpec(key="other", name="Everything else", value=BACKGROUND_VALUE),
        *(ClassSpec(key=k, name=_LAYER_NAMES[k], value=v) for k, v in LAYER_VALUES.items()),
    )
    in_channels: int = 1
    image_size: tuple[int, int] | None = IMAGE_SIZE
    anatomical: bool = True
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
    metric: GoalsLayerMetric = field(default_factory=GoalsLayerMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="oct-b-scan", relative_path="images/oct-b-scan"),)
    output_sockets: tuple[Socket, ...] = (
        Socket("oct-layer-segmentation", "images/oct-layer-segmentation", kind="Segmentation", content="label_map"),
    )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """``Train/`` (train) or ``Validation/`` (test) cases with their layer masks.

        The layers share one mask per image, not a folder per class: ``allow_missing_class`` is ignored.
        """
        return list_goals_layer_cases(root, split, require_labels=require_labels)

    def read_image(self, path: Path) -> np.ndarray:
        """A 1100×800 grey B-scan as ``(1, 800, 1100)`` uint8."""
        return read_goals_image(path)

    def read_target(self, case: Case) -> np.ndarray:
        """The layer mask decoded to class indices ``(1, 800, 1100)`` (0 other, 1 RNFL, 2 GCIPL, 3 choroid)."""
        return read_layer_mask(self.ground_truth(case, "layer mask")["layers"])

    def postprocess(self, probabilities: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
        """``(1, H, W)`` class indices: layer-order postprocessing or the argmax."""
        if bool(options.get("anatomical", self.anatomical)):
            return anatomical_layers(probabilities)[None]
        return np.argmax(probabilities, axis=0).astype(np.uint8)[None]

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/Layer_Segmentations/<case>.png`` in the official 0/80/160/255 encoding."""
        write_goals_layer_prediction(out, case_id, masks)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Class-index maps from a prediction folder or a submission zip."""
        return read_goals_layer_predictions(pred, case_ids)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """The GOALS zip: ``Layer_Segmentations/*.png`` (+ ``Classification_Results.csv`` with ``glaucoma_pred``)."""
        options.pop("team", None)  # the format has no team field
        return write_goals_submission(pred, out, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic B-scans with layered bands, masks and glaucoma labels in the official layout."""
        from eyegc.challenges.goals.sample_data import make_goals_sample_data

        make_goals_sample_data(out, cases=cases, test_cases=test_cases, seed=seed)


@dataclass(frozen=True)
class GoalsGlaucoma(ClassificationTask):
    """GOALS task 2: glaucoma (1) or not (0) from one B-scan; ranked by ROC AUC of the likelihood."""

    report_plots: ClassVar[tuple[str, ...]] = ("roc", "confusion")
    name: str = "goals-glaucoma"
    challenge: str = "goals"
    title: str = "GOALS task 2 — glaucoma classification (AUC)"
    classes: tuple[ClassSpec, ...] = (ClassSpec(key="glaucoma", name="Glaucoma", num_classes=2),)
    in_channels: int = 1
    image_size: tuple[int, int] | None = IMAGE_SIZE
    defaults: ModelDefaults = field(default_factory=lambda: classifier_defaults((400, 552)))
    metric: GlaucomaMetric = field(default_factory=GlaucomaMetric)
    input_sockets: tuple[Socket, ...] = (Socket(slug="oct-b-scan", relative_path="images/oct-b-scan"),)
    output_sockets: tuple[Socket, ...] = (
        Socket(
            "glaucoma-likelihood",
            "glaucoma-likelihood.json",
            super_kind="Value",
            kind="Float",
            class_key="glaucoma",
            content="likelihood",
        ),
    )

    def list_cases(
        self, root: Path, split: str = "train", require_labels: bool = True, *, allow_missing_class: bool = False
    ) -> list[Case]:
        """``Train/`` (train) or ``Validation/`` (test) cases with labels from the ``*_GC_GT`` sheet.

        Labels come from one sheet, not class folders: ``allow_missing_class`` is ignored.
        """
        return list_goals_glaucoma_cases(root, split, require_labels=require_labels)

    def read_image(self, path: Path) -> np.ndarray:
        """A 1100×800 grey B-scan as ``(1, 800, 1100)`` uint8."""
        return read_goals_image(path)

    @property
    def label_name(self) -> str:
        """A case's label, in messages."""
        return "glaucoma label"

    def read_submission(self, path: Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and ``(1, 2)`` probabilities from ``Classification_Results.csv`` or the submission zip."""
        return read_goals_glaucoma_submission(path, case_ids)

    def write_submission(self, pred: Path, out: Path, **options: Any) -> Path:
        """The GOALS zip with ``Classification_Results.csv`` (+ ``Layer_Segmentations/`` with ``layers_pred``)."""
        options.pop("team", None)  # the format has no team field
        return write_goals_submission(None, out, glaucoma_pred=pred, **options)

    def make_sample_data(self, out: Path, cases: int, test_cases: int, seed: int) -> None:
        """Synthetic B-scans (glaucoma cases with a thinner RNFL) in the official layout."""
        from eyegc.challenges.goals.sample_data import make_goals_sample_data

        make_goals_sample_data(out, cases=cases, test_cases=test_cases, seed=seed)


#: The registered instances (entry points ``goals-layers`` and ``goals-glaucoma``).
goals_layers = GoalsLayers()
goals_glaucoma = GoalsGlaucoma()
