"""The one-page PDF report of one upload: the image, the prediction over it, and the figures."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from eyegc.common.plugin import TaskKind, TaskPlugin
from eyegc.common.report.overlays import class_masks, contour_overlay, plain_text, reduce_masks, shown_classes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["one_page_pdf", "summary_lines"]

#: A4 portrait, in inches.
PAGE = (8.27, 11.69)


def summary_lines(plugin: TaskPlugin, summary: dict[str, Any]) -> list[str]:
    """The page's text: what was predicted with what, how long it took, and the result."""
    model = summary["model"]
    lines = [
        f"image: {summary['filename']} ({summary['size'][1]} x {summary['size'][0]} pixels)",
        f"task: {plugin.name} — {plugin.title}",
        f"model: {model['label']} ({model['members']} network(s)), TTA {summary['tta']}",
        f"time: {summary['seconds']:.2f} s",
    ]
    names = {c.key: c.name for c in plugin.classes}
    for area in summary.get("areas", []):
        lines.append(f"{names[area['key']]}: {area['pixels']:,} pixels ({100 * area['fraction']:.2f} % of the image)")
    for grade in summary.get("grades", []):
        probabilities = ", ".join(f"{p:.3f}" for p in grade["probabilities"])
        lines.append(f"{grade['name']}: grade {grade['grade']} (probabilities {probabilities})")
    return lines


def one_page_pdf(plugin: TaskPlugin, summary: dict[str, Any], rgb: np.ndarray, masks: np.ndarray, factor: int) -> bytes:
    """The PDF's bytes: the image as given (top), with the predicted classes outlined (below), then the text."""
    with plain_text():
        return _draw_page(plugin, summary, rgb, masks, factor)


def _draw_page(plugin: TaskPlugin, summary: dict[str, Any], rgb: np.ndarray, masks: np.ndarray, factor: int) -> bytes:
    page = Figure(figsize=PAGE)
    page.text(0.06, 0.97, "eyegc — prediction report", fontsize=14, weight="bold", va="top")
    segmentation = plugin.kind != TaskKind.CLASSIFICATION
    panels = [("image", rgb)]
    if segmentation:
        shown = shown_classes(plugin)
        outlined = contour_overlay(rgb, reduce_masks(class_masks(plugin, masks), factor), [c.colour for c in shown])
        panels.append(("prediction", outlined))
    height = 0.36 if segmentation else 0.6
    for position, (title, picture) in enumerate(panels):
        ax = page.add_axes((0.06, 0.56 - position * 0.4 if segmentation else 0.3, 0.88, height))
        ax.imshow(picture, interpolation="none")  # embedded pixel for pixel (no resampling in a PDF)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    if segmentation:
        handles = [Line2D([], [], color=c.colour, linewidth=3, label=c.spec.name) for c in shown]
        page.legend(
            handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.115), ncols=2, fontsize=8, frameon=False
        )
    page.text(0.06, 0.1, "\n".join(summary_lines(plugin, summary)), fontsize=8, va="top", family="monospace")
    buffer = io.BytesIO()
    page.savefig(buffer, format="pdf")
    page.clear()
    return buffer.getvalue()
