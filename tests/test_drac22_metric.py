"""The DRAC22 Task 1 metric on hand-made masks with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eyegc.challenges.drac22.metric import Drac22SegmentationMetric
from eyegc.common.evaluation import overlap_per_case
from monai.metrics import compute_dice, compute_iou

METRIC = Drac22SegmentationMetric()


def masks(*boxes: tuple[int, int, int, int] | None, size: int = 10) -> np.ndarray:
    """A (3, size, size) uint8 mask, one optional (r0, r1, c0, c1) box per class."""
    out = np.zeros((3, size, size), dtype=np.uint8)
    for c, box in enumerate(boxes):
        if box is not None:
            r0, r1, c0, c1 = box
            out[c, r0:r1, c0:c1] = 1
    return out


def test_known_values_with_empty_truth_excluded() -> None:
    # case A: IRMA pred 4 px inside truth 8 px -> dice 2*4/12 = 2/3, iou 4/8 = 1/2
    #         NPA truth empty, pred has false positives -> NaN (costs nothing)
    #         NV truth 4 px, pred empty -> 0
    truth_a = masks((0, 2, 0, 4), None, (5, 7, 5, 7))
    pred_a = masks((0, 1, 0, 4), (0, 10, 0, 10), None)
    # case B: IRMA truth empty and pred empty -> NaN; NPA perfect -> 1; NV half overlap:
    #         truth 4 px, pred 4 px sharing 2 -> dice 0.5, iou 2/6
    truth_b = masks(None, (2, 4, 2, 4), (0, 2, 0, 2))
    pred_b = masks(None, (2, 4, 2, 4), (0, 2, 1, 3))
    result = METRIC("drac22-task1", [pred_a, pred_b], [truth_a, truth_b], ["086", "402"])
    assert result.per_class["irma"]["dsc"] == pytest.approx(2 / 3)
    assert result.per_class["irma"]["iou"] == pytest.approx(1 / 2)
    assert result.per_class["npa"]["dsc"] == pytest.approx(1.0)
    assert result.per_class["npa"]["iou"] == pytest.approx(1.0)
    assert result.per_class["nv"]["dsc"] == pytest.approx((0 + 0.5) / 2)
    assert result.per_class["nv"]["iou"] == pytest.approx((0 + 2 / 6) / 2)
    assert result.leaderboard["mean_dsc"] == pytest.approx((2 / 3 + 1 + 0.25) / 3)
    assert result.leaderboard["mean_iou"] == pytest.approx((1 / 2 + 1 + 1 / 6) / 3)
    assert result.cases == 2
    assert math.isnan(result.per_case[0]["npa_dsc"]) and math.isnan(result.per_case[1]["irma_iou"])
    assert result.per_case[0]["nv_dsc"] == 0.0


def test_empty_prediction_against_non_empty_truth_is_zero() -> None:
    truth = masks((0, 3, 0, 3), (0, 3, 0, 3), (0, 3, 0, 3))
    result = METRIC("drac22-task1", [np.zeros_like(truth)], [truth], ["1"])
    assert result.leaderboard == {"mean_dsc": 0.0, "mean_iou": 0.0}


def test_zero_255_and_zero_one_inputs_give_identical_results() -> None:
    rng = np.random.default_rng(5)
    truth = (rng.random((3, 32, 32)) > 0.7).astype(np.uint8)
    pred = (rng.random((3, 32, 32)) > 0.6).astype(np.uint8)
    a = METRIC("t", [pred], [truth], ["1"])
    b = METRIC("t", [pred * 255], [truth * 255], ["1"])
    assert a.to_json_dict() == b.to_json_dict()


def test_class_absent_from_every_truth_is_nan_and_left_out_of_the_mean() -> None:
    truth = masks((0, 2, 0, 2), (0, 2, 0, 2), None)
    pred = masks((0, 2, 0, 2), (0, 1, 0, 2), (0, 5, 0, 5))
    result = METRIC("t", [pred], [truth], ["7"])
    assert math.isnan(result.per_class["nv"]["dsc"])
    assert result.leaderboard["mean_dsc"] == pytest.approx((1 + 2 / 3) / 2)
    assert result.to_json_dict()["per_class"]["nv"]["dsc"] is None


@pytest.mark.parametrize("ignore_empty", [True, False])
def test_overlap_counts_agree_with_monai(ignore_empty: bool) -> None:
    rng = np.random.default_rng(11)
    for _ in range(25):
        truth = (rng.random((3, 24, 24)) > rng.uniform(0.5, 1.05)).astype(np.uint8)
        pred = (rng.random((3, 24, 24)) > rng.uniform(0.3, 1.05)).astype(np.uint8)
        dice, iou = overlap_per_case(pred, truth, ignore_empty=ignore_empty)
        p, t = torch.from_numpy(pred)[None].float(), torch.from_numpy(truth)[None].float()
        np.testing.assert_allclose(dice, compute_dice(p, t, ignore_empty=ignore_empty)[0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(iou, compute_iou(p, t, ignore_empty=ignore_empty)[0].numpy(), rtol=1e-6)
