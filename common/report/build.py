"""``eyegc report``: a prediction's error analysis as one offline HTML page (and a PDF of the same)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from eyegc.common.bundle import eyegc_version
from eyegc.common.evaluation import (
    ScoredSet,
    read_scored_set,
    score,
    write_per_case_csv,
    write_result_json,
)
from eyegc.common.imageio import atomic_output_dir, check_output_free
from eyegc.common.outputs import OutputKind, check_output_path
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.report.content import CaseFigure, Report, worst_first
from eyegc.common.report.html import render_html
from eyegc.common.report.overlays import (
    class_masks,
    contour_overlay,
    display_factor,
    display_image,
    plain_text,
    reduce_masks,
    shown_classes,
)
from eyegc.common.report.pdf import write_pdf
from eyegc.common.report.plots import draw_plots
from eyegc.common.report.runs import read_run, training_figure
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm import tqdm

__all__ = ["REPORT_FILES", "build_report", "case_figure", "write_report"]

#: What ``eyegc report`` writes into its folder (the PDF only with ``--pdf``).
REPORT_FILES = {"html": "report.html", "pdf": "report.pdf", "csv": "per_case.csv", "json": "leaderboard.json"}


def _legend(fig: Figure, plugin: TaskPlugin) -> None:
    handles = [Line2D([], [], color=c.colour, linewidth=3, label=c.spec.name) for c in shown_classes(plugin)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=9, frameon=False)


def _grade_text(plugin: TaskPlugin, target: np.ndarray, prediction: np.ndarray, probs: np.ndarray | None) -> str:
    lines = []
    for h, spec in enumerate(plugin.classes):
        line = f"{spec.name}: true {int(np.ravel(target)[h])}, predicted {int(np.ravel(prediction)[h])}"
        if probs is not None:
            line += " (p = " + ", ".join(f"{p:.2f}" for p in np.asarray(probs)[h][: spec.num_classes]) + ")"
        lines.append(line)
    return "\n".join(lines)


def case_figure(scored: ScoredSet, index: int, title: str) -> Figure:
    """A case's image with the ground truth and the prediction outlined per class (classification: the grades)."""
    plugin = scored.plugin
    case = scored.cases[index]
    image = plugin.read_image(case.image)
    factor = display_factor(image.shape)
    rgb = display_image(image, factor)
    target, prediction = scored.targets[index], scored.predictions[index]
    if plugin.kind == TaskKind.CLASSIFICATION:
        fig = Figure(figsize=(7, 6.2), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        ax.imshow(rgb, interpolation="none")
        ax.set_axis_off()
        probs = None if scored.probabilities is None else scored.probabilities[index]
        ax.set_title(_grade_text(plugin, target, prediction, probs), fontsize=9)
        fig.suptitle(title, fontsize=10)
        return fig
    colours = [c.colour for c in shown_classes(plugin)]
    # Two panels side by side at the image's aspect, plus room for the titles and the legend.
    fig = Figure(figsize=(12, 6 * rgb.shape[0] / rgb.shape[1] + 1.1), dpi=100, layout="constrained")
    for position, (name, array) in enumerate((("ground truth", target), ("prediction", prediction))):
        ax = fig.add_subplot(1, 2, position + 1)
        masks = reduce_masks(class_masks(plugin, array), factor)
        ax.imshow(contour_overlay(rgb, masks, colours), interpolation="none")
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    _legend(fig, plugin)
    fig.suptitle(title, fontsize=10)
    return fig


def _case_figures(scored: ScoredSet, rows: list[dict[str, Any]], key: str, shown: int) -> list[CaseFigure]:
    """The ``shown`` worst and ``shown`` best scored cases; a small set is split in halves (the lower half
    worst), so no case is shown twice and no good case is called one of the worst."""
    scored_rows = [r for r in rows if not math.isnan(float(r.get(key, math.nan)))]
    half = math.ceil(len(scored_rows) / 2)
    worst = scored_rows[: min(shown, half)]
    best = list(reversed(scored_rows[half:]))[:shown]
    picked = [("worst", r) for r in worst] + [("best", r) for r in best]
    figures = []
    for group, row in tqdm(picked, desc="draw cases", unit="case", leave=False):
        rank = 1 + sum(1 for f in figures if f.group == group)
        title = f"{group} {rank}: case {row['case']}, {key} {float(row[key]):.4f}"
        figure = case_figure(scored, scored.case_ids.index(row["case"]), title)
        figures.append(CaseFigure(row["case"], group, title, figure))
    return figures


def build_report(
    plugin: TaskPlugin,
    pred: Path,
    gt_root: Path,
    models: Sequence[Path] = (),
    split: str = "test",
    shown: int = 4,
    allow_missing_class: bool = False,
) -> Report:
    """Score ``pred`` against ``gt_root`` and draw everything the report shows.

    Raises:
        EyegcError: bad or missing files, a model that is no bundle (each message names the file).
    """
    runs = [read_run(Path(m), plugin.name) for m in models]  # a bad bundle fails before the long work
    scored = read_scored_set(plugin, pred, gt_root, split, allow_missing_class)
    result = score(scored)
    rows = worst_first(result.per_case, plugin.metric.case_primary)
    report = Report(plugin, result, rows, draw_plots(scored), [], [(run, training_figure(run)) for run in runs])
    report.cases = _case_figures(scored, rows, plugin.metric.case_primary, shown)
    report.about = [
        ("task", f"{plugin.name} — {plugin.title}"),
        ("prediction", str(pred)),
        ("ground truth", f"{gt_root} ({split} split, {result.cases} cases)"),
        *((f"model {i + 1}", str(m)) for i, m in enumerate(models)),
        ("written", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("eyegc", eyegc_version()),
    ]
    return report


def write_report(
    plugin: TaskPlugin,
    pred: Path,
    gt_root: Path,
    out: Path,
    models: Sequence[Path] = (),
    split: str = "test",
    shown: int = 4,
    pdf: bool = False,
    allow_missing_class: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``report.html`` (self-contained, opens offline), ``per_case.csv``, ``leaderboard.json`` and,
    with ``pdf``, ``report.pdf`` into the new folder ``out``, which appears only when complete (and
    replaces an existing one only with ``overwrite``)."""
    inputs = [("--pred", Path(pred)), ("--gt", Path(gt_root)), *(("--model", Path(m)) for m in models)]
    check_output_path(out, "--out", OutputKind.FOLDER, inputs)
    check_output_free(Path(out), overwrite)  # before the scoring and drawing, not after
    with plain_text():
        report = build_report(plugin, pred, gt_root, models, split, shown, allow_missing_class)
    try:
        with plain_text(), atomic_output_dir(out, overwrite) as tmp:
            (tmp / REPORT_FILES["html"]).write_text(render_html(report), encoding="utf-8")
            write_per_case_csv(report.rows, tmp / REPORT_FILES["csv"])
            write_result_json(report.result, tmp / REPORT_FILES["json"])
            if pdf:
                write_pdf(report, tmp / REPORT_FILES["pdf"])
    finally:
        report.close()
    return Path(out)
