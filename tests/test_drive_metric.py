"""The DRIVE metric: FOV-restricted, pooled counts worked out by hand, and AUC against scikit-learn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest
from eyegc.challenges.drive.metric import DriveVesselMetric, quantise_probabilities, roc_auc_from_histograms
from eyegc.common.plugin import Metric
from sklearn.metrics import roc_auc_score

# Image 1 (4x4); the FOV is the three left columns.
TRUE_1 = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.uint8)[None]
PRED_1 = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)[None]
FOV_1 = np.zeros((4, 4), bool)
FOV_1[:, :3] = True
# Image 2 (4x4), no FOV (the whole image counts): one vessel pixel, missed.
TRUE_2 = np.zeros((1, 4, 4), np.uint8)
TRUE_2[0, 0, 0] = 1
PRED_2 = np.zeros((1, 4, 4), np.uint8)


def _close(value: float, fraction: Fraction) -> bool:
    return math.isclose(value, float(fraction), rel_tol=0, abs_tol=1e-12)


class OneShot(Sequence):
    """A sequence whose items may each be read only once (like a lazy loader that must not reload)."""

    def __init__(self, items: list) -> None:
        self.items, self.seen = items, set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):  # type: ignore[override]
        if index >= len(self.items):
            raise IndexError(index)
        assert index not in self.seen, f"item {index} read twice"
        self.seen.add(index)
        return self.items[index]


def test_is_a_metric() -> None:
    metric = DriveVesselMetric()
    assert isinstance(metric, Metric)
    assert (metric.primary, metric.class_primary, metric.needs_probabilities) == ("f1", "f1", True)


def test_counts_inside_the_fov_by_hand() -> None:
    # Inside the FOV: TP 2, FP 1, FN 1, TN 8 (12 pixels); column 3 is ignored.
    result = DriveVesselMetric()("drive-vessels", [PRED_1], [TRUE_1], ["21_training"], rois=[FOV_1])
    vessel = result.per_class["vessel"]
    assert _close(vessel["f1"], Fraction(4, 6))
    assert _close(vessel["accuracy"], Fraction(10, 12))
    assert _close(vessel["sensitivity"], Fraction(2, 3))
    assert _close(vessel["specificity"], Fraction(8, 9))
    assert math.isnan(vessel["auc"])  # no probabilities given
    assert set(result.leaderboard) == {"f1", "auc"} and _close(result.leaderboard["f1"], Fraction(2, 3))
    assert set(vessel) == {"f1", "auc", "accuracy", "sensitivity", "specificity"}
    # Without a FOV the whole image counts: TP 2, FP 2, FN 3, TN 9.
    whole = DriveVesselMetric()("drive-vessels", [PRED_1], [TRUE_1], ["21_training"])
    assert _close(whole.per_class["vessel"]["f1"], Fraction(4, 9))
    assert _close(whole.per_class["vessel"]["specificity"], Fraction(9, 11))


def test_differences_outside_the_fov_cost_nothing() -> None:
    pred = TRUE_1.copy()
    pred[0, :, 3] = 1 - pred[0, :, 3]  # wrong everywhere outside the FOV
    probs = pred.astype(np.float32)
    result = DriveVesselMetric()("t", [pred], [TRUE_1], ["a"], probabilities=[probs], rois=[FOV_1])
    assert result.per_class["vessel"] == {
        "f1": 1.0,
        "auc": 1.0,
        "accuracy": 1.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
    }


def test_pooled_over_images_and_per_image_rows() -> None:
    # Pooled: TP 2, FP 1, FN 2, TN 8 + 15 = 23.
    result = DriveVesselMetric()(
        "t", [PRED_1, PRED_2], [TRUE_1, TRUE_2], ["21_training", "22_training"], rois=[FOV_1, None]
    )
    vessel = result.per_class["vessel"]
    assert _close(vessel["f1"], Fraction(4, 7))
    assert _close(vessel["accuracy"], Fraction(25, 28))
    assert _close(vessel["sensitivity"], Fraction(1, 2))
    assert _close(vessel["specificity"], Fraction(23, 24))
    assert result.cases == 2
    rows = {row["case"]: row for row in result.per_case}
    assert _close(rows["21_training"]["f1"], Fraction(2, 3))
    assert rows["22_training"]["f1"] == 0.0 and rows["22_training"]["sensitivity"] == 0.0
    # The per-image mean F1 (1/3) differs from the pooled F1 (4/7).
    assert _close(float(np.mean([r["f1"] for r in result.per_case])), Fraction(1, 3))


def test_undefined_figures() -> None:
    empty = np.zeros((1, 3, 3), np.uint8)
    result = DriveVesselMetric()("t", [empty], [empty], ["a"], probabilities=[empty.astype(np.float32)])
    vessel = result.per_class["vessel"]
    assert vessel["f1"] == 1.0 and vessel["specificity"] == 1.0
    assert math.isnan(vessel["sensitivity"]) and math.isnan(vessel["auc"])


def test_auc_by_hand_with_ties() -> None:
    # Positives score {1.0, 0.5}, negatives {0.5, 0, 0}: 5 wins and one tie out of 6 pairs.
    true = np.array([[[1, 1, 0, 0, 0]]], np.uint8)
    probs = np.array([[[1.0, 0.5, 0.5, 0.0, 0.0]]], np.float32)
    result = DriveVesselMetric()("t", [true], [true], ["a"], probabilities=[probs])
    assert _close(result.per_class["vessel"]["auc"], Fraction(11, 12))
    pos = np.zeros(256, np.int64)
    neg = np.zeros(256, np.int64)
    pos[[255, 128]] = 1
    neg[128], neg[0] = 1, 2
    assert _close(roc_auc_from_histograms(pos, neg), Fraction(11, 12))
    assert math.isnan(roc_auc_from_histograms(pos, np.zeros(256, np.int64)))


def test_pooled_auc_equals_sklearn_on_quantised_scores() -> None:
    rng = np.random.default_rng(0)
    preds, targets, probs, rois = [], [], [], []
    for _ in range(3):
        true = (rng.random((1, 40, 50)) < 0.12).astype(np.uint8)
        p = np.clip(0.35 * true + rng.beta(2, 5, true.shape), 0, 1).astype(np.float32)
        roi = rng.random((40, 50)) < 0.7
        preds.append((p > 0.5).astype(np.uint8))
        targets.append(true)
        probs.append(p)
        rois.append(roi)
    result = DriveVesselMetric()("t", preds, targets, ["a", "b", "c"], probabilities=probs, rois=rois)
    y = np.concatenate([t[0][r] for t, r in zip(targets, rois, strict=True)])
    s = np.concatenate([quantise_probabilities(p)[0][r] for p, r in zip(probs, rois, strict=True)])
    assert result.leaderboard["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # Unquantised scores agree to a few 1e-4 (quantisation to 8 bits).
    y_raw = np.concatenate([p[0][r] for p, r in zip(probs, rois, strict=True)])
    assert result.leaderboard["auc"] == pytest.approx(roc_auc_score(y, y_raw), abs=2e-3)
    per_image = [
        roc_auc_score(t[0][r], quantise_probabilities(p)[0][r]) for t, p, r in zip(targets, probs, rois, strict=True)
    ]
    assert [row["auc"] for row in result.per_case] == pytest.approx(per_image, abs=1e-12)


def test_reads_lazy_inputs_once() -> None:
    probs = [TRUE_1.astype(np.float32), TRUE_2.astype(np.float32)]
    result = DriveVesselMetric()(
        "t",
        OneShot([PRED_1, PRED_2]),
        OneShot([TRUE_1, TRUE_2]),
        ["a", "b"],
        probabilities=OneShot(probs),
        rois=OneShot([FOV_1, None]),
    )
    assert _close(result.leaderboard["f1"], Fraction(4, 7))


def test_class_score_is_the_pooled_f1() -> None:
    metric = DriveVesselMetric()
    # Tuning zeroes everything outside the FOV: that gives exactly the FOV-restricted F1.
    inside = [PRED_1[0] * FOV_1, PRED_2[0]]
    truth = [TRUE_1[0] * FOV_1, TRUE_2[0]]
    assert _close(metric.class_score(0, inside, truth), Fraction(4, 7))
    assert _close(
        metric.class_score(0, [PRED_1[0], PRED_2[0]], [TRUE_1[0], TRUE_2[0]], rois=[FOV_1, None]), Fraction(4, 7)
    )
    full = metric("t", [PRED_1, PRED_2], [TRUE_1, TRUE_2], ["a", "b"], rois=[FOV_1, None])
    assert metric.class_score(0, inside, truth) == full.per_class["vessel"]["f1"]


def test_shape_mismatches_are_refused() -> None:
    metric = DriveVesselMetric()
    with pytest.raises(ValueError, match="differs"):
        metric("t", [PRED_1], [TRUE_1[:, :3]], ["a"])
    with pytest.raises(ValueError, match="field-of-view"):
        metric("t", [PRED_1], [TRUE_1], ["a"], rois=[np.ones((3, 3), bool)])
    with pytest.raises(ValueError, match="length"):
        metric("t", [PRED_1], [TRUE_1, TRUE_2], ["a"])


def test_quantisation() -> None:
    q = quantise_probabilities(np.array([0.0, 0.5, 1 / 255, 0.999, 1.2, -0.1], np.float32))
    assert q.dtype == np.uint8 and q.tolist() == [0, 128, 1, 255, 255, 0]
    with pytest.raises(ValueError, match="NaN"):
        quantise_probabilities(np.array([np.nan]))
