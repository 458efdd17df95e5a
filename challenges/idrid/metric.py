"""IDRiD leaderboard metrics: pooled AUPR per lesion (sub-challenge A) and joint grading accuracy (B).

docs/REFERENCE.md §4: whether the organisers pooled pixels over all test images is unconfirmed; this
metric pools every pixel of every evaluated image per lesion (an absent mask = all negative) and
says so. The areas come from a histogram of 8-bit scores (:mod:`eyegc.common.curves`): exact for
the 8-bit probability maps that ``eyegc predict`` writes, and bounded in memory however many
full-size images are pooled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from eyegc.common.curves import BinnedCurve
from eyegc.common.evaluation import check_metric_lengths
from eyegc.common.plugin import EvaluationResult
from sklearn.metrics import cohen_kappa_score

__all__ = ["IdridGradingMetric", "IdridLesionMetric"]


def _nanmean(values: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.asarray(values, dtype=np.float64))) if len(values) else float("nan")


def _overlap(tp: int, fp: int, fn: int) -> tuple[float, float]:
    """Dice and IoU from pooled counts; NaN when neither truth nor prediction has the lesion."""
    if tp + fp + fn == 0:
        return float("nan"), float("nan")
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


@dataclass(frozen=True)
class IdridLesionMetric:
    """Mean AUPR over the lesions, each pooled over all pixels of all images.

    Per lesion: ``aupr`` (average precision, scikit-learn's step-wise definition, the ranking
    figure), ``aupr_trapz`` (trapezoidal area under the PR curve, what some IDRiD reports used),
    and ``dice`` / ``iou`` of the final masks pooled over images (what threshold tuning
    maximises; the AUPR does not depend on a threshold). A lesion no evaluated image has scores
    NaN and is left out of the mean.
    """

    classes: tuple[str, ...] = ("ma", "he", "ex", "se")
    ranked: tuple[str, ...] = ("ma", "he", "ex", "se")
    primary: str = "mean_aupr"
    class_primary: str = "dice"
    needs_probabilities: bool = True
    #: per case, the mean over ranked lesions of that image's own AUPR (NaN where it shows none).
    case_primary: str = "mean_aupr"

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score ``(C, H, W)`` masks and probabilities (float in [0, 1] or 8-bit) case by case."""
        if probabilities is None:
            raise ValueError(f"{task} is scored by AUPR, which needs probability maps")
        check_metric_lengths(case_ids, predictions=predictions, targets=targets, probabilities=probabilities)
        n = len(self.classes)
        curves = [BinnedCurve() for _ in range(n)]
        counts = np.zeros((n, 3), dtype=np.int64)  # tp, fp, fn
        rows = []
        roi_list = rois if rois is not None else [None] * len(case_ids)
        for case_id, pred, true, prob, roi in zip(case_ids, predictions, targets, probabilities, roi_list, strict=True):
            if pred.shape != true.shape or prob.shape != true.shape:
                raise ValueError(
                    f"case {case_id}: prediction {pred.shape} / probabilities {prob.shape} vs {true.shape}"
                )
            row: dict[str, object] = {"case": case_id}
            for c, key in enumerate(self.classes):
                # The image's own curve, then pooled: binning each pixel once gives both figures.
                case_curve = BinnedCurve()
                case_curve.update(prob[c], true[c], roi)
                curves[c].merge(case_curve)
                row[f"{key}_aupr"] = case_curve.average_precision()
                p, t = pred[c] > 0, true[c] > 0
                if roi is not None:
                    p, t = p & roi, t & roi
                tp = int(np.count_nonzero(p & t))
                fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp
                counts[c] += (tp, fp, fn)
                row[f"{key}_dice"] = _overlap(tp, fp, fn)[0] if np.count_nonzero(t) else float("nan")
            row["mean_aupr"] = _nanmean([row[f"{key}_aupr"] for key in self.ranked if f"{key}_aupr" in row])
            rows.append(row)
        per_class = {}
        for c, key in enumerate(self.classes):
            dice, iou = _overlap(*map(int, counts[c]))
            per_class[key] = {
                "aupr": curves[c].average_precision(),
                "aupr_trapz": curves[c].pr_auc_trapezoid(),
                "dice": dice,
                "iou": iou,
            }
        leaderboard = {
            "mean_aupr": _nanmean([per_class[k]["aupr"] for k in self.ranked if k in per_class]),
            "mean_aupr_trapz": _nanmean([per_class[k]["aupr_trapz"] for k in self.ranked if k in per_class]),
            "mean_dice": _nanmean([per_class[k]["dice"] for k in self.ranked if k in per_class]),
        }
        return EvaluationResult(task, leaderboard, per_class, rows, cases=len(case_ids))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """Pooled Dice of one lesion from ``(H, W)`` masks (the figure threshold tuning maximises)."""
        tp = fp = fn = 0
        for p, t in zip(predictions, targets, strict=True):
            p, t = p > 0, t > 0
            both = int(np.count_nonzero(p & t))
            tp, fp, fn = tp + both, fp + int(np.count_nonzero(p)) - both, fn + int(np.count_nonzero(t)) - both
        return _overlap(tp, fp, fn)[0]


@dataclass(frozen=True)
class IdridGradingMetric:
    """Joint accuracy (DR grade and DME risk both right), per-head accuracy and quadratic weighted kappa."""

    classes: tuple[str, ...] = ("dr", "dme")
    primary: str = "joint_accuracy"
    class_primary: str = "accuracy"
    needs_probabilities: bool = False
    case_primary: str = "joint_correct"

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score ``(2,)`` grade pairs against the true pairs."""
        del probabilities, rois
        check_metric_lengths(case_ids, predictions=predictions, targets=targets)
        pred = np.asarray([np.asarray(p).reshape(-1) for p in predictions], dtype=np.int64).reshape(len(case_ids), -1)
        true = np.asarray([np.asarray(t).reshape(-1) for t in targets], dtype=np.int64).reshape(len(case_ids), -1)
        right = pred == true
        per_class = {}
        for h, key in enumerate(self.classes):
            per_class[key] = {"accuracy": float(right[:, h].mean()), "kappa": _quadratic_kappa(true[:, h], pred[:, h])}
        leaderboard = {
            "joint_accuracy": float(right.all(axis=1).mean()),
            **{f"{k}_accuracy": v["accuracy"] for k, v in per_class.items()},
            **{f"{k}_kappa": v["kappa"] for k, v in per_class.items()},
        }
        rows = [
            {
                "case": c,
                **{f"{k}_true": int(true[i, h]) for h, k in enumerate(self.classes)},
                **{f"{k}_pred": int(pred[i, h]) for h, k in enumerate(self.classes)},
                "joint_correct": float(right[i].all()),
            }
            for i, c in enumerate(case_ids)
        ]
        return EvaluationResult(task, leaderboard, per_class, rows, cases=len(case_ids))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """One head's accuracy from per-case grades."""
        pred = np.asarray(predictions).reshape(-1)
        true = np.asarray(targets).reshape(-1)
        return float((pred == true).mean())


def _quadratic_kappa(true: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's quadratic weighted kappa; 1.0 when both sides hold one and the same grade (sklearn: NaN)."""
    if len(np.union1d(true, pred)) == 1:
        return 1.0
    return float(cohen_kappa_score(true, pred, weights="quadratic"))
