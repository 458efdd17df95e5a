"""Base classes per task kind: the plumbing every segmentation or classification plugin shares.

A plugin (a frozen dataclass, :class:`~eyegc.common.plugin.TaskPlugin`) subclasses one of these
and writes only what is its challenge's own: how its files are found and read, its metric, its
prediction and submission formats. The bases carry no dataclass fields, so a plugin keeps its own
fields, properties and defaults; what they give are methods and class-level defaults
(``kind``, ``allowed_tta``) that a plugin field of the same name replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from eyegc.common.classification import read_classification_cases, write_classification_case
from eyegc.common.errors import DataError
from eyegc.common.lazy import LazySequence
from eyegc.common.plugin import DIHEDRAL_OPS, Case, ClassSpec, ModelDefaults, TaskKind

__all__ = [
    "DIHEDRAL_TTA",
    "FLIP_TTA",
    "FUNDUS_GRADING_TTA",
    "ClassificationTask",
    "SegmentationTask",
    "classifier_defaults",
]

#: TTA modes for images without a preferred orientation (OCTA, fundus photographs): up to all eight
#: symmetries of the square.
DIHEDRAL_TTA: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"none": ("identity",), "flip": ("identity", "flip_lr", "flip_ud"), "dihedral": DIHEDRAL_OPS}
)
#: TTA modes for images with a fixed up and down (OCT B-scans) and for grading: left-right flips.
FLIP_TTA: Mapping[str, tuple[str, ...]] = MappingProxyType({"none": ("identity",), "flip": ("identity", "flip_lr")})
#: TTA modes of IDRiD grading: both flips, no rotations.
FUNDUS_GRADING_TTA: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"none": ("identity",), "flip": ("identity", "flip_lr", "flip_ud")}
)


class SegmentationTask:
    """A segmentation plugin's shared plumbing: every pixel counts, masks only are scored, and the
    per-class ground truth files are read into one ``(C, H, W)`` array."""

    kind: ClassVar[TaskKind] = TaskKind.MULTILABEL_SEGMENTATION
    allowed_tta: ClassVar[Mapping[str, tuple[str, ...]]] = DIHEDRAL_TTA
    report_plots: ClassVar[tuple[str, ...]] = ()
    submission_suffix: ClassVar[str] = ".zip"
    classes: tuple[ClassSpec, ...]

    def ground_truth(self, case: Case, what: str = "ground truth") -> Mapping[str, Any]:
        """The case's label files, or a DataError naming the case (a test case read as a training one)."""
        if case.labels is None:
            raise DataError(f"case {case.case_id} has no {what}")
        return case.labels

    def read_class_masks(
        self, case: Case, shape: tuple[int, int], read_mask: Callable[[Path, tuple[int, int]], np.ndarray]
    ) -> np.ndarray:
        """``(C, H, W)`` uint8 0/1, one mask per class in class order; a class without a file is empty.

        Args:
            case: the case whose ``labels`` map class keys to mask files.
            shape: the image's ``(H, W)``, which every mask must have.
            read_mask: reads one file as ``(H, W)`` 0/1 (DataError for a wrong size or values).
        """
        labels = self.ground_truth(case)
        target = np.zeros((len(self.classes), *shape), dtype=np.uint8)
        for c, spec in enumerate(self.classes):
            path = labels.get(spec.key)
            if path is not None:
                target[c] = read_mask(path, shape)
        return target

    def read_roi(self, case: Case) -> np.ndarray | None:
        """The whole image counts (a plugin with a field of view returns its mask)."""
        return None

    def read_probabilities(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray] | None:
        """The metric scores masks only (a plugin whose metric ranks probabilities reads them)."""
        return None


def classifier_defaults(input_size: tuple[int, int]) -> ModelDefaults:
    """The grading tasks' model defaults: a ResNet-18 on whole images resized to ``input_size``, cross-entropy,
    60 epochs of batches of 16, 5 folds."""
    return ModelDefaults(
        network="ResNet",
        network_kwargs={"depth": 18},
        patch_size=0,
        batch_size=16,
        epochs=60,
        learning_rate=1e-3,
        loss="ce",
        folds=5,
        input_size=input_size,
    )


class ClassificationTask:
    """A grading plugin's shared plumbing: grades per head from ``case.labels``, ``<case>.json``
    predictions, and the same reader for a prediction folder and the challenge's submission file."""

    kind: ClassVar[TaskKind] = TaskKind.CLASSIFICATION
    allowed_tta: ClassVar[Mapping[str, tuple[str, ...]]] = FLIP_TTA
    report_plots: ClassVar[tuple[str, ...]] = ("confusion",)
    submission_suffix: ClassVar[str] = ".zip"
    #: what :meth:`read_submission` reads, in messages.
    submission_name: ClassVar[str] = "submission file"
    name: str
    classes: tuple[ClassSpec, ...]

    def read_target(self, case: Case) -> np.ndarray:
        """``(heads,)`` int64: each head's grade, in head order."""
        if case.labels is None:
            raise DataError(f"case {case.case_id} has no {self.label_name}")
        return np.array([case.labels[spec.key] for spec in self.classes], dtype=np.int64)

    @property
    def label_name(self) -> str:
        """What a case's labels are called in messages."""
        return "grades"

    def read_roi(self, case: Case) -> None:
        """Classification has no field of view."""
        return None

    def write_prediction(self, out: Path, case_id: str, masks: np.ndarray, probabilities: np.ndarray) -> None:
        """``out/<case>.json`` with each head's grade and probabilities."""
        write_classification_case(out, case_id, self.classes, masks, probabilities)

    def read_submission(self, path: Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Grades and probabilities from the challenge's submission file (each plugin reads its own)."""
        raise DataError(f"{path} is a file; {self.name} reads predictions from a folder of <case>.json")

    def read_grades(self, pred: Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, heads)`` grades and ``(N, heads, K)`` probabilities from a folder or a submission file."""
        pred = Path(pred)
        if pred.is_file():
            return self.read_submission(pred, case_ids)
        if not pred.is_dir():
            raise DataError(
                f"prediction folder or {self.submission_name} not found: {pred} "
                f"(write it with `eyegc predict {self.name}`)"
            )
        return read_classification_cases(pred, case_ids, self.classes)

    def read_predictions(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Each case's grades, from :meth:`read_grades`."""
        grades, _ = self.read_grades(pred, case_ids)
        return LazySequence(len(grades), lambda i: grades[i])

    def read_probabilities(self, pred: Path, case_ids: Sequence[str]) -> Sequence[np.ndarray]:
        """Each case's per-head probabilities (one-hot when a submission holds grades only)."""
        _, probs = self.read_grades(pred, case_ids)
        return LazySequence(len(probs), lambda i: probs[i])
