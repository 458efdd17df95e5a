"""Per-grade decision offsets (``eyegc tune --grade-offsets``): the rule, the search, and the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config
from eyegc.common import cli
from eyegc.common.bundle import load_bundle, read_config
from eyegc.common.bundle_config import Postprocessing
from eyegc.common.errors import EyegcError
from eyegc.common.plugin import TaskKind
from eyegc.common.postprocessing import offset_grade, postprocess
from eyegc.common.registry import get_task
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import train
from eyegc.common.tuning import tune_grade_offsets

TASK = "drac22-task3"


def test_an_offset_is_added_to_the_log_probability() -> None:
    probs = np.array([0.15, 0.45, 0.40])
    assert offset_grade(probs, [0.0, 0.0, 0.0]) == 1  # the argmax
    assert offset_grade(probs, [0.0, 0.0, 0.25]) == 2  # log 0.40 + 0.25 = -0.666 > log 0.45 = -0.799
    assert offset_grade(probs, [0.0, 0.0, 0.1]) == 1  # -0.816 < -0.799
    rules = Postprocessing(grade_offsets={"grade": [0.0, 0.0, 0.25]})
    assert postprocess(probs[None], TaskKind.CLASSIFICATION, ["grade"], rules).tolist() == [2]


def _undercalled() -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Grade-2 cases whose probability of 2 is always a little below that of 1: the argmax never says 2."""
    probs = [[0.8, 0.15, 0.05]] * 4 + [[0.2, 0.7, 0.1]] * 4 + [[0.1, 0.47, 0.43]] * 4
    truth = [0] * 4 + [1] * 4 + [2] * 4
    return [np.array([p]) for p in probs], [np.array([t]) for t in truth], [f"{i:03d}" for i in range(12)]


def test_offsets_recover_the_grade_the_argmax_misses() -> None:
    plugin = get_task(TASK)
    probs, truth, ids = _undercalled()
    plain = plugin.metric(TASK, [postprocess(p, plugin.kind, ["grade"], Postprocessing()) for p in probs], truth, ids)
    assert plain.leaderboard["kappa"] < 1
    chosen = tune_grade_offsets(plugin, probs, truth, ids, {"thresholds": {}, "tuned": True})
    offsets = chosen["grade_offsets"]["grade"]
    assert offsets[0] == 0.0 and chosen["class_scores"]["grade"] == pytest.approx(1.0)
    # one step of 0.25 (grade 1 down, or grade 2 up) lifts 0.43 over 0.47 (log-ratio 0.089); the grade-1
    # cases (log-ratio 1.95 over grade 2) stay; the search takes the smallest change that does it
    assert sorted(abs(o) for o in offsets) == [0.0, 0.0, 0.25]
    rules = Postprocessing(grade_offsets={"grade": offsets})
    assert [int(postprocess(p, plugin.kind, ["grade"], rules)[0]) for p in probs] == [int(t[0]) for t in truth]


def test_without_a_gain_the_offsets_stay_zero() -> None:
    plugin = get_task(TASK)
    probs = [np.array([[0.8, 0.1, 0.1]]), np.array([[0.1, 0.8, 0.1]]), np.array([[0.1, 0.1, 0.8]])]
    truth = [np.array([g]) for g in range(3)]
    chosen = tune_grade_offsets(plugin, probs, truth, ["1", "2", "3"], {"thresholds": {}})
    assert chosen["grade_offsets"]["grade"] == [0.0, 0.0, 0.0]


def test_segmentation_tasks_have_no_grades() -> None:
    with pytest.raises(EyegcError, match="classification tasks only"):
        tune_grade_offsets(get_task("drac22-task1"), [], [], [], {})


def test_tune_grade_offsets_on_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = get_task(TASK)
    data = write_sample_data(plugin, tmp_path / "data", cases=9, test_cases=3, seed=2)
    config = tiny_train_config(
        folds=3,
        epochs=2,
        batch_size=3,
        patch_size=0,
        network_kwargs={"depth": 10, "block_inplanes": (8, 16, 32, 64)},
        extra={"input_size": (64, 64)},
    )
    run = train(plugin, data, tmp_path / "run", config)
    assert cli.main(["tune", TASK, "--model", str(run), "--grade-offsets"]) == 0
    assert "grade offsets (added to the log-probabilities) {'grade': [0.0, " in capsys.readouterr().out
    settings = read_config(run)
    assert len(settings.postprocessing.grade_offsets["grade"]) == 3
    cv = settings.cross_validation
    assert cv is not None
    tuned, default = cv.tuned_postprocessing["leaderboard"]["kappa"], cv.default_postprocessing["leaderboard"]["kappa"]
    assert tuned is not None and (default is None or tuned >= default)
    load_bundle(run, task=TASK)  # still signed: the checksums hold
