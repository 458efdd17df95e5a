"""DRAC22 tasks 2 and 3: quadratic weighted kappa and the one-vs-one AUC, on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eyegc.challenges.drac22.metric import Drac22GradingMetric, quadratic_weighted_kappa
from sklearn.metrics import cohen_kappa_score

METRIC = Drac22GradingMetric()


def _score(truth: list[int], pred: list[int], probs: list[list[float]] | None = None):
    ids = [f"{i:03d}" for i in range(len(truth))]
    probabilities = None if probs is None else [np.array([p]) for p in probs]
    return METRIC("t", [np.array([g]) for g in pred], [np.array([g]) for g in truth], ids, probabilities=probabilities)


def test_the_organisers_own_example() -> None:
    # evaluation/metric_classification.py's __main__: y_true 0,0,1,2; y_pred 0,0,1,0
    probs = [[0.55, 0.2, 0.25], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]
    result = _score([0, 0, 1, 2], [0, 0, 1, 0], probs)
    # kappa: observed weighted disagreement 1/4 (one 2-vs-0, weight 4/4) over the expected 1.125/4 -> 1 - 8/9
    assert result.leaderboard["kappa"] == pytest.approx(1 / 9, abs=1e-12)
    # one-vs-one AUCs: (0,1) 1 and 1; (0,2) 1/4 and 1/4 (ties count half); (1,2) 1 and 0 -> (1 + 1/4 + 1/2) / 3
    assert result.leaderboard["auc"] == pytest.approx(7 / 12, abs=1e-12)
    assert result.leaderboard["accuracy"] == pytest.approx(3 / 4)
    assert [row["true_class_probability"] for row in result.per_case] == pytest.approx([0.55, 0.8, 0.7, 0.1])


def test_data_that_do_not_cover_every_grade() -> None:
    # grades 1 and 2 only: the range is 1..2 (n = 2, weight 1 for a disagreement)
    # observed 1/4, expected (2*1 + 2*3) / 16 = 1/2 -> kappa 1/2; the AUC is undefined (organisers' call raises)
    result = _score([1, 2, 2, 1], [1, 2, 1, 1], [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.3, 0.6, 0.1]])
    assert result.leaderboard["kappa"] == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(result.leaderboard["auc"])
    # the range taken from the data gives what a fixed 0..2 range gives: an unused grade adds nothing
    assert quadratic_weighted_kappa([1, 2, 2, 1], [1, 2, 1, 1]) == pytest.approx(
        cohen_kappa_score([1, 2, 2, 1], [1, 2, 1, 1], weights="quadratic", labels=[0, 1, 2])
    )


def test_one_grade_given_throughout_is_nan_where_the_organisers_divide_by_zero() -> None:
    assert math.isnan(quadratic_weighted_kappa([2, 2, 2], [2, 2, 2]))
    assert math.isnan(_score([1, 1], [1, 1]).leaderboard["kappa"])
    assert quadratic_weighted_kappa([0, 2], [2, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(5))
def test_kappa_equals_scikit_learn_s_quadratic_kappa(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    assert quadratic_weighted_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"), abs=1e-12)


def test_without_probabilities_the_auc_is_nan_and_the_case_figure_is_whether_the_grade_is_right() -> None:
    result = _score([0, 1, 2], [0, 2, 2])
    assert math.isnan(result.leaderboard["auc"])
    assert [row["true_class_probability"] for row in result.per_case] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("pred", "probs", "says"),
    [([3], None, "prediction 3 is outside 0-2"), ([1], [[0.5, float("nan"), 0.5]], "finite non-negative")],
)
def test_bad_values_name_the_case(pred: list[int], probs: list[list[float]] | None, says: str) -> None:
    with pytest.raises(ValueError, match=f"case 000: .*{says}"):
        _score([1], pred, probs)


def test_rows_that_do_not_sum_to_one_are_normalised_and_others_taken_as_given() -> None:
    exact = [[0.55, 0.2, 0.25], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.8, 0.1, 0.1]]
    eight_bit = [[round(p * 255) / 255 for p in row] for row in exact]  # as out-of-fold files keep them
    eight_bit[0] = [140 / 255, 51 / 255, 63 / 255]  # sums to 254/255
    result = _score([0, 0, 1, 2], [0, 0, 1, 0], eight_bit)
    assert result.leaderboard["auc"] == pytest.approx(7 / 12, abs=1e-12)
