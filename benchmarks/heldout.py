"""Shared by the benchmarks that compare training recipes: each fold's held-out images scored pooled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eyegc.common.bundle import load_bundle, read_config
from eyegc.common.inference import Predictor
from eyegc.common.plugin import TaskPlugin
from tqdm import tqdm

__all__ = ["format_leaderboard", "held_out_scores"]


def held_out_scores(plugin: TaskPlugin, run: Path, data: Path, tta: str = "flip") -> tuple[dict[str, Any], float]:
    """The leaderboard of every held-out image, each predicted by its own fold (the run's
    post-processing, CRF included); seconds per image."""
    cases = {c.case_id: c for c in plugin.list_cases(data, "train")}
    ids, predictions, probabilities, targets, rois = [], [], [], [], []
    elapsed = 0.0
    for fold, record in read_config(run).folds.items():
        predictor = Predictor(plugin, [load_bundle(run, folds=[fold])], tta=tta, device="cpu")
        for case_id in tqdm(record.validation_cases, desc=f"{run.name} fold {fold}", unit="image"):
            image = plugin.read_image(cases[case_id].image)
            started = time.perf_counter()
            masks, probs = predictor.predict(image)
            elapsed += time.perf_counter() - started
            ids.append(case_id)
            predictions.append(masks)
            probabilities.append(probs)
            targets.append(plugin.read_target(cases[case_id]))
            rois.append(plugin.read_roi(cases[case_id]))
    result = plugin.metric(plugin.name, predictions, targets, ids, probabilities=probabilities, rois=rois)
    return result.to_json_dict()["leaderboard"], elapsed / len(ids)


def format_leaderboard(leaderboard: dict[str, Any]) -> str:
    """A leaderboard's figures on one line: ``f1 0.7644  auc 0.9567``."""
    return "  ".join(f"{k} {v:.4f}" for k, v in leaderboard.items() if isinstance(v, float))
