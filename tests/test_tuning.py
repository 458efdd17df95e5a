"""Threshold and component-size tuning maximises the leaderboard metric itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from eyegc.common.bundle import read_config, save_config_keeping_signature, verify_checksums
from eyegc.common.errors import BundleError, EyegcError
from eyegc.common.imageio import write_png
from eyegc.common.postprocessing import binarize, remove_small_components
from eyegc.common.registry import get_task
from eyegc.common.tuning import tune, tune_postprocessing

PLUGIN = get_task("drac22-task1")


def test_remove_small_components_uses_eight_connectivity() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = 1  # one diagonal component of 3 px
    mask[6:8, 6:8] = 1  # 4 px
    kept = remove_small_components(mask, 4)
    assert kept[:3, :3].sum() == 0 and kept[6:8, 6:8].sum() == 4
    assert remove_small_components(mask, 3).sum() == 7


def test_binarize_applies_per_class_thresholds() -> None:
    probs = np.stack([np.full((4, 4), 0.3), np.full((4, 4), 0.6), np.full((4, 4), 0.9)])
    masks = binarize(probs, [0.25, 0.7, 0.9], [0, 0, 0])
    assert masks.dtype == np.uint8
    assert [int(m.max()) for m in masks] == [1, 0, 1]


def test_best_threshold_is_not_half_when_empty_truth_is_ignored() -> None:
    size = 64
    truth_a = np.zeros((3, size, size), dtype=np.uint8)
    truth_a[:, 10:30, 10:30] = 1
    probs_a = np.full((3, size, size), 0.1, dtype=np.float32)
    probs_a[:, 10:30, 10:30] = 0.4  # a confident-enough lesion below 0.5
    probs_a[1, 50:53, 50:53] = 0.9  # a 9-pixel false positive in NPA only
    # case B: no lesion of any class; its false positives cost nothing under the DRAC22 metric
    truth_b = np.zeros_like(truth_a)
    probs_b = np.full((3, size, size), 0.38, dtype=np.float32)

    result = tune_postprocessing(PLUGIN, [probs_a, probs_b], [truth_a, truth_b])
    # every threshold in (0.1, 0.4] gives Dice 1 on case A; ties go to the one nearest 0.5
    assert result["thresholds"] == {"irma": 0.4, "npa": 0.4, "nv": 0.4}
    # only NPA needs the size filter, and the smallest size that removes 9 px is 16
    assert result["min_component_size"] == {"irma": 0, "npa": 16, "nv": 0}
    assert result["class_scores"] == {"irma": pytest.approx(1.0), "npa": pytest.approx(1.0), "nv": pytest.approx(1.0)}

    untuned = PLUGIN.metric(
        "t", [binarize(p, [0.5] * 3, [0] * 3) for p in (probs_a, probs_b)], [truth_a, truth_b], "ab"
    )
    assert untuned.leaderboard["mean_dsc"] == pytest.approx(0.0)


# -- tune refuses what would re-sign a wrong bundle ------------------------------------------------


def _copy_run(drac22_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(drac22_run, tmp_path / "run"))


def test_tune_refuses_a_run_missing_out_of_fold_cases(drac22_run: Path, drac22_data: Path, tmp_path: Path) -> None:
    run = _copy_run(drac22_run, tmp_path)
    missing = sorted((run / "oof").glob("*.npz"))[0]
    missing.unlink()
    before = (run / "bundle.json").read_bytes()
    with pytest.raises(EyegcError, match=rf"no out-of-fold predictions for 1 case\(s\) \({missing.stem}\)"):
        tune(PLUGIN, run, drac22_data)
    assert (run / "bundle.json").read_bytes() == before


def test_tune_names_a_damaged_out_of_fold_file(drac22_run: Path, drac22_data: Path, tmp_path: Path) -> None:
    run = _copy_run(drac22_run, tmp_path)
    damaged = sorted((run / "oof").glob("*.npz"))[-1]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(BundleError, match=rf"{damaged} is damaged \(BadZipFile\); retrain its fold"):
        tune(PLUGIN, run, drac22_data)


def test_tune_refuses_other_ground_truth(drac22_run: Path, drac22_data: Path, tmp_path: Path) -> None:
    run = _copy_run(drac22_run, tmp_path)
    data = Path(shutil.copytree(drac22_data, tmp_path / "data"))
    case = PLUGIN.list_cases(data, "train")[0]
    mask = next(p for p in (case.labels or {}).values() if isinstance(p, Path))
    write_png(mask, np.full((1024, 1024), 255, dtype=np.uint8))  # valid values, other truth
    with pytest.raises(EyegcError, match="differs from the data this run was trained on"):
        tune(PLUGIN, run, data)


def test_a_resumed_run_stays_signed(drac22_run: Path, tmp_path: Path) -> None:
    run = _copy_run(drac22_run, tmp_path)
    config = read_config(run)
    config.training.data_root = "/elsewhere"
    save_config_keeping_signature(run, config)
    verify_checksums(run)  # a resume that then fails leaves a loadable bundle
    assert read_config(run).training.data_root == "/elsewhere"


def test_tune_refuses_a_bundle_of_another_task(drac22_run: Path, drac22_data: Path) -> None:
    with pytest.raises(BundleError, match=rf"{drac22_run} was trained for 'drac22-task1', not 'goals-layers'"):
        tune(get_task("goals-layers"), drac22_run, drac22_data)
