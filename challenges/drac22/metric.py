"""The DRAC22 leaderboard metrics, computed as the organisers' code does (docs/REFERENCE.md §2).

Task 1 (segmentation): mean DSC over IRMA, NPA and NV. Tasks 2 and 3 (image quality, DR grade):
quadratic weighted kappa of the predicted grades, ties broken by the macro one-vs-one ROC AUC of
the grade probabilities (repository zhuanjiao2222/DRAC2022, ``evaluation/metric_classification.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from eyegc.common.errors import DataError
from eyegc.common.evaluation import MeanOverlapMetric, check_metric_lengths
from eyegc.common.plugin import EvaluationResult
from sklearn.metrics import roc_auc_score

__all__ = ["Drac22GradingMetric", "Drac22SegmentationMetric", "quadratic_weighted_kappa"]


@dataclass(frozen=True)
class Drac22SegmentationMetric(MeanOverlapMetric):
    """Mean DSC / mean IoU over IRMA, NPA and NV, exactly as the organisers score Task 1.

    Per image and class, Dice and IoU on 0/1 masks; NaN where that class's ground truth is empty
    (false positives on such images cost nothing); per class the NaN-ignoring mean over images;
    the leaderboard figure is the mean over classes. Ranking is by mean DSC, ties by mean IoU.
    A class with no ground truth in any evaluated image is reported as NaN and left out of the
    mean over classes (the official test set has every class, so there the two rules agree).
    """

    classes: tuple[str, ...] = ("irma", "npa", "nv")


def quadratic_weighted_kappa(rater_a: Sequence[int], rater_b: Sequence[int]) -> float:
    """Quadratic weighted kappa as the organisers compute it: the rating range is taken from the data.

    The grades run from the lowest to the highest grade either rater gave, weights are
    ``(i - j)^2 / (n - 1)^2`` over those ``n`` grades. The range cancels out of the ratio (a grade
    no rater gave adds nothing), except where both raters give one and the same grade throughout:
    the organisers' code then divides zero by zero; this returns NaN. Equal to
    ``sklearn.metrics.cohen_kappa_score(a, b, weights="quadratic")`` wherever that is defined.
    """
    a, b = np.asarray(rater_a, dtype=np.int64), np.asarray(rater_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"the two raters' grades must be two lists of one length; got {a.shape} and {b.shape}")
    if not a.size:
        return float("nan")
    low = int(min(a.min(), b.min()))
    n = int(max(a.max(), b.max())) - low + 1
    if n == 1:
        return float("nan")
    observed = np.zeros((n, n), dtype=np.float64)
    np.add.at(observed, (a - low, b - low), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / a.size
    grades = np.arange(n)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (n - 1) ** 2
    return float(1.0 - (weights * observed).sum() / (weights * expected).sum())


def _one_grade(array: np.ndarray, case_id: str, what: str, grades: int) -> int:
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"case {case_id}: the {what} must be one grade, got shape {np.shape(array)}")
    value = int(flat[0])
    if not 0 <= value < grades:
        raise ValueError(f"case {case_id}: {what} {value} is outside 0-{grades - 1}")
    return value


def _grade_probabilities(array: np.ndarray, case_id: str, grades: int) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64).reshape(-1)[:grades]
    if values.size != grades or not np.all(np.isfinite(values)) or (values < 0).any():
        raise ValueError(f"case {case_id}: expected {grades} finite non-negative grade probabilities, got {array!r}")
    if not values.sum() > 0:  # a prediction file can say so; scikit-learn would fail on the row
        raise DataError(f"case {case_id}: its grade probabilities are all 0; predict the case again")
    return values


@dataclass(frozen=True)
class Drac22GradingMetric:
    """DRAC22 tasks 2 and 3: quadratic weighted ``kappa`` (ranking), macro one-vs-one ``auc`` (tie-break).

    A prediction and a target are ``(1,)`` grades, the probabilities ``(1, K)``. ``auc`` is
    ``roc_auc_score(y, P, average="macro", multi_class="ovo")`` on the probabilities, as the
    organisers compute it; it is NaN where their call fails: when the truth does not hold every
    grade, or holds one only. Also ``accuracy``. Per case: the grades and the probability given
    to the true grade (the case figure, higher is better).
    """

    head: str = "grade"
    grades: int = 3
    primary: str = "kappa"
    class_primary: str = "kappa"
    needs_probabilities: bool = True
    case_primary: str = "true_class_probability"

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score per-case grades (and grade probabilities) against the true grades (rois unused)."""
        del rois
        check_metric_lengths(case_ids, predictions=predictions, targets=targets, probabilities=probabilities)
        truth = [_one_grade(t, c, "ground truth", self.grades) for t, c in zip(targets, case_ids, strict=True)]
        grades = [_one_grade(p, c, "prediction", self.grades) for p, c in zip(predictions, case_ids, strict=True)]
        probs = None
        if probabilities is not None:
            probs = np.array(
                [_grade_probabilities(p, c, self.grades) for p, c in zip(probabilities, case_ids, strict=True)]
            )
        rows = []
        for i, case_id in enumerate(case_ids):
            row: dict[str, object] = {"case": case_id, f"{self.head}_true": truth[i], f"{self.head}_pred": grades[i]}
            row["true_class_probability"] = (
                float(probs[i, truth[i]]) if probs is not None else float(grades[i] == truth[i])
            )
            rows.append(row)
        figures = {
            "kappa": quadratic_weighted_kappa(truth, grades),
            "auc": self._auc(np.asarray(truth), probs),
            "accuracy": float(np.mean(np.equal(truth, grades))) if truth else float("nan"),
        }
        return EvaluationResult(task, figures, {self.head: dict(figures)}, rows, cases=len(rows))

    def _auc(self, truth: np.ndarray, probs: np.ndarray | None) -> float:
        if probs is None or len(np.unique(truth)) != self.grades:
            return float("nan")  # roc_auc_score raises: y_true must hold as many grades as P has columns
        # Rows are taken as given where they sum to 1 as scikit-learn demands (numpy.allclose; the submission
        # reader checks it): the one-vs-one AUCs rank each grade's own column, which rescaling could change.
        # Other rows (out-of-fold probabilities kept in 8 bits) are divided by their sum, where the
        # organisers' call would refuse them.
        sums = probs.sum(axis=1, keepdims=True)
        off = ~np.isclose(sums, 1.0) & (sums > 0)
        probs = np.where(off, probs / np.where(sums > 0, sums, 1.0), probs)
        return float(roc_auc_score(truth, probs, average="macro", multi_class="ovo"))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """The quadratic weighted kappa of the grades (the leaderboard ``kappa``)."""
        del class_index
        truth = [_one_grade(t, str(i), "ground truth", self.grades) for i, t in enumerate(targets)]
        grades = [_one_grade(p, str(i), "prediction", self.grades) for i, p in enumerate(predictions)]
        kappa = quadratic_weighted_kappa(truth, grades)
        return kappa if not math.isinf(kappa) else float("nan")
