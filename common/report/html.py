"""A report as one HTML file that opens offline: figures inlined as PNG data, no script or style fetched."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from eyegc.common.report.content import Report
from eyegc.common.report.runs import settings_rows, tuning_rows
from matplotlib.figure import Figure

__all__ = ["figure_png", "render_html"]

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1280px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .2em .6em; border: 1px solid #ddd; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; } th.sorted-asc::after { content: " ▲"; }
th.sorted-desc::after { content: " ▼"; } th.key, td.key { background: #fff6dd; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; } .scroll { max-height: 32em; overflow-y: auto; }
"""

# Click a column heading to sort by it (again to reverse); numbers sort as numbers, blanks last.
_SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _img(figure: Figure, alt: str) -> str:
    data = base64.b64encode(figure_png(figure)).decode("ascii")
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _cell(value: Any) -> tuple[str, str]:
    """A value's sort key and its text: numbers to four places, NaN blank."""
    if isinstance(value, float):
        return ("", "n/a") if math.isnan(value) else (repr(value), f"{value:.4f}")
    return str(value), str(value)


def _key_value_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _per_case_table(rows: Sequence[dict[str, Any]], key: str) -> str:
    columns = list(rows[0]) if rows else ["case"]

    def heading(column: str) -> str:
        return f'<th class="key sorted-asc">{escape(column)}</th>' if column == key else f"<th>{escape(column)}</th>"

    def cell(column: str, value: Any) -> str:
        sort_key, text = _cell(value)
        classes = " ".join(
            c for c in ("num" if isinstance(value, (int, float)) else "", "key" if column == key else "") if c
        )
        return f'<td class="{classes}" data-value="{escape(sort_key)}">{escape(text)}</td>'

    head = "".join(heading(c) for c in columns)
    body = "".join("<tr>" + "".join(cell(c, row.get(c, "")) for c in columns) + "</tr>" for row in rows)
    table = f'<table class="sortable" id="per-case"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _leaderboard_tables(report: Report) -> str:
    result = report.result
    board = _key_value_table((k, _cell(v)[1]) for k, v in result.leaderboard.items())
    keys = sorted({k for values in result.per_class.values() for k in values})
    head = "<tr><th>class</th>" + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr>"
    body = "".join(
        f"<tr><th>{escape(name)}</th>"
        + "".join(f'<td class="num">{escape(_cell(values.get(k, math.nan))[1])}</td>' for k in keys)
        + "</tr>"
        for name, values in result.per_class.items()
    )
    return board + f'<table id="per-class">{head}{body}</table>'


def _runs_section(report: Report) -> str:
    parts = []
    for run, figure in report.runs:
        parts.append(f"<h3>{escape(str(run.path))}</h3>")
        parts.append(_img(figure, f"training curves of {run.path}"))
        parts.append("<h4>Tuning</h4>" + _key_value_table(tuning_rows(run)))
        parts.append("<h4>Settings</h4>" + _key_value_table(settings_rows(run)))
    return "".join(parts)


def render_html(report: Report) -> str:
    """The whole page as text."""
    plugin, key = report.plugin, report.case_primary
    sections = [
        f"<h1>eyegc report — {escape(plugin.name)}</h1>",
        _key_value_table(report.about),
        "<h2>Leaderboard</h2>",
        _leaderboard_tables(report),
    ]
    if report.plots:
        plots = zip(plugin.report_plots, report.plots, strict=True)
        sections.append("<h2>Curves</h2>" + "".join(_img(f, f"{name} plot") for name, f in plots))
    sections.append(
        f"<h2>Cases, worst first by {escape(key)}</h2><p>Click a heading to sort by it. "
        "Cases without a score (no ground truth of any class) are last.</p>"
    )
    sections.append(_per_case_table(report.rows, key))
    for group in ("worst", "best"):
        shown = [c for c in report.cases if c.group == group]
        if shown:
            sections.append(f"<h2>The {len(shown)} {group} cases</h2>")
            sections += [_img(c.figure, c.title) for c in shown]
    if report.runs:
        sections.append("<h2>Models: training curves, tuning, settings</h2>" + _runs_section(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>eyegc report — {escape(plugin.name)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(sections)}<script>{_SORT_SCRIPT}</script></body></html>\n"
    )
