"""The plots a report draws beside the leaderboard, found by name (a task lists its own in
``TaskPlugin.report_plots``): ``pr``, ``roc``, ``confusion`` and ``thickness``.

Each reads the scored set once, one case at a time, and returns a matplotlib figure that is not
attached to pyplot (so a server can draw in several threads).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from eyegc.common.curves import BinnedCurve
from eyegc.common.evaluation import ScoredSet, layer_thickness
from eyegc.common.plugin import TaskKind
from eyegc.common.registry import look_up_option
from eyegc.common.report.overlays import class_colour, shown_classes
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve
from tqdm import tqdm

__all__ = ["PLOTS", "draw_plots"]


def _pixel_curves(scored: ScoredSet, what: str) -> list[BinnedCurve]:
    """One pooled curve per shown class over every pixel (inside the field of view, where there is one)."""
    if scored.probabilities is None:
        return []
    shown = shown_classes(scored.plugin)
    curves = [BinnedCurve() for _ in shown]
    cases = zip(scored.probabilities, scored.targets, scored.rois, strict=True)
    for probs, target, roi in tqdm(cases, total=len(scored.cases), desc=what, unit="case", leave=False):
        for curve, cls in zip(curves, shown, strict=True):
            curve.update(np.asarray(probs[cls.channel]), target[cls.channel], roi)  # 8-bit maps count as bins
    return curves


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def pr_plot(scored: ScoredSet) -> Figure:
    """Precision against recall per class, pooled over every pixel, with each class's AUPR."""
    fig = _figure()
    ax = fig.add_subplot()
    for position, (cls, curve) in enumerate(
        zip(shown_classes(scored.plugin), _pixel_curves(scored, "PR"), strict=True)
    ):
        recall, precision = curve.precision_recall()
        if recall.size:
            ax.step(
                recall,
                precision,
                where="post",
                color=class_colour(position),
                label=f"{cls.spec.name} (AUPR {curve.average_precision():.3f})",
            )
    _finish(ax, "recall", "precision", "Precision–recall, every pixel of every case")
    return fig


def roc_plot(scored: ScoredSet) -> Figure:
    """ROC per class (pixels) or per binary head (cases), with its area."""
    fig = _figure()
    ax = fig.add_subplot()
    if scored.plugin.kind == TaskKind.CLASSIFICATION:
        _case_roc(ax, scored)
        title = "ROC over cases"
    else:
        shown = shown_classes(scored.plugin)
        for position, (cls, curve) in enumerate(zip(shown, _pixel_curves(scored, "ROC"), strict=True)):
            fpr, tpr = curve.roc()
            if fpr.size:
                ax.plot(fpr, tpr, color=class_colour(position), label=f"{cls.spec.name} (AUC {curve.roc_auc():.4f})")
        title = "ROC, every pixel" + (" inside the field of view" if scored.rois[0] is not None else "")
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    _finish(ax, "false positive rate", "true positive rate", title)
    return fig


def _case_roc(ax: Axes, scored: ScoredSet) -> None:
    if scored.probabilities is None:
        return
    truth = np.stack([np.asarray(t).reshape(-1) for t in scored.targets])
    scores = np.stack([np.asarray(p) for p in scored.probabilities])  # (cases, heads, K)
    for h, spec in enumerate(scored.plugin.classes):
        if spec.num_classes != 2 or len(np.unique(truth[:, h])) < 2:
            continue  # a ROC needs a binary head and both classes among the cases
        fpr, tpr, _ = roc_curve(truth[:, h], scores[:, h, 1])
        auc = roc_auc_score(truth[:, h], scores[:, h, 1])
        ax.plot(fpr, tpr, color=class_colour(h), label=f"{spec.name} (AUC {auc:.4f})")


def _finish(ax: Axes, x: str, y: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def confusion_plot(scored: ScoredSet) -> Figure:
    """Per head, cases counted by true grade (rows) and predicted grade (columns)."""
    heads = scored.plugin.classes
    fig = _figure(4.2 * len(heads), 4.2)
    truth = np.stack([np.asarray(t).reshape(-1) for t in scored.targets])
    predicted = np.stack([np.asarray(p).reshape(-1) for p in scored.predictions])
    for h, spec in enumerate(heads):
        grades = list(range(int(spec.num_classes or 2)))
        counts = confusion_matrix(truth[:, h], predicted[:, h], labels=grades)
        ax = fig.add_subplot(1, len(heads), h + 1)
        ax.imshow(counts, cmap="Blues", vmin=0)
        for (row, column), count in np.ndenumerate(counts):
            dark = count > counts.max() / 2
            ax.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(grades)
        ax.set_yticks(grades)
        ax.set_xlabel("predicted grade")
        ax.set_ylabel("true grade")
        ax.set_title(f"{spec.name}: {int(np.trace(counts))} of {int(counts.sum())} right", fontsize=10)
    return fig


def thickness_plot(scored: ScoredSet) -> Figure:
    """Per layer, the absolute thickness error in pixels along the scan's width, averaged over cases."""
    shown = shown_classes(scored.plugin)
    sums: list[np.ndarray] = [np.zeros(0) for _ in shown]
    counts = np.zeros(0)
    pairs = zip(scored.predictions, scored.targets, strict=True)
    for pred, true in tqdm(pairs, total=len(scored.cases), desc="thickness", unit="case", leave=False):
        width = np.asarray(true).shape[-1]
        if width > counts.size:  # cases of different widths: each column averages the cases that have it
            counts = np.pad(counts, (0, width - counts.size))
            sums = [np.pad(s, (0, width - s.size)) for s in sums]
        counts[:width] += 1
        for k, cls in enumerate(shown):
            sums[k][:width] += np.abs(layer_thickness(pred, cls.channel) - layer_thickness(true, cls.channel))
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    for position, (cls, total) in enumerate(zip(shown, sums, strict=True)):
        error = total / np.maximum(counts, 1)
        ax.plot(error, color=class_colour(position), label=f"{cls.spec.name} (MAE {error.mean():.2f} px)")
    ax.set_xlabel("column (pixels)")
    ax.set_ylabel("|predicted − true thickness| (pixels)")
    ax.set_title("Thickness error per layer along the B-scan, mean over cases", fontsize=10)
    ax.legend(fontsize=8)
    return fig


#: Plot name -> the function that draws it from a scored set.
PLOTS: dict[str, Callable[[ScoredSet], Figure]] = {
    "pr": pr_plot,
    "roc": roc_plot,
    "confusion": confusion_plot,
    "thickness": thickness_plot,
}


def draw_plots(scored: ScoredSet) -> list[Figure]:
    """The task's plots (``report_plots``), in the order it lists them."""
    return [look_up_option(name, PLOTS, what="report plot")(scored) for name in scored.plugin.report_plots]
