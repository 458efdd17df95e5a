"""A report's content, drawn once and written twice (HTML page, PDF)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eyegc.common.evaluation import format_leaderboard
from eyegc.common.plugin import EvaluationResult, TaskPlugin
from eyegc.common.report.runs import RunSummary
from matplotlib.figure import Figure

__all__ = ["CaseFigure", "Report", "worst_first"]


@dataclass
class CaseFigure:
    """One case drawn for people: which case, why it is shown (``group``: worst or best; ``title``), the figure."""

    case_id: str
    group: str
    title: str
    figure: Figure


@dataclass
class Report:
    """Everything a report shows, drawn once for the HTML page and the PDF."""

    plugin: TaskPlugin
    result: EvaluationResult
    #: per-case rows, worst first by the metric's ``case_primary``; unscored cases (NaN) last.
    rows: list[dict[str, Any]]
    plots: list[Figure]
    cases: list[CaseFigure]
    runs: list[tuple[RunSummary, Figure]]
    #: what was compared, when, by which eyegc.
    about: list[tuple[str, str]] = field(default_factory=list)

    @property
    def case_primary(self) -> str:
        """The per-case column the cases are ordered by."""
        return self.plugin.metric.case_primary

    @property
    def leaderboard_text(self) -> str:
        """The leaderboard as ``eyegc evaluate`` prints it."""
        return format_leaderboard(self.result)

    def close(self) -> None:
        """Free every figure (matplotlib keeps their buffers until then)."""
        for figure in [*self.plots, *(c.figure for c in self.cases), *(f for _, f in self.runs)]:
            figure.clear()


def worst_first(rows: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Rows from the lowest ``key`` to the highest, rows without a score (NaN) last, ties by case id."""

    def order(row: dict[str, Any]) -> tuple[bool, float, str]:
        value = float(row.get(key, math.nan))
        return (math.isnan(value), 0.0 if math.isnan(value) else value, str(row["case"]))

    return sorted(rows, key=order)
