"""What a report shows of a model bundle: its training curves, its tuning and its settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import read_config
from eyegc.common.bundle_config import HISTORY_NAME, BundleConfig
from eyegc.common.errors import BundleError
from eyegc.common.report.overlays import class_colour
from matplotlib.figure import Figure

__all__ = ["RunSummary", "read_run", "settings_rows", "training_figure", "tuning_rows"]


@dataclass(frozen=True)
class RunSummary:
    """A bundle's settings and, per fold, its training loss and validation metric per epoch."""

    path: Path
    config: BundleConfig
    histories: dict[int, dict[str, list[float]]]


def _history(path: Path) -> dict[str, list[float]] | None:
    """A fold's loss and metric per epoch, or None when the file is missing or does not hold two equal-length
    lists of numbers (the curves are a view: the bundle's weights and checksums are what count)."""
    try:
        history = json.loads(path.read_text())
        loss = np.asarray(history["loss"], dtype=np.float64)
        metric = np.asarray(history["metric"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if loss.ndim != 1 or loss.shape != metric.shape:
        return None
    return {"loss": loss.tolist(), "metric": metric.tolist()}


def read_run(path: Path, task: str | None = None) -> RunSummary:
    """A bundle's summary; a fold whose history is missing or unreadable is left out of the curves.

    Raises:
        BundleError: ``path`` is no model bundle, or (with ``task``) one trained for another task.
    """
    config = read_config(path)
    if task is not None and config.task != task:
        raise BundleError(f"{path} was trained for {config.task!r}, not {task!r}")
    histories = {}
    for fold, record in sorted(config.folds.items()):
        history = _history(path / Path(record.weights).parent / HISTORY_NAME)
        if history is not None:
            histories[fold] = history
    return RunSummary(Path(path), config, histories)


def training_figure(run: RunSummary) -> Figure:
    """Training loss and validation metric per epoch, one line per fold, the best epoch marked."""
    fig = Figure(figsize=(10, 3.8), dpi=100, layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    metric = run.config.training.metric
    for fold, history in run.histories.items():
        colour = class_colour(fold)
        epochs = np.arange(1, len(history["loss"]) + 1)
        loss_ax.plot(epochs, history["loss"], color=colour, label=f"fold {fold}")
        values = np.asarray(history["metric"], dtype=float)
        shown = np.isfinite(values)  # epochs without validation are NaN
        metric_ax.plot(epochs[shown], values[shown], ".-", color=colour, label=f"fold {fold}")
        record = run.config.folds.get(fold)
        if record is not None and np.isfinite(record.best_score):
            metric_ax.plot([record.best_epoch], [record.best_score], "*", color=colour, markersize=12)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    metric_ax.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric} (★ best epoch, kept)")
    for ax in (loss_ax, metric_ax):
        ax.title.set_fontsize(10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{run.path}", fontsize=9)
    return fig


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def tuning_rows(run: RunSummary) -> list[tuple[str, str]]:
    """The postprocessing the bundle applies and what tuning measured on out-of-fold predictions."""
    post = run.config.postprocessing
    rows = [("tuned", "yes" if post.tuned else "no (defaults)")]
    rows += [(f"threshold {key}", f"{value:g}") for key, value in post.thresholds.items()]
    rows += [(f"min component size {key}", str(value)) for key, value in post.min_component_size.items()]
    rows += [(f"tuned score {key}", f"{value:.4f}") for key, value in (post.class_scores or {}).items()]
    rows += [(f"task option {key}", _text(value)) for key, value in post.task_options.items()]
    cv = run.config.cross_validation
    if cv is not None:
        rows.append(("out-of-fold cases", str(cv.cases)))
        rows.append(("out-of-fold, default postprocessing", _text(cv.default_postprocessing.get("leaderboard"))))
        rows.append(("out-of-fold, tuned postprocessing", _text(cv.tuned_postprocessing.get("leaderboard"))))
    return rows


def settings_rows(run: RunSummary) -> list[tuple[str, str]]:
    """Every setting the bundle was trained with, one ``section.key`` per row."""
    config = run.config.model_dump(mode="json")
    rows = [(key, _text(config[key])) for key in ("task", "backend", "eyegc_version", "created", "patch_size")]
    for section in ("network", "preprocessing", "training"):
        rows += [(f"{section}.{key}", _text(value)) for key, value in config[section].items()]
    for fold, record in sorted(run.config.folds.items()):
        rows.append(
            (f"fold {fold}", f"best epoch {record.best_epoch} of {record.epochs_done}, {record.best_score:.4f}")
        )
    return rows
