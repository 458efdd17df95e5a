"""The whole pipeline on generated data: sample data → train → predict → evaluate → submission."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import CONFIG_NAME, read_config
from eyegc.common.errors import EyegcError
from eyegc.common.evaluation import evaluate_predictions, format_leaderboard
from eyegc.common.inference import predict_folder
from eyegc.common.options import DEMO_OPTIONS, check_options
from eyegc.common.plugin import EvaluationResult, TaskKind, TaskPlugin
from eyegc.common.sample_data import write_sample_data
from eyegc.common.training import TrainConfig, train
from tqdm import tqdm

__all__ = [
    "DEMO_CLASSIFIER_TRAINING",
    "DEMO_INPUT_SHORT_SIDE",
    "DEMO_TRAINING",
    "DemoResult",
    "demo_input_size",
    "demo_training",
    "prepare_demo",
    "run_demo",
    "trivial_baselines",
]

#: A small model that learns the sample data in about 2.5 CPU minutes (2 folds at half resolution).
DEMO_TRAINING: dict[str, Any] = {
    "network_kwargs": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
    "folds": 2,
    "epochs": 20,
    "batch_size": 8,
    "patch_size": 128,
    "working_scale": 0.5,
    "patches_per_image": 8,
}
#: The classification tasks' demo: a narrow ResNet-10 on images 128 pixels on their short side (the input
#: size follows the task's aspect: :func:`demo_training`). 40 epochs of batches of 4: with 8 training images
#: per fold, 15 epochs of 8 (15 steps) left DRAC22's three grades unlearnt (test kappa 0.00, measured on the
#: demo data); 80 steps reached 0.50 (cross-validation 0.73), in about two CPU minutes.
DEMO_CLASSIFIER_TRAINING: dict[str, Any] = {
    "network_kwargs": {"depth": 10, "block_inplanes": [16, 32, 64, 128]},
    "folds": 2,
    "epochs": 40,
    "batch_size": 4,
    "patch_size": 0,
}
#: the short side of a classification demo's input, in pixels.
DEMO_INPUT_SHORT_SIDE = 128


def demo_input_size(task_size: tuple[int, int] | None) -> tuple[int, int]:
    """The demo's input size at the task's aspect: the short side 128, the long side a multiple of 32
    (IDRiD's 512x768 gives 128x192, GOALS' 400x552 128x192, DRAC22's square 128x128)."""
    height, width = task_size or (1, 1)
    ratio = max(height, width) / min(height, width)
    long_side = 32 * max(1, round(DEMO_INPUT_SHORT_SIDE * ratio / 32))
    return (DEMO_INPUT_SHORT_SIDE, long_side) if height <= width else (long_side, DEMO_INPUT_SHORT_SIDE)


def demo_training(plugin: TaskPlugin) -> dict[str, Any]:
    """The demo's training settings for a task (segmentation or classification)."""
    if plugin.kind != TaskKind.CLASSIFICATION:
        return dict(DEMO_TRAINING)
    return {**DEMO_CLASSIFIER_TRAINING, "extra": {"input_size": demo_input_size(plugin.defaults.input_size)}}


@dataclass
class DemoResult:
    """What the demo made and how it scored."""

    data: Path
    run: Path
    predictions: Path
    submission: Path
    result: EvaluationResult
    baselines: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)


def trivial_baselines(plugin: TaskPlugin, data: Path, split: str = "test") -> dict[str, float]:
    """The leaderboard figure of an all-background and an all-foreground predictor."""
    cases = plugin.list_cases(data, split)
    targets = [plugin.read_target(c) for c in cases]
    ids = [c.case_id for c in cases]
    primary = plugin.metric.primary
    scores = {}
    rois = [plugin.read_roi(c) for c in cases]
    for name, fill in (("all_background", np.zeros_like), ("all_foreground", np.ones_like)):
        masks = [fill(t) for t in targets]
        if plugin.kind == TaskKind.CLASSIFICATION:  # every case grade 0, or grade 1
            width = max(int(c.num_classes or 2) for c in plugin.classes)
            probs = [np.eye(width, dtype=np.float32)[m] for m in masks]
        else:
            probs = [m.astype(np.float32) for m in masks]
        result = plugin.metric(plugin.name, masks, targets, ids, probabilities=probs, rois=rois)
        scores[name] = result.leaderboard[primary]
    return scores


def prepare_demo(
    plugin: TaskPlugin,
    out: Path,
    cases: int = 16,
    test_cases: int = 6,
    training: dict[str, Any] | None = None,
    device: str = "auto",
    seed: int = 0,
    train_model: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[Path, Path | None]:
    """Sample data in ``out/data`` and a demo model in ``out/run``, reusing (or resuming) what exists.

    Returns:
        The data root and the run folder (``None`` when ``train_model`` is False).
    """
    epochs = (training or {}).get("epochs")
    check_options(DEMO_OPTIONS, {"cases": cases, "test_cases": test_cases, "epochs": epochs})
    out = Path(out)
    data, run = out / "data", out / "run"
    if not data.exists():
        write_sample_data(plugin, data, cases=cases, test_cases=test_cases, seed=seed)
    if on_stage:
        on_stage("sample_data")
    if not train_model:
        return data, None
    cfg = TrainConfig(**{**demo_training(plugin), **(training or {})}, device=device, seed=seed)
    if not (run / CONFIG_NAME).exists():
        train(plugin, data, run, cfg)
    elif not read_config(run).postprocessing.tuned:
        train(plugin, data, run, cfg, resume=True)  # an interrupted demo continues where it stopped
    if on_stage:
        on_stage("train")
    return data, run


def run_demo(
    plugin: TaskPlugin,
    out: Path,
    cases: int = 16,
    test_cases: int = 6,
    training: dict[str, Any] | None = None,
    tta: str = "flip",
    team: str = "eyegc_demo",
    device: str = "auto",
    seed: int = 0,
) -> DemoResult:
    """Run the pipeline in ``out`` (``data/``, ``run/``, ``predictions/``, ``submission.zip`` or ``.csv``).

    Steps already done (their output exists) are reused, so an interrupted demo continues.
    """
    out = Path(out)
    seconds: dict[str, float] = {}
    pred, submission = out / "predictions", out / f"submission{plugin.submission_suffix}"

    last = [time.perf_counter()]

    def stage(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - last[0], 1)
        last[0] = now

    data, run = prepare_demo(plugin, out, cases, test_cases, training, device, seed, on_stage=stage)
    assert run is not None
    images = plugin.list_cases(data, "test", require_labels=False)
    if not images:
        raise EyegcError(f"{data} has no testing images")
    predict_folder(plugin, [run], images[0].image.parent, pred, tta=tta, device=device, overwrite=True)
    stage("predict")
    result = evaluate_predictions(plugin, pred, data, "test")
    stage("evaluate")
    plugin.write_submission(pred, submission, team=team, overwrite=True)
    stage("submission")
    baselines = trivial_baselines(plugin, data)
    tqdm.write(format_leaderboard(result))
    return DemoResult(data, run, pred, submission, result, baselines, seconds)
