"""The DRIVE vessel-segmentation metrics, counted inside the field of view (docs/REFERENCE.md §5).

Conventions (the usual DRIVE ones):

* Only pixels inside each image's field-of-view (FOV) mask count; a case whose FOV is ``None``
  counts the whole image.
* Figures are pooled: true/false positives/negatives are summed over all evaluated images, then
  F1 (= Dice), accuracy, sensitivity and specificity are computed once from the sums. The ROC AUC
  ranks all FOV pixels of all images together.
* Probabilities are quantised to 8 bits (``round(p * 255)``, what the prediction PNGs store), and the
  AUC is computed from per-image 256-bin histograms of positive and negative pixels: exactly
  ``sklearn.metrics.roc_auc_score`` on the quantised scores, in constant memory.
* Undefined figures: F1 is 1.0 when neither truth nor prediction has a vessel pixel (the Dice
  convention); sensitivity, specificity and AUC are NaN when their denominator class is absent;
  everything is NaN without probabilities for the AUC.

Per-case rows hold each image's own figures (``f1``, ``auc``, ...); their mean F1 is the
"per-image mean" some papers report, the leaderboard ``f1`` is the pooled one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
from eyegc.common.evaluation import check_metric_lengths
from eyegc.common.plugin import EvaluationResult

__all__ = ["DriveVesselMetric", "quantise_probabilities", "roc_auc_from_histograms"]

_LEVELS = 256


def quantise_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 ``round(p * 255)`` (values outside [0, 1] are clipped).

    Raises:
        ValueError: the array holds NaN.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if np.isnan(probabilities).any():
        raise ValueError("probabilities contain NaN")
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)


def roc_auc_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC from counts of positive and negative pixels per score level (ties count one half).

    Equal to ``sklearn.metrics.roc_auc_score`` on the scores the histograms were built from.
    NaN when either class is empty.
    """
    pos = np.asarray(positives, dtype=np.int64)
    neg = np.asarray(negatives, dtype=np.int64)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.concatenate([[0], np.cumsum(neg)[:-1]])
    # 2 * (pairs ranked right) + (tied pairs), in exact integers, halved at the end.
    twice = 2 * int(np.dot(pos, below)) + int(np.dot(pos, neg))
    return twice / (2.0 * n_pos * n_neg)


@dataclass
class _Counts:
    """Running confusion counts and score histograms of one class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    positives: np.ndarray = field(default_factory=lambda: np.zeros(_LEVELS, np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(_LEVELS, np.int64))
    has_scores: bool = True

    def add(self, other: _Counts) -> None:
        self.tp, self.fp, self.fn, self.tn = (
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
        )
        self.positives += other.positives
        self.negatives += other.negatives
        self.has_scores = self.has_scores and other.has_scores

    def figures(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        nan = float("nan")
        return {
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "auc": roc_auc_from_histograms(self.positives, self.negatives) if self.has_scores else nan,
            "accuracy": (tp + tn) / (tp + fp + fn + tn) if tp + fp + fn + tn else nan,
            "sensitivity": tp / (tp + fn) if tp + fn else nan,
            "specificity": tn / (tn + fp) if tn + fp else nan,
        }


def _count(pred: np.ndarray, true: np.ndarray, scores: np.ndarray | None) -> _Counts:
    """Counts over the given (already FOV-selected, 1-D) pixels."""
    pred, true = pred > 0, true > 0
    tp = int(np.count_nonzero(pred & true))
    n_pred, n_true = int(np.count_nonzero(pred)), int(np.count_nonzero(true))
    counts = _Counts(tp=tp, fp=n_pred - tp, fn=n_true - tp, tn=pred.size - n_pred - n_true + tp)
    if scores is None:
        counts.has_scores = False
    else:
        counts.positives = np.bincount(scores[true], minlength=_LEVELS).astype(np.int64)
        counts.negatives = np.bincount(scores[~true], minlength=_LEVELS).astype(np.int64)
    return counts


def _case_counts(pred: np.ndarray, true: np.ndarray, probs: np.ndarray | None, roi: np.ndarray | None) -> list[_Counts]:
    """Per-class counts of one case's ``(C, H, W)`` arrays inside ``roi`` (``(H, W)``; None = all)."""
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {true.shape}")
    if probs is not None and probs.shape != true.shape:
        raise ValueError(f"probabilities shape {probs.shape} differs from ground truth shape {true.shape}")
    if roi is not None:
        roi = np.asarray(roi).astype(bool, copy=False)
        if roi.shape != true.shape[1:]:
            raise ValueError(f"field-of-view shape {roi.shape} differs from the image shape {true.shape[1:]}")
    scores = None if probs is None else quantise_probabilities(probs)

    def select(array: np.ndarray) -> np.ndarray:
        return array[roi] if roi is not None else array.ravel()

    return [
        _count(select(pred[c]), select(true[c]), None if scores is None else select(scores[c]))
        for c in range(true.shape[0])
    ]


@dataclass(frozen=True)
class DriveVesselMetric:
    """Pooled F1 and ROC AUC of vessel masks and probabilities inside the field of view.

    Leaderboard ``{"f1", "auc"}``; per class ``{"f1", "auc", "accuracy", "sensitivity",
    "specificity"}``; one row per image with that image's own figures. With several classes the
    leaderboard figures are the means over classes (DRIVE has one, ``vessel``).
    """

    classes: tuple[str, ...] = ("vessel",)
    primary: str = "f1"
    class_primary: str = "f1"
    case_primary: str = "f1"
    needs_probabilities: bool = True

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score ``(C, H, W)`` 0/1 masks against targets inside each case's FOV (``rois``, ``(H, W)`` bool).

        Every input is iterated once, in order (they may be lazy). Without ``probabilities`` the
        AUC is NaN.
        """
        n = len(case_ids)
        check_metric_lengths(case_ids, predictions=predictions, targets=targets, probabilities=probabilities, rois=rois)
        probs_iter: Iterable[np.ndarray | None] = probabilities if probabilities is not None else repeat(None, n)
        rois_iter: Iterable[np.ndarray | None] = rois if rois is not None else repeat(None, n)
        totals = [_Counts() for _ in self.classes]
        rows: list[dict[str, object]] = []
        for case_id, pred, true, probs, roi in zip(case_ids, predictions, targets, probs_iter, rois_iter, strict=True):
            counts = _case_counts(np.asarray(pred), np.asarray(true), probs, roi)
            if len(counts) != len(self.classes):
                raise ValueError(f"case {case_id}: {len(counts)} channels, expected {len(self.classes)}")
            row: dict[str, object] = {"case": case_id}
            for key, total, case in zip(self.classes, totals, counts, strict=True):
                total.add(case)
                for name, value in case.figures().items():
                    row[name if len(self.classes) == 1 else f"{key}_{name}"] = float(value)
            if len(self.classes) > 1:
                row["f1"] = float(np.mean([c.figures()["f1"] for c in counts]))
            rows.append(row)
        per_class = {
            key: {k: float(v) for k, v in total.figures().items()}
            for key, total in zip(self.classes, totals, strict=True)
        }
        leaderboard = {name: float(np.mean([per_class[key][name] for key in self.classes])) for name in ("f1", "auc")}
        return EvaluationResult(task, leaderboard, per_class, rows, cases=n)

    def class_score(
        self,
        class_index: int,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> float:
        """Pooled F1 of one class from ``(H, W)`` masks per case.

        Without ``rois`` the whole image counts; tuning zeroes predictions and targets outside
        the FOV first, which gives exactly the FOV-restricted F1 (F1 ignores true negatives).
        """
        total = _Counts(has_scores=False)
        rois_iter: Iterable[np.ndarray | None] = rois if rois is not None else repeat(None, len(targets))
        for pred, true, roi in zip(predictions, targets, rois_iter, strict=True):
            total.add(_case_counts(np.asarray(pred)[None], np.asarray(true)[None], None, roi)[0])
        return float(total.figures()["f1"])
