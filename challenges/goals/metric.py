"""GOALS leaderboard metrics: layer Dice and thickness error (task 1), glaucoma AUC (task 2).

docs/REFERENCE.md §3: task 1 is scored by Dice per layer and, in the paper, a thickness error; task 2
by AUC. The organisers' composite score (the public board used a 0–10 scale) is unconfirmed, so
it is not reported unless configured (``GoalsLayerMetric(composite=...)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eyegc.challenges.goals.encoding import LAYER_KEYS
from eyegc.common.evaluation import check_metric_lengths, layer_thickness
from eyegc.common.plugin import EvaluationResult
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

__all__ = [
    "GlaucomaMetric",
    "GoalsLayerMetric",
    "bootstrap_auc_ci",
    "layer_dice",
    "layer_thickness",
    "rank_auc",
]

_NUM_CLASSES = len(LAYER_KEYS) + 1  # background + three layers


def layer_dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two 0/1 masks (any value > 0 is foreground).

    1.0 when both are empty (a layer correctly left out); 0.0 when only one is empty.
    """
    pred, true = np.asarray(prediction) > 0, np.asarray(target) > 0
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {true.shape}")
    total = np.count_nonzero(pred) + np.count_nonzero(true)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(pred & true) / total


def _index_map(array: np.ndarray, case_id: str, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"case {case_id}: the {what} must be a (1, H, W) class-index map, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"case {case_id}: the {what} must hold integer class indices, got {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= _NUM_CLASSES):
        raise ValueError(
            f"case {case_id}: the {what} holds class indices {np.unique(array)[:8].tolist()}; "
            f"expected 0..{_NUM_CLASSES - 1} (decode official 0/80/160/255 masks first)"
        )
    return array


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass(frozen=True)
class GoalsLayerMetric:
    """Per-layer Dice and thickness MAE of RNFL, GCIPL and choroid.

    Per image and layer: Dice on that layer's 0/1 masks (1.0 when the layer is absent from both
    prediction and truth, 0.0 when absent from only one; the real ground truth always has all
    three layers), and thickness MAE = the mean over columns of |predicted − true thickness| in
    pixels (thickness = pixel count of the layer in the column, see :func:`layer_thickness`).
    Per layer: the mean over images. Leaderboard: ``mean_dice`` (mean of the three layer Dice,
    the ranking figure) and ``mean_thickness_mae`` (mean of the three layer MAE, lower is better).

    ``composite`` (unconfirmed official formula) adds ``leaderboard["composite"]``: either weights
    ``{"mean_dice": w1, "mean_thickness_mae": w2}`` giving ``sum(w * value)``, or a callable
    receiving the leaderboard dict. Default None: not reported.
    """

    layers: tuple[str, ...] = LAYER_KEYS
    composite: Mapping[str, float] | Callable[[Mapping[str, float]], float] | None = field(default=None, compare=False)
    primary: str = "mean_dice"
    class_primary: str = "dice"
    needs_probabilities: bool = False
    case_primary: str = "mean_dice"

    def __post_init__(self) -> None:
        if isinstance(self.composite, Mapping):
            unknown = sorted(set(self.composite) - {"mean_dice", "mean_thickness_mae"})
            if unknown:
                raise ValueError(f"composite weights name {unknown}; use mean_dice and/or mean_thickness_mae")

    def __call__(
        self,
        task: str,
        predictions: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        case_ids: Sequence[str],
        probabilities: Sequence[np.ndarray] | None = None,
        rois: Sequence[np.ndarray | None] | None = None,
    ) -> EvaluationResult:
        """Score ``(1, H, W)`` class-index maps against ground truth of the same shape (probabilities, rois unused)."""
        del probabilities, rois
        check_metric_lengths(case_ids, predictions=predictions, targets=targets)
        dice: dict[str, list[float]] = {k: [] for k in self.layers}
        mae: dict[str, list[float]] = {k: [] for k in self.layers}
        rows: list[dict[str, Any]] = []
        for case_id, pred_raw, true_raw in zip(case_ids, predictions, targets, strict=True):
            pred = _index_map(pred_raw, case_id, "prediction")
            true = _index_map(true_raw, case_id, "ground truth")
            if pred.shape != true.shape:
                raise ValueError(
                    f"case {case_id}: prediction shape {pred.shape} differs from ground truth shape {true.shape}"
                )
            # One pass for all classes: the confusion matrix and per-column counts.
            joint = true.astype(np.intp) * _NUM_CLASSES + pred
            confusion = np.bincount(joint.ravel(), minlength=_NUM_CLASSES**2).reshape(_NUM_CLASSES, _NUM_CLASSES)
            row: dict[str, Any] = {"case": case_id}
            for k, key in enumerate(self.layers):
                c = k + 1
                total = confusion[c, :].sum() + confusion[:, c].sum()
                d = 1.0 if total == 0 else 2.0 * confusion[c, c] / total
                m = float(np.mean(np.abs(layer_thickness(pred, c) - layer_thickness(true, c))))
                dice[key].append(float(d))
                mae[key].append(m)
                row[f"{key}_dice"] = float(d)
                row[f"{key}_thickness_mae"] = m
            row["mean_dice"] = _mean([row[f"{key}_dice"] for key in self.layers])
            rows.append(row)
        per_class = {k: {"dice": _mean(dice[k]), "thickness_mae": _mean(mae[k])} for k in self.layers}
        leaderboard = {
            "mean_dice": _mean([v["dice"] for v in per_class.values()]),
            "mean_thickness_mae": _mean([v["thickness_mae"] for v in per_class.values()]),
        }
        if self.composite is not None:
            if callable(self.composite):
                leaderboard["composite"] = float(self.composite(dict(leaderboard)))
            else:
                leaderboard["composite"] = float(sum(w * leaderboard[k] for k, w in self.composite.items()))
        return EvaluationResult(task, leaderboard, per_class, rows, cases=len(rows))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """One layer's mean Dice over images from its ``(H, W)`` 0/1 masks per case (same rule as the leaderboard)."""
        del class_index  # the masks already are that layer's
        return _mean([layer_dice(p, t) for p, t in zip(predictions, targets, strict=True)])


# -- glaucoma --------------------------------------------------------------------------------------


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC by the Mann–Whitney rank formula, row by row: ``(B, n)`` -> ``(B,)``.

    Ties count one half (average ranks), exactly as ``sklearn.metrics.roc_auc_score``. Rows
    without both classes are NaN.
    """
    labels = np.atleast_2d(np.asarray(labels)).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1).astype(np.float64)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def bootstrap_auc_ci(
    labels: np.ndarray, scores: np.ndarray, n_bootstraps: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (cases resampled with replacement).

    Resamples holding a single class are dropped (AUC undefined there). Deterministic for a seed.
    Returns ``(nan, nan)`` when no resample has both classes.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(labels)
    if n < 2 or n_bootstraps < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_bootstraps, n))
    aucs = rank_auc(labels[index], scores[index])
    aucs = aucs[~np.isnan(aucs)]
    if not len(aucs):
        return float("nan"), float("nan")
    tail = (1.0 - ci) / 2.0 * 100.0
    low, high = np.percentile(aucs, [tail, 100.0 - tail])
    return float(low), float(high)


def _grade(array: np.ndarray, case_id: str, what: str) -> int:
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise ValueError(f"case {case_id}: the glaucoma {what} must hold one grade, got shape {np.shape(array)}")
    value = int(flat[0])
    if value not in (0, 1):
        raise ValueError(f"case {case_id}: glaucoma {what} {value} is not 0 (normal) or 1 (glaucoma)")
    return value


def _score(probability: np.ndarray, case_id: str) -> float:
    """The glaucoma likelihood from ``(1, 2)`` (or ``(2,)``) class probabilities."""
    array = np.asarray(probability, dtype=np.float64)
    if array.ndim == 2:
        array = array[0]
    if array.shape != (2,) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"case {case_id}: glaucoma probabilities must be (1, 2) finite floats, got shape {np.shape(probability)}"
        )
    return float(array[1])


def _classification_scores(truth: np.ndarray, grades: np.ndarray, scores: np.ndarray, **ci: Any) -> dict[str, float]:
    both = len(np.unique(truth)) == 2
    auc = float(roc_auc_score(truth, scores)) if both else float("nan")
    low, high = bootstrap_auc_ci(truth, scores, **ci) if both else (float("nan"), float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # kappa of constant labels: 0/0
        kappa = float(cohen_kappa_score(truth, grades, labels=[0, 1])) if len(truth) else float("nan")
    return {
        "auc": auc,
        "auc_ci_low": low,
        "auc_ci_high": high,
        "accuracy": float(accuracy_score(truth, grades)) if len(truth) else float("nan"),
        "f1": float(f1_score(truth, grades, labels=[0, 1], zero_division=0.0)) if len(truth) else float("nan"),
        "kappa": kappa if not math.isinf(kappa) else float("nan"),
    }


@dataclass(frozen=True)
class GlaucomaMetric:
    """GOALS task 2: ROC AUC of the glaucoma likelihood, with a bootstrap interval and label scores.

    A prediction is ``(1,)`` 0/1 (thresholded upstream at the tuned threshold), a target ``(1,)``
    0/1, the probabilities ``(1, 2)`` (glaucoma likelihood = ``[0, 1]``). Leaderboard (and
    ``per_class["glaucoma"]``): ``auc`` (``sklearn.metrics.roc_auc_score``, the ranking figure;
    NaN when the truth holds one class only), ``auc_ci_low``/``auc_ci_high`` (percentile
    bootstrap, ``n_bootstraps`` resamples of the cases with ``numpy.random.default_rng(seed)``;
    grand-challenge-metrics' ``get_bootstrapped_roc_ci_curves`` is not used because it never
    draws the last case — ``randint(0, n - 1)`` — and loops forever when no resample can hold
    both classes), and ``accuracy``, ``f1`` (glaucoma = positive) and Cohen's ``kappa`` of the
    predicted labels.

    Without probabilities the predicted labels serve as scores (the AUC of a hard classifier,
    i.e. balanced accuracy); :meth:`class_score` computes exactly that figure.
    """

    head: str = "glaucoma"
    n_bootstraps: int = 1000
    ci: float = 0.95
    seed: int = 0
    primary: str = "auc"
    class_primary: str = "auc"
    needs_probabilities: bool = True
    #: the likelihood given to the case's true class: the per-case share of a ranking by likelihood.
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
        """Score per-case grades and probabilities against the true grades (rois unused)."""
        del rois
        check_metric_lengths(case_ids, predictions=predictions, targets=targets, probabilities=probabilities)
        probs: Sequence[np.ndarray | None] = probabilities if probabilities is not None else [None] * len(case_ids)
        truth, grades, scores, rows = [], [], [], []
        for case_id, pred, true, prob in zip(case_ids, predictions, targets, probs, strict=True):
            g, t = _grade(pred, case_id, "prediction"), _grade(true, case_id, "ground truth")
            s = float(g) if prob is None else _score(prob, case_id)
            truth.append(t)
            grades.append(g)
            scores.append(s)
            rows.append(
                {
                    "case": case_id,
                    f"{self.head}_true": t,
                    f"{self.head}_pred": g,
                    f"{self.head}_score": s,
                    "true_class_probability": s if t == 1 else 1.0 - s,
                }
            )
        figures = _classification_scores(
            np.asarray(truth, dtype=np.int64),
            np.asarray(grades, dtype=np.int64),
            np.asarray(scores, dtype=np.float64),
            n_bootstraps=self.n_bootstraps,
            ci=self.ci,
            seed=self.seed,
        )
        return EvaluationResult(task, dict(figures), {self.head: dict(figures)}, rows, cases=len(rows))

    def class_score(self, class_index: int, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
        """AUC with the predicted labels as scores (balanced accuracy): the leaderboard ``auc`` without probabilities.

        Tuning of classification heads does not call this (it maximises Youden's J on the
        probabilities, see ``eyegc.common.tuning.tune_binary_heads``); it exists to satisfy the
        metric protocol consistently. NaN when the truth holds one class only.
        """
        del class_index
        truth = np.array([_grade(t, str(i), "ground truth") for i, t in enumerate(targets)], dtype=np.int64)
        grades = np.array([_grade(p, str(i), "prediction") for i, p in enumerate(predictions)], dtype=np.float64)
        if len(truth) != len(grades):
            raise ValueError("predictions and targets differ in length")
        return float(roc_auc_score(truth, grades)) if len(np.unique(truth)) == 2 else float("nan")
