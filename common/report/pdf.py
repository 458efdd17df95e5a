"""A report as a PDF (matplotlib's PDF backend): the HTML page's content, a page or more per part."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eyegc.common.report.content import Report
from eyegc.common.report.runs import settings_rows, tuning_rows
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

__all__ = ["text_pages", "write_pdf"]

#: A4 landscape, in inches.
PAGE = (11.69, 8.27)
_LINES_PER_PAGE = 52


def text_pages(title: str, lines: Sequence[str]) -> list[Figure]:
    """Monospaced text on as many A4 landscape pages as it needs, the title on each."""
    pages = []
    chunks = [lines[i : i + _LINES_PER_PAGE] for i in range(0, max(len(lines), 1), _LINES_PER_PAGE)]
    for number, chunk in enumerate(chunks, start=1):
        page = Figure(figsize=PAGE)
        heading = title if len(chunks) == 1 else f"{title} ({number}/{len(chunks)})"
        page.text(0.04, 0.96, heading, fontsize=13, weight="bold", va="top")
        page.text(0.04, 0.91, "\n".join(chunk), fontsize=7.5, family="monospace", va="top")
        pages.append(page)
    return pages


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(no cases)"]
    columns = list(rows[0])
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(columns, widths, strict=True)))
    body = [
        "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    return [line, "-" * len(line), *body]


def _pairs(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{k.ljust(width)}  {v}" for k, v in rows]


def write_pdf(report: Report, path: Path) -> None:
    """Write the report's PDF to ``path``: summary, curves, cases worst first, drawn cases, models."""
    own: list[Figure] = []  # text pages made here, freed at the end
    with PdfPages(path, metadata={"Title": f"eyegc report — {report.plugin.name}", "Creator": "eyegc"}) as pdf:

        def add(figures: Sequence[Figure], mine: bool = False) -> None:
            for figure in figures:
                pdf.savefig(figure)
                if mine:
                    own.append(figure)

        summary = [*_pairs(report.about), "", *report.leaderboard_text.splitlines()]
        add(text_pages(f"eyegc report — {report.plugin.name}", summary), mine=True)
        add(report.plots)
        add(text_pages(f"Cases, worst first by {report.case_primary}", _table_lines(report.rows)), mine=True)
        add([c.figure for c in report.cases])
        for run, figure in report.runs:
            add([figure])
            lines = ["Tuning", *_pairs(tuning_rows(run)), "", "Settings", *_pairs(settings_rows(run))]
            add(text_pages(f"Model {run.path}", lines), mine=True)
    for figure in own:
        figure.clear()
