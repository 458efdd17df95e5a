"""GOALS metrics on hand-made cases (values computed by hand) and the anatomical postprocessing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from eyegc.challenges.goals.metric import (
    GlaucomaMetric,
    GoalsLayerMetric,
    bootstrap_auc_ci,
    layer_thickness,
    rank_auc,
)
from eyegc.challenges.goals.postprocessing import anatomical_layers
from eyegc.common.lazy import LazySequence
from eyegc.common.plugin import EvaluationResult, Metric
from sklearn.metrics import roc_auc_score

# 0 background, 1 RNFL, 2 GCIPL, 3 choroid; columns are A-scans.
TRUTH = np.array(
    [
        [0, 0, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 2, 2],
        [2, 2, 2, 2],
        [0, 0, 0, 0],
        [3, 3, 3, 3],
        [0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


def _prediction() -> np.ndarray:
    pred = TRUTH.copy()
    pred[2, 0] = 2  # one RNFL pixel called GCIPL
    pred[5] = 0  # the choroid is missing altogether
    return pred


def test_layer_dice_and_thickness_by_hand() -> None:
    metric = GoalsLayerMetric()
    result = metric("goals-layers", [_prediction()[None]], [TRUTH[None]], ["0001"])
    # RNFL: truth 6 px, prediction 5 px, overlap 5 -> 2*5/11; thickness per column 1,2,2,2 vs 2,2,1,1... see below
    assert result.per_class["rnfl"]["dice"] == pytest.approx(10 / 11)
    # GCIPL: truth 6 px, prediction 7 px, overlap 6 -> 12/13
    assert result.per_class["gcipl"]["dice"] == pytest.approx(12 / 13)
    # Choroid present in the truth, absent from the prediction: Dice 0
    assert result.per_class["choroid"]["dice"] == 0.0
    # Thickness: RNFL true 2,2,1,1 predicted 1,2,1,1 -> MAE 1/4; GCIPL 1,1,2,2 vs 2,1,2,2 -> 1/4; choroid 1 each -> 1
    assert result.per_class["rnfl"]["thickness_mae"] == pytest.approx(0.25)
    assert result.per_class["gcipl"]["thickness_mae"] == pytest.approx(0.25)
    assert result.per_class["choroid"]["thickness_mae"] == pytest.approx(1.0)
    assert result.leaderboard == pytest.approx({"mean_dice": (10 / 11 + 12 / 13) / 3, "mean_thickness_mae": 0.5})
    assert result.per_case[0]["case"] == "0001" and result.per_case[0]["choroid_dice"] == 0.0
    assert list(layer_thickness(TRUTH, 1)) == [2.0, 2.0, 1.0, 1.0]


def test_layer_absent_from_both_scores_one_and_means_over_images() -> None:
    truth2 = TRUTH.copy()
    truth2[truth2 == 3] = 0  # no choroid in the second image's truth...
    pred2 = truth2.copy()  # ...nor in its prediction: Dice 1, thickness error 0
    metric = GoalsLayerMetric()
    result = metric(
        "goals-layers",
        LazySequence(2, lambda i: [_prediction(), pred2][i][None]),
        LazySequence(2, lambda i: [TRUTH, truth2][i][None]),
        ["a", "b"],
    )
    assert result.per_case[1]["choroid_dice"] == 1.0
    assert result.per_class["choroid"]["dice"] == pytest.approx(0.5)
    assert result.per_class["rnfl"]["dice"] == pytest.approx((10 / 11 + 1.0) / 2)
    assert result.per_class["choroid"]["thickness_mae"] == pytest.approx(0.5)
    assert result.cases == 2


def test_ground_truth_scores_perfectly_and_class_score_matches() -> None:
    metric = GoalsLayerMetric()
    assert isinstance(metric, Metric)
    perfect = metric("goals-layers", [TRUTH[None]], [TRUTH[None]], ["x"])
    assert perfect.leaderboard == {"mean_dice": 1.0, "mean_thickness_mae": 0.0}
    preds, truths = [_prediction(), TRUTH], [TRUTH, TRUTH]
    result = metric("goals-layers", [p[None] for p in preds], [t[None] for t in truths], ["a", "b"])
    for c, key in enumerate(("rnfl", "gcipl", "choroid"), start=1):
        score = metric.class_score(c, [p == c for p in preds], [t == c for t in truths])
        assert score == pytest.approx(result.per_class[key]["dice"])


def test_composite_is_reported_only_when_configured() -> None:
    args = ("goals-layers", [_prediction()[None]], [TRUTH[None]], ["0001"])
    weighted = GoalsLayerMetric(composite={"mean_dice": 10.0, "mean_thickness_mae": -1.0})(*args)
    assert weighted.leaderboard["composite"] == pytest.approx(10 * (10 / 11 + 12 / 13) / 3 - 0.5)
    called = GoalsLayerMetric(composite=lambda board: board["mean_dice"] * 2)(*args)
    assert called.leaderboard["composite"] == pytest.approx(2 * (10 / 11 + 12 / 13) / 3)
    assert "composite" not in GoalsLayerMetric()(*args).leaderboard
    with pytest.raises(ValueError, match="composite weights"):
        GoalsLayerMetric(composite={"auc": 1.0})


def test_bad_index_maps_are_rejected() -> None:
    with pytest.raises(ValueError, match="case x"):
        GoalsLayerMetric()("goals-layers", [np.full((1, 2, 2), 5, np.uint8)], [np.zeros((1, 2, 2), np.uint8)], ["x"])


# -- glaucoma ---------------------------------------------------------------------------------------


def _glaucoma(truth: list[int], scores: list[float], grades: list[int] | None = None, **kw: object) -> EvaluationResult:
    grades = grades if grades is not None else [int(s >= 0.5) for s in scores]
    return GlaucomaMetric(**kw)(  # type: ignore[arg-type]
        "goals-glaucoma",
        [np.array([g]) for g in grades],
        [np.array([t]) for t in truth],
        [f"{i:04d}" for i in range(len(truth))],
        probabilities=[np.array([[1 - s, s]]) for s in scores],
    )


def test_auc_on_known_rankings() -> None:
    assert _glaucoma([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]).leaderboard["auc"] == 1.0
    assert _glaucoma([0, 0, 1, 1], [0.9, 0.7, 0.2, 0.1]).leaderboard["auc"] == 0.0
    # positives 0.4 and 0.8 against negatives 0.1 and 0.6: 3 of 4 pairs ranked right
    result = _glaucoma([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8])
    assert result.leaderboard["auc"] == pytest.approx(0.75)
    assert result.per_class["glaucoma"]["auc"] == pytest.approx(0.75)
    assert result.per_case[1]["true_class_probability"] == pytest.approx(0.4)  # a negative given 0.6
    assert result.per_case[2] == {
        "case": "0002",
        "glaucoma_true": 1,
        "glaucoma_pred": 0,
        "glaucoma_score": 0.4,
        "true_class_probability": 0.4,
    }


def test_accuracy_f1_kappa_on_known_labels() -> None:
    result = _glaucoma([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], grades=[0, 0, 1, 1, 1, 1])
    board = result.leaderboard
    assert board["accuracy"] == pytest.approx(5 / 6)
    assert board["f1"] == pytest.approx(6 / 7)  # tp 3, fp 1, fn 0
    assert board["kappa"] == pytest.approx(2 / 3)  # po 5/6, pe 1/2
    assert list(board) == ["auc", "auc_ci_low", "auc_ci_high", "accuracy", "f1", "kappa"]
    chance = _glaucoma([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8], grades=[0, 1, 0, 1]).leaderboard
    assert chance["accuracy"] == 0.5 and chance["kappa"] == pytest.approx(0.0) and chance["f1"] == 0.5


def test_bootstrap_interval_is_deterministic_and_brackets_the_auc() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 60)
    scores = np.clip(truth * 0.3 + rng.random(60) * 0.7, 0, 1)
    first = _glaucoma(truth.tolist(), scores.tolist()).leaderboard
    again = _glaucoma(truth.tolist(), scores.tolist()).leaderboard
    assert first == again
    assert first["auc_ci_low"] < first["auc"] < first["auc_ci_high"]
    other_seed = _glaucoma(truth.tolist(), scores.tolist(), seed=1).leaderboard
    assert other_seed["auc_ci_low"] != first["auc_ci_low"]
    # two cases, one of each class: terminates (resamples with one class are dropped)
    low, high = bootstrap_auc_ci(np.array([0, 1]), np.array([0.2, 0.9]), n_bootstraps=50)
    assert low == high == 1.0


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        truth = rng.integers(0, 2, 40)
        scores = rng.integers(0, 5, 40) / 4.0  # many ties
        assert rank_auc(truth, scores)[0] == pytest.approx(roc_auc_score(truth, scores))
    assert np.isnan(rank_auc(np.zeros(5), np.arange(5.0))[0])


def test_one_class_truth_gives_nan_auc_and_class_score_matches_label_auc() -> None:
    assert np.isnan(_glaucoma([1, 1, 1], [0.2, 0.5, 0.9]).leaderboard["auc"])
    metric = GlaucomaMetric()
    assert isinstance(metric, Metric)
    truth, grades = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    result = metric(
        "goals-glaucoma", [np.array([g]) for g in grades], [np.array([t]) for t in truth], list("abcde")
    )  # no probabilities: the labels are the scores
    expected = (2 / 3 + 1 / 2) / 2  # balanced accuracy: sensitivity 2/3, specificity 1/2
    assert result.leaderboard["auc"] == pytest.approx(expected)
    score = metric.class_score(0, [np.array([g])[0] for g in grades], [np.array([t])[0] for t in truth])
    assert score == pytest.approx(expected)


# -- postprocessing ---------------------------------------------------------------------------------


def test_postprocessing_leaves_a_valid_map_unchanged() -> None:
    assert np.array_equal(anatomical_layers(TRUTH), TRUTH)
    assert np.array_equal(anatomical_layers(TRUTH[None]), TRUTH)


def test_postprocessing_fixes_an_out_of_order_column() -> None:
    # 3 rows vitreous, 2 RNFL, 2 GCIPL, 1 other retina, 2 choroid, 2 sclera
    column = np.array([0, 0, 0, 1, 1, 2, 2, 0, 3, 3, 0, 0], dtype=np.uint8)
    valid = np.repeat(column[:, None], 4, axis=1)
    broken = valid.copy()
    broken[1, 0] = 3  # a speck of choroid in the vitreous
    broken[11, 1] = 1  # RNFL at the bottom of the sclera
    broken[7, 2] = 1  # RNFL below the GCIPL
    broken[7, 3] = 2  # GCIPL one row longer: still in order, kept
    fixed = anatomical_layers(broken)
    assert np.array_equal(fixed[:, :2], valid[:, :2])  # each the only one-pixel repair
    # row 7 may become retina, GCIPL or choroid: three one-pixel repairs, all in order
    assert fixed[7, 2] in (0, 2, 3) and np.count_nonzero(fixed[:, 2] != broken[:, 2]) == 1
    assert np.array_equal(anatomical_layers(fixed), fixed)
    assert np.array_equal(fixed[:, 3], broken[:, 3])


def test_postprocessing_from_probabilities_is_fast_at_full_size() -> None:
    height, width = 800, 1100
    truth = np.zeros((height, width), np.uint8)
    truth[300:340], truth[340:370], truth[480:600] = 1, 2, 3
    rng = np.random.default_rng(0)
    probabilities = np.eye(4, dtype=np.float32)[truth].transpose(2, 0, 1) * 0.6 + 0.1
    # Scattered wrong votes (5%) that an ordered labelling cannot adopt: choroid in the vitreous,
    # background inside the RNFL, GCIPL inside the choroid, RNFL in the sclera.
    for rows, wrong in (((0, 290), 3), ((305, 335), 0), ((500, 580), 2), ((620, 800), 1)):
        noise = np.zeros((height, width), bool)
        noise[rows[0] : rows[1]] = rng.random((rows[1] - rows[0], width)) < 0.05
        probabilities[:, noise] = 0.1
        probabilities[wrong, noise] = 0.7
    assert not np.array_equal(probabilities.argmax(axis=0), truth)
    start = time.perf_counter()
    fixed = anatomical_layers(probabilities)
    elapsed = time.perf_counter() - start
    assert np.array_equal(fixed, truth)
    assert elapsed < 3.0  # about 0.15 s on one core; loose for busy CI machines
