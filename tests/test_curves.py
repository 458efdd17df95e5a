"""Pooled PR / ROC areas from score histograms against scikit-learn, and their edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from eyegc.common import curves
from eyegc.common.curves import BinnedCurve, Confusion, pooled_curve, quantize_scores
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


def _sklearn_figures(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    y_true = labels.ravel() > 0
    y_score = scores.ravel().astype(np.float64)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    return (
        average_precision_score(y_true, y_score),
        auc(recall, precision),
        roc_auc_score(y_true, y_score),
    )


def _curve_figures(curve: BinnedCurve) -> tuple[float, float, float]:
    return curve.average_precision(), curve.pr_auc_trapezoid(), curve.roc_auc()


def _random_case(
    rng: np.random.Generator, shape: tuple[int, ...], used_levels: int, prevalence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scores on the k/255 grid using only ``used_levels`` distinct values (few levels = heavy ties)."""
    labels = (rng.random(shape) < prevalence).astype(np.uint8)
    grid = np.sort(rng.choice(256, size=used_levels, replace=False))
    # Positives lean towards high levels so the areas are far from trivial.
    idx = rng.integers(0, used_levels, size=shape) + labels * rng.integers(0, used_levels // 2 + 1, size=shape)
    bins = grid[np.minimum(idx, used_levels - 1)]
    return bins / 255.0, labels


@pytest.mark.parametrize("used_levels", [2, 3, 7, 40, 256])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_grid_scores(used_levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, labels = _random_case(rng, (37, 23), used_levels, prevalence=0.2)
    curve = BinnedCurve()
    curve.update(scores, labels)
    np.testing.assert_allclose(_curve_figures(curve), _sklearn_figures(scores, labels), rtol=0, atol=1e-12)
    assert curve.positives == int(labels.sum())
    assert curve.negatives == labels.size - int(labels.sum())


@pytest.mark.parametrize("seed", [3, 4])
def test_uint8_bins_match_float_probabilities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, labels = _random_case(rng, (50, 40), 30, prevalence=0.1)
    as_uint8 = np.rint(scores * 255).astype(np.uint8)
    from_float, from_uint8 = BinnedCurve(), BinnedCurve()
    from_float.update(scores, labels)
    from_uint8.update(as_uint8, labels)
    np.testing.assert_array_equal(from_float.positive_counts, from_uint8.positive_counts)
    np.testing.assert_array_equal(from_float.negative_counts, from_uint8.negative_counts)
    np.testing.assert_allclose(_curve_figures(from_uint8), _sklearn_figures(scores, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("roi_dtype", [np.bool_, np.uint8])
def test_roi_selects_pixels_like_sklearn_on_the_selection(roi_dtype: type) -> None:
    rng = np.random.default_rng(5)
    scores, labels = _random_case(rng, (64, 48), 12, prevalence=0.3)
    yy, xx = np.mgrid[:64, :48]
    fov = (yy - 32) ** 2 + (xx - 24) ** 2 < 22**2
    # Outside the FOV, confident wrong answers that would change every figure if they were counted.
    scores = np.where(fov, scores, 1.0)
    labels = np.where(fov, labels, 0).astype(np.uint8)
    roi = fov.astype(roi_dtype) * (255 if roi_dtype is np.uint8 else 1)
    curve = BinnedCurve()
    curve.update(scores, labels, roi)
    expected = _sklearn_figures(scores[fov], labels[fov])
    np.testing.assert_allclose(_curve_figures(curve), expected, rtol=0, atol=1e-12)
    assert curve.positives + curve.negatives == int(fov.sum())
    unmasked = BinnedCurve()
    unmasked.update(scores, labels)
    assert abs(unmasked.roc_auc() - expected[2]) > 1e-3


def test_streaming_and_merge_equal_one_pooled_call() -> None:
    rng = np.random.default_rng(6)
    images = [_random_case(rng, (30 + 5 * i, 20), 25, prevalence=0.15) for i in range(4)]
    rois = [None, rng.random((35, 20)) < 0.8, None, rng.random((45, 20)) < 0.5]
    flat_scores = np.concatenate([(s if r is None else s[r]).ravel() for (s, _), r in zip(images, rois, strict=True)])
    flat_labels = np.concatenate([(y if r is None else y[r]).ravel() for (_, y), r in zip(images, rois, strict=True)])
    one_call = BinnedCurve()
    one_call.update(flat_scores, flat_labels)

    streamed = pooled_curve(((s, y, r) for (s, y), r in zip(images, rois, strict=True)), desc="test")
    merged = BinnedCurve()
    for (s, y), r in zip(images, rois, strict=True):
        per_image = BinnedCurve()
        per_image.update(s, y, r)
        assert merged.merge(per_image) is merged

    for curve in (streamed, merged):
        np.testing.assert_array_equal(curve.positive_counts, one_call.positive_counts)
        np.testing.assert_array_equal(curve.negative_counts, one_call.negative_counts)
        assert _curve_figures(curve) == _curve_figures(one_call)
    np.testing.assert_allclose(_curve_figures(one_call), _sklearn_figures(flat_scores, flat_labels), atol=1e-12)


def test_update_in_blocks_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    scores = rng.random((100, 33))
    labels = rng.random((100, 33)) < 0.2
    roi = rng.random((100, 33)) < 0.7
    whole = BinnedCurve()
    whole.update(scores, labels, roi)
    # A block size that does not divide the image exercises the partial last block.
    monkeypatch.setattr(curves, "_CHUNK", 97)
    blocked = BinnedCurve()
    blocked.update(scores, labels, roi)
    np.testing.assert_array_equal(blocked.positive_counts, whole.positive_counts)
    np.testing.assert_array_equal(blocked.negative_counts, whole.negative_counts)
    np.testing.assert_array_equal(quantize_scores(scores), np.rint(scores * 255).astype(np.uint8))


def test_hand_worked_four_pixels() -> None:
    # Scores 0.8(+), 0.6(-), 0.6(+), 0.2(-); thresholds 0.8, 0.6, 0.2.
    #   at 0.8: tp=1 fp=0 -> P=1,   R=1/2, FPR=0
    #   at 0.6: tp=2 fp=1 -> P=2/3, R=1,   FPR=1/2
    #   at 0.2: tp=2 fp=2 -> P=1/2, R=1,   FPR=1
    # AP = 1/2*1 + 1/2*2/3 + 0 = 5/6.
    # PR trapezoid from (0,1): 1/2*(1+1)/2 + 1/2*(1+2/3)/2 = 1/2 + 5/12 = 11/12.
    # ROC: (0,0)->(0,1/2)->(1/2,1)->(1,1): 0 + 1/2*(1/2+1)/2 + 1/2*1 = 3/8 + 1/2 = 7/8
    # (= pairs ranked right 3, tied 1 of 4: (3 + 0.5) / 4).
    scores = np.array([[0.8, 0.6], [0.6, 0.2]])
    scores = np.rint(scores * 255) / 255  # on the grid, so the hand values are exact
    labels = np.array([[1, 0], [2, 0]])  # any value > 0 is positive
    curve = BinnedCurve()
    curve.update(scores, labels)
    assert curve.average_precision() == pytest.approx(5 / 6, abs=1e-15)
    assert curve.pr_auc_trapezoid() == pytest.approx(11 / 12, abs=1e-15)
    assert curve.roc_auc() == pytest.approx(7 / 8, abs=1e-15)
    assert (curve.positives, curve.negatives) == (2, 2)


def test_confusion_at_threshold() -> None:
    scores = np.array([204, 153, 153, 51, 0], dtype=np.uint8)
    labels = np.array([1, 0, 1, 0, 1])
    curve = BinnedCurve()
    curve.update(scores, labels)
    assert curve.confusion_at(153) == Confusion(tp=2, fp=1, fn=1, tn=1)
    assert curve.confusion_at(154) == Confusion(tp=1, fp=0, fn=2, tn=2)
    assert curve.confusion_at(0) == Confusion(tp=3, fp=2, fn=0, tn=0)
    assert curve.confusion_at(256) == Confusion(tp=0, fp=0, fn=3, tn=2)
    for bad in (-1, 257):
        with pytest.raises(ValueError, match="threshold_bin"):
            curve.confusion_at(bad)


def test_off_grid_floats_equal_sklearn_on_quantised_and_close_to_raw() -> None:
    rng = np.random.default_rng(8)
    n = 200_000
    labels = rng.random(n) < 0.1
    # Smooth, overlapping class-conditional scores (a logistic of a shifted Gaussian).
    logits = rng.normal(size=n) + 1.5 * labels
    scores = 1.0 / (1.0 + np.exp(-logits))
    curve = BinnedCurve()
    curve.update(scores, labels)
    quantised = quantize_scores(scores).astype(np.float64) / 255.0
    np.testing.assert_allclose(_curve_figures(curve), _sklearn_figures(quantised, labels), rtol=0, atol=1e-12)
    raw = _sklearn_figures(scores, labels)
    np.testing.assert_allclose(_curve_figures(curve), raw, rtol=0, atol=0.01)
    # The raw floats are almost all distinct, so the exact match above really depends on the quantising.
    assert _curve_figures(curve) != pytest.approx(raw, abs=1e-9)


def test_quantize_rule_and_no_copy_for_uint8() -> None:
    p = np.array([0.0, 0.4 / 255, 1.49 / 255, 1.51 / 255, 0.5, 254.6 / 255, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize_scores(p), [0, 0, 1, 2, 128, 255, 255])
    assert quantize_scores(p).dtype == np.uint8
    assert quantize_scores(np.array([0.0, 0.5, 1.0]), levels=3).tolist() == [0, 1, 2]
    assert quantize_scores(np.array([1.0]), levels=1024).tolist() == [1023]
    as_uint8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert quantize_scores(as_uint8) is as_uint8
    as_uint16 = np.array([0, 1023], dtype=np.uint16)
    assert quantize_scores(as_uint16, levels=1024) is as_uint16


@pytest.mark.parametrize(
    ("scores", "levels", "match"),
    [
        (np.array([0.2, 1.01]), 256, r"\[0, 1\]"),
        (np.array([-0.01, 0.5]), 256, r"\[0, 1\]"),
        (np.array([0.2, np.nan]), 256, "NaN"),
        (np.array([0, 256], dtype=np.uint16), 256, "bin indices"),
        (np.array([0, 16], dtype=np.uint8), 16, "bin indices"),
        (np.array([-1, 3], dtype=np.int32), 256, "bin indices"),
        (np.array([True, False]), 256, "dtype"),
        (np.array([0.5]), 1, "levels"),
    ],
)
def test_bad_scores_raise(scores: np.ndarray, levels: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        quantize_scores(scores, levels)
    if levels >= 2:
        curve = BinnedCurve(levels)
        with pytest.raises(ValueError, match=match):
            curve.update(scores, np.ones(scores.shape))
        assert curve.positives == curve.negatives == 0


def test_bad_shapes_and_merge_raise() -> None:
    curve = BinnedCurve()
    with pytest.raises(ValueError, match="labels shape"):
        curve.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="roi shape"):
        curve.update(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="levels"):
        curve.merge(BinnedCurve(16))
    with pytest.raises(ValueError, match="levels"):
        BinnedCurve(0)


def test_missing_class_gives_nan_without_warnings() -> None:
    scores = np.array([0.1, 0.5, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_positives = BinnedCurve()
        no_positives.update(scores, np.zeros(3))
        assert np.isnan(no_positives.average_precision())
        assert np.isnan(no_positives.pr_auc_trapezoid())
        assert np.isnan(no_positives.roc_auc())

        no_negatives = BinnedCurve()
        no_negatives.update(scores, np.ones(3))
        assert np.isnan(no_negatives.roc_auc())
        assert no_negatives.average_precision() == 1.0

        empty = BinnedCurve()
        assert np.isnan(empty.average_precision())
        assert np.isnan(empty.roc_auc())
        assert empty.confusion_at(128) == Confusion(0, 0, 0, 0)
