"""The DRAC22 Task 1 leaderboard metric, computed as the organisers' code does (docs/REFERENCE.md §2)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from eyegc.common.evaluation import overlap_per_case
from eyegc.common.plugin import EvaluationResult

__all__ = ["Drac22SegmentationMetric"]


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    # An all-NaN slice (a class absent from every ground truth) is NaN, without numpy's warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


@dataclass(frozen=True)
class Drac22SegmentationMetric:
    """Mean DSC / mean IoU over IRMA, NPA and NV.

    Per image and class, Dice and IoU on 0/1 masks; NaN where that class's ground truth is empty
    (false positives on such images cost nothing); per class the NaN-ignoring mean over images;
    the leaderboard figure is the mean over classes. Ranking is by mean DSC, ties by mean IoU.
    A class with no ground truth in any evaluated image is reported as NaN and left out of the
    mean over classes (the official test set has every class, so there the two rules agree).
    """

    classes: tuple[str, ...] = ("irma", "npa", "nv")
    primary: str = "mean_dsc"
    class_primary: str = "dsc"
    needs_probabilities: bool = False

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score ``(3, H, W)`` masks against ground truth of the same shape (probabilities, rois unused)."""
        if not (len(predictions) == len(targets) == len(case_ids)):
            raise ValueError("predictions, targets and case_ids differ in length")
        del probabilities, rois
        dsc = np.full((len(case_ids), len(self.classes)), np.nan)
        iou = np.full_like(dsc, np.nan)
        rows = []
        for i, (case_id, pred, true) in enumerate(zip(case_ids, predictions, targets, strict=True)):
            dsc[i], iou[i] = overlap_per_case(pred, true, ignore_empty=True)
            row: dict[str, object] = {"case": case_id}
            for j, key in enumerate(self.classes):
                row[f"{key}_dsc"] = float(dsc[i, j])
                row[f"{key}_iou"] = float(iou[i, j])
            rows.append(row)
        class_dsc = _nanmean(dsc, axis=0)
        class_iou = _nanmean(iou, axis=0)
        per_class = {
            key: {"dsc": float(class_dsc[j]), "iou": float(class_iou[j])} for j, key in enumerate(self.classes)
        }
        leaderboard = {"mean_dsc": float(_nanmean(class_dsc)), "mean_iou": float(_nanmean(class_iou))}
        return EvaluationResult(task, leaderboard, per_class, rows, cases=len(case_ids))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """One class's mean DSC over images (NaN-ignoring), from ``(H, W)`` masks per case."""
        dsc = [
            overlap_per_case(p[None], t[None], ignore_empty=True)[0][0]
            for p, t in zip(predictions, targets, strict=True)
        ]
        return float(_nanmean(np.asarray(dsc, dtype=np.float64)))
