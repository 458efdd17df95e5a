"""Each metric's per-case figure (``case_primary``, what ``eyegc report`` sorts by), on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eyegc.challenges.drac22.metric import Drac22SegmentationMetric
from eyegc.challenges.drive.metric import DriveVesselMetric
from eyegc.challenges.goals.metric import GlaucomaMetric
from eyegc.challenges.idrid.metric import IdridGradingMetric, IdridLesionMetric
from eyegc.common.curves import BinnedCurve
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve


def _boxes(*boxes: tuple[int, int, int, int] | None, size: int = 10) -> np.ndarray:
    out = np.zeros((len(boxes), size, size), dtype=np.uint8)
    for c, box in enumerate(boxes):
        if box is not None:
            r0, r1, c0, c1 = box
            out[c, r0:r1, c0:c1] = 1
    return out


def _figures(result, key: str) -> list[float]:
    return [row[key] for row in result.per_case]


def test_drac22_case_figure_is_the_mean_dice_of_the_classes_the_case_shows() -> None:
    # case A: IRMA dice 2/3, NPA absent from truth (NaN, left out), NV missed (0) -> 1/3
    truth_a, pred_a = _boxes((0, 2, 0, 4), None, (5, 7, 5, 7)), _boxes((0, 1, 0, 4), (0, 10, 0, 10), None)
    # case B: IRMA absent, NPA perfect (1), NV half overlap (0.5) -> 3/4
    truth_b, pred_b = _boxes(None, (2, 4, 2, 4), (0, 2, 0, 2)), _boxes(None, (2, 4, 2, 4), (0, 2, 1, 3))
    # case C: no lesion in truth at all -> NaN (nothing to score)
    truth_c, pred_c = _boxes(None, None, None), _boxes((0, 1, 0, 1), None, None)
    metric = Drac22SegmentationMetric()
    result = metric("t", [pred_a, pred_b, pred_c], [truth_a, truth_b, truth_c], ["a", "b", "c"])
    a, b, c = _figures(result, metric.case_primary)
    assert a == pytest.approx(1 / 3) and b == pytest.approx(3 / 4) and math.isnan(c)


def test_idrid_case_figure_is_the_mean_over_lesions_of_that_image_s_own_aupr() -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random((4, 12, 12)) < 0.2).astype(np.uint8)
    truth[3] = 0  # soft exudates absent from this image: NaN, left out of its mean
    probs = np.clip(truth * 0.35 + rng.random((4, 12, 12)) * 0.7, 0, 1)
    probs = np.round(probs * 255) / 255  # on the 8-bit grid the curves bin exactly
    metric = IdridLesionMetric()
    result = metric("t", [(probs > 0.5).astype(np.uint8)], [truth], ["IDRiD_01"], probabilities=[probs])
    [row] = result.per_case
    expected = [average_precision_score(truth[c].ravel(), probs[c].ravel()) for c in range(3)]
    for c, key in enumerate(metric.classes[:3]):
        assert row[f"{key}_aupr"] == pytest.approx(expected[c], abs=1e-12)
    assert math.isnan(row["se_aupr"])
    assert row[metric.case_primary] == pytest.approx(np.mean(expected), abs=1e-12)


def test_idrid_per_case_curves_pool_to_the_leaderboard_figure() -> None:
    rng = np.random.default_rng(4)
    truths = [(rng.random((4, 9, 9)) < 0.3).astype(np.uint8) for _ in range(3)]
    probs = [np.round(np.clip(t * 0.3 + rng.random(t.shape) * 0.7, 0, 1) * 255) / 255 for t in truths]
    metric = IdridLesionMetric()
    result = metric("t", [p > 0.5 for p in probs], truths, ["1", "2", "3"], probabilities=probs)
    for c, key in enumerate(metric.classes):
        pooled_truth = np.concatenate([t[c].ravel() for t in truths])
        pooled_probs = np.concatenate([p[c].ravel() for p in probs])
        assert result.per_class[key]["aupr"] == pytest.approx(average_precision_score(pooled_truth, pooled_probs))


def test_idrid_grading_case_figure_is_whether_both_grades_are_right() -> None:
    metric = IdridGradingMetric()
    truth = [np.array([2, 1]), np.array([0, 0]), np.array([4, 2])]
    pred = [np.array([2, 1]), np.array([0, 1]), np.array([3, 2])]
    result = metric("t", pred, truth, ["a", "b", "c"])
    assert _figures(result, metric.case_primary) == [1.0, 0.0, 0.0]
    assert result.leaderboard["joint_accuracy"] == pytest.approx(1 / 3)


def test_glaucoma_case_figure_is_the_likelihood_of_the_true_class() -> None:
    metric = GlaucomaMetric()
    truth = [np.array([1]), np.array([0]), np.array([1])]
    pred = [np.array([1]), np.array([1]), np.array([0])]
    probs = [np.array([[0.2, 0.8]]), np.array([[0.4, 0.6]]), np.array([[0.9, 0.1]])]
    result = metric("t", pred, truth, ["a", "b", "c"], probabilities=probs)
    assert _figures(result, metric.case_primary) == pytest.approx([0.8, 0.4, 0.1])


def test_drive_case_figure_is_f1_and_with_several_classes_their_mean() -> None:
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, 0, :] = 1  # 4 px
    truth[1, :, 0] = 1  # 4 px
    pred = np.zeros_like(truth)
    pred[0, 0, :2] = 1  # class 0: tp 2, fn 2 -> f1 2*2/(4+2) = 2/3
    pred[1, :, 0] = 1
    pred[1, 3, 3] = 1  # class 1: tp 4, fp 1 -> f1 8/9
    probs = pred.astype(np.float32)
    two = DriveVesselMetric(classes=("artery", "vein"))
    [row] = two("t", [pred], [truth], ["1"], probabilities=[probs]).per_case
    assert row["artery_f1"] == pytest.approx(2 / 3) and row["vein_f1"] == pytest.approx(8 / 9)
    assert row[two.case_primary] == pytest.approx((2 / 3 + 8 / 9) / 2)
    [row] = DriveVesselMetric()("t", [pred[:1]], [truth[:1]], ["1"], probabilities=[probs[:1]]).per_case
    assert row["f1"] == pytest.approx(2 / 3)


def test_curve_points_are_scikit_learn_s() -> None:
    rng = np.random.default_rng(8)
    labels = (rng.random(500) < 0.3).astype(np.uint8)
    scores = rng.integers(0, 256, 500) / 255
    curve = BinnedCurve()
    curve.update(scores, labels)
    recall, precision = curve.precision_recall()
    sk_precision, sk_recall, _ = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(recall, sk_recall[::-1])
    np.testing.assert_allclose(precision, sk_precision[::-1])
    fpr, tpr = curve.roc()
    sk_fpr, sk_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    empty = BinnedCurve()
    empty.update(scores, np.zeros_like(labels))
    assert empty.precision_recall()[0].size == 0 and empty.roc()[0].size == 0
