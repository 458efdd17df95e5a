"""Precision-recall and ROC areas pooled over many images, from histograms of quantised scores.

Leaderboards such as IDRiD lesion segmentation (AUPR per lesion over every pixel of 27 images of
4288x2848, >300 million scores) and DRIVE vessels (ROC AUC over pixels inside the field of view)
pool one curve over all pixels of all images. The submitted probability maps are 8-bit, so the
scores take at most 256 values: counting positives and negatives per score level is enough to
compute the curves exactly, in O(levels) memory, streaming one image at a time.

Exactness claim: every figure equals scikit-learn's on the *quantised* scores (the 8-bit values a
PNG/TIFF writer would store, ``round(p * 255)``); for float scores that are not on that grid it is
an approximation whose error is bounded by how much the ranking changes when ties are merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

__all__ = ["BinnedCurve", "Confusion", "pooled_curve", "quantize_scores"]

#: Elements per block when converting/counting, so the int64 copies np.bincount makes stay cache-sized
#: (measured ~25% faster than one whole-image call) and float scores never get a full-size float copy.
_CHUNK = 1 << 18
_MAX_LEVELS = 1 << 16


class Confusion(NamedTuple):
    """Pixel counts of a thresholded prediction."""

    tp: int
    fp: int
    fn: int
    tn: int


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= _MAX_LEVELS:
        raise ValueError(f"levels must be an integer in [2, {_MAX_LEVELS}], got {levels!r}")
    return int(levels)


def _bin_dtype(levels: int) -> type[np.unsignedinteger]:
    return np.uint8 if levels <= 256 else np.uint16


def _check_integer_bins(scores: np.ndarray, levels: int) -> None:
    if scores.size == 0:
        return
    # uint8 values cannot reach 256 or more bins, so the common 8-bit case skips a full pass.
    if scores.dtype == np.uint8 and levels >= 256:
        return
    lo, hi = int(scores.min()), int(scores.max())
    if lo < 0 or hi >= levels:
        raise ValueError(
            f"integer scores are bin indices and must lie in [0, {levels - 1}] for levels={levels}; "
            f"found min {lo}, max {hi}"
        )


def _check_float_range(scores: np.ndarray) -> None:
    if scores.size == 0:
        return
    lo, hi = scores.min(), scores.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError("scores contain NaN; probabilities must lie in [0, 1]")
    if lo < 0 or hi > 1:
        raise ValueError(f"float scores must be probabilities in [0, 1]; found min {lo!r}, max {hi!r}")


def _check_dtype(scores: np.ndarray) -> str:
    kind = scores.dtype.kind
    if kind not in "uif":
        # bool is rejected on purpose: as bins it would silently mean "levels 0 and 1 of 256".
        raise ValueError(f"scores must be float probabilities or integer bins, got dtype {scores.dtype}")
    return kind


def _quantize_float_block(block: np.ndarray, levels: int) -> np.ndarray:
    # float64 makes p*(levels-1) exact for float16/float32 input, so the rounding is that of the stored value.
    scaled = np.multiply(block, levels - 1, dtype=np.float64)
    np.rint(scaled, out=scaled)
    return scaled.astype(_bin_dtype(levels))


def quantize_scores(scores: np.ndarray, levels: int = 256) -> np.ndarray:
    """Map probabilities in [0, 1] to integer bins ``round(p * (levels - 1))``.

    This is the rule an 8-bit PNG/TIFF writer uses (``uint8 = round(p * 255)``; exact halves go to
    the even neighbour, as ``numpy.rint`` and Python's ``round`` do). Integer input is taken to be
    bins already and is returned as is, without a copy, after a range check (uint8 with
    ``levels=256`` needs none).

    Args:
        scores: float probabilities in [0, 1], or integer bins in [0, levels - 1]; any shape.
        levels: number of bins.

    Returns:
        Bins of the same shape: uint8 for up to 256 levels, else uint16 (integer input keeps its dtype).

    Raises:
        ValueError: on an unsupported dtype, a NaN, a value outside [0, 1] (float) or outside
            [0, levels - 1] (integer), or a bad ``levels``.
    """
    levels = _check_levels(levels)
    scores = np.asarray(scores)
    if _check_dtype(scores) in "ui":
        _check_integer_bins(scores, levels)
        return scores
    _check_float_range(scores)
    out = np.empty(scores.shape, dtype=_bin_dtype(levels))
    flat_in, flat_out = scores.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK):
        flat_out[start : start + _CHUNK] = _quantize_float_block(flat_in[start : start + _CHUNK], levels)
    return out


class BinnedCurve:
    """Histograms of positives and negatives per score bin, and the PR and ROC areas they determine.

    Every distinct non-empty bin is one threshold, exactly as scikit-learn treats each distinct
    score, so :meth:`average_precision`, :meth:`pr_auc_trapezoid` and :meth:`roc_auc` equal
    ``average_precision_score``, ``auc(recall, precision)`` over ``precision_recall_curve`` and
    ``roc_auc_score`` on the quantised scores. Where a figure is undefined it is NaN, with no warning:
    AP and PR AUC without positives; ROC AUC without positives or without negatives.

    Attributes:
        levels: number of score bins.
    """

    def __init__(self, levels: int = 256) -> None:
        """An empty curve over ``levels`` score bins."""
        self.levels = _check_levels(levels)
        self._pos = np.zeros(self.levels, dtype=np.int64)
        self._all = np.zeros(self.levels, dtype=np.int64)

    def __repr__(self) -> str:
        return f"BinnedCurve(levels={self.levels}, positives={self.positives}, negatives={self.negatives})"

    def update(self, scores: np.ndarray, labels: np.ndarray, roi: np.ndarray | None = None) -> None:
        """Add one image (or any batch) of pixels.

        Args:
            scores: float probabilities in [0, 1] (quantised with :func:`quantize_scores`), or integer
                bins in [0, levels - 1] such as an 8-bit probability map; any shape.
            labels: ground truth of the same shape, any dtype; values > 0 are positive.
            roi: optional mask of the same shape (bool, or nonzero = inside) selecting the pixels that
                count, e.g. a field-of-view mask.

        Raises:
            ValueError: on mismatched shapes or invalid scores; the curve is left unchanged.
        """
        scores, labels = np.asarray(scores), np.asarray(labels)
        if labels.shape != scores.shape:
            raise ValueError(f"labels shape {labels.shape} differs from scores shape {scores.shape}")
        if roi is not None:
            roi = np.asarray(roi)
            if roi.shape != scores.shape:
                raise ValueError(f"roi shape {roi.shape} differs from scores shape {scores.shape}")
            if roi.dtype != np.bool_:
                roi = roi != 0
        is_float = _check_dtype(scores) == "f"
        # Validate everything before counting, so a bad image never leaves half its pixels behind.
        if is_float:
            _check_float_range(scores)
        else:
            _check_integer_bins(scores, self.levels)
        flat_scores, flat_labels = scores.reshape(-1), labels.reshape(-1)
        flat_roi = None if roi is None else roi.reshape(-1)
        pos = np.zeros(self.levels, dtype=np.int64)
        total = np.zeros(self.levels, dtype=np.int64)
        for start in range(0, flat_scores.size, _CHUNK):
            stop = start + _CHUNK
            bins = flat_scores[start:stop]
            if is_float:
                bins = _quantize_float_block(bins, self.levels)
            positive = flat_labels[start:stop] > 0
            if flat_roi is not None:
                inside = flat_roi[start:stop]
                bins, positive = bins[inside], positive[inside]
            total += np.bincount(bins, minlength=self.levels)
            pos += np.bincount(bins[positive], minlength=self.levels)
        self._pos += pos
        self._all += total

    def merge(self, other: BinnedCurve) -> BinnedCurve:
        """Add another curve's counts to this one (e.g. per-image curves into a pooled one).

        Returns:
            This curve, for chaining.

        Raises:
            ValueError: if the two curves have different numbers of levels.
        """
        if not isinstance(other, BinnedCurve):
            raise TypeError(f"can only merge a BinnedCurve, got {type(other).__name__}")
        if other.levels != self.levels:
            raise ValueError(f"cannot merge a curve with {other.levels} levels into one with {self.levels}")
        self._pos += other._pos
        self._all += other._all
        return self

    @property
    def positive_counts(self) -> np.ndarray:
        """Positives per bin (new int64 array, length ``levels``)."""
        return self._pos.copy()

    @property
    def negative_counts(self) -> np.ndarray:
        """Negatives per bin (new int64 array, length ``levels``)."""
        return self._all - self._pos

    @property
    def positives(self) -> int:
        """Total positive pixels counted."""
        return int(self._pos.sum())

    @property
    def negatives(self) -> int:
        """Total negative pixels counted."""
        return int(self._all.sum() - self._pos.sum())

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives at each non-empty bin as threshold, highest bin first (float64)."""
        occupied = self._all[::-1] > 0
        tps = np.cumsum(self._pos[::-1][occupied]).astype(np.float64)
        fps = np.cumsum((self._all - self._pos)[::-1][occupied]).astype(np.float64)
        return tps, fps

    def average_precision(self) -> float:
        """Step-wise average precision, ``sum_n (R_n - R_{n-1}) * P_n`` over thresholds from high to low.

        This is scikit-learn's ``average_precision_score`` (no interpolation; tied scores form one
        threshold). NaN when there are no positives.
        """
        if self.positives == 0:
            return float("nan")
        tps, fps = self._cumulative()
        precision = tps / (tps + fps)
        recall = tps / tps[-1]
        # Same order of operations as scikit-learn (points from low threshold to high, then recall 0).
        recall_rev = np.concatenate([recall[::-1], [0.0]])
        return float(max(0.0, -np.sum(np.diff(recall_rev) * precision[::-1])))

    def pr_auc_trapezoid(self) -> float:
        """Trapezoidal area under the PR curve, including scikit-learn's end point (recall 0, precision 1).

        Equals ``sklearn.metrics.auc(recall, precision)`` on ``precision_recall_curve`` output. NaN when
        there are no positives.
        """
        if self.positives == 0:
            return float("nan")
        tps, fps = self._cumulative()
        precision = np.concatenate([(tps / (tps + fps))[::-1], [1.0]])
        recall = np.concatenate([(tps / tps[-1])[::-1], [0.0]])
        # recall decreases along the curve, hence the sign (sklearn.metrics.auc's direction = -1).
        return float(-_trapezoid(precision, recall))

    def roc_auc(self) -> float:
        """Area under the ROC curve with ties on the trapezoid rule, as ``sklearn.metrics.roc_auc_score``.

        NaN when there are no positives or no negatives (scikit-learn raises instead).
        """
        if self.positives == 0 or self.negatives == 0:
            return float("nan")
        tps, fps = self._cumulative()
        tpr = np.concatenate([[0.0], tps / tps[-1]])
        fpr = np.concatenate([[0.0], fps / fps[-1]])
        return float(_trapezoid(tpr, fpr))

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """The PR curve's points, ``(recall, precision)``, from recall 0 (precision 1) to the lowest threshold.

        The points of ``sklearn.metrics.precision_recall_curve`` in reverse order; empty arrays when
        there are no positives.
        """
        if self.positives == 0:
            return np.zeros(0), np.zeros(0)
        tps, fps = self._cumulative()
        return np.concatenate([[0.0], tps / tps[-1]]), np.concatenate([[1.0], tps / (tps + fps)])

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """The ROC curve's points, ``(fpr, tpr)``, from (0, 0) to (1, 1); empty where :meth:`roc_auc` is NaN."""
        if self.positives == 0 or self.negatives == 0:
            return np.zeros(0), np.zeros(0)
        tps, fps = self._cumulative()
        return np.concatenate([[0.0], fps / fps[-1]]), np.concatenate([[0.0], tps / tps[-1]])

    def confusion_at(self, threshold_bin: int) -> Confusion:
        """Counts when predicting positive for every pixel in a bin ``>= threshold_bin``.

        ``threshold_bin = 0`` predicts everything positive and ``threshold_bin = levels`` nothing. For an
        8-bit map, a probability threshold ``t`` with "positive if p >= t" is ``ceil(t * 255)`` on the
        stored values.

        Returns:
            ``Confusion(tp, fp, fn, tn)``.

        Raises:
            ValueError: if ``threshold_bin`` is outside [0, levels].
        """
        if isinstance(threshold_bin, bool) or not isinstance(threshold_bin, (int, np.integer)):
            raise ValueError(f"threshold_bin must be an integer, got {threshold_bin!r}")
        if not 0 <= threshold_bin <= self.levels:
            raise ValueError(f"threshold_bin must lie in [0, {self.levels}], got {threshold_bin}")
        tp = int(self._pos[threshold_bin:].sum())
        predicted = int(self._all[threshold_bin:].sum())
        positives = self.positives
        fp = predicted - tp
        fn = positives - tp
        tn = int(self._all.sum()) - positives - fp
        return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # numpy.trapezoid's formula, spelled out because numpy < 2 names it trapz.
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def pooled_curve(
    pairs: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    levels: int = 256,
    desc: str = "pooling scores",
) -> BinnedCurve:
    """One curve over all pixels of many images, reading each image once and holding one at a time.

    Args:
        pairs: ``(scores, labels, roi)`` per image, ``roi`` possibly None (see :meth:`BinnedCurve.update`);
            pass a generator that loads images lazily to keep memory bounded.
        levels: number of score bins.
        desc: progress-bar label.

    Returns:
        The pooled curve.
    """
    curve = BinnedCurve(levels)
    for item in tqdm(pairs, desc=desc, leave=False):
        scores, labels, roi = item
        curve.update(scores, labels, roi)
        # Drop this image before the iterator produces the next one.
        del item, scores, labels, roi
    return curve
