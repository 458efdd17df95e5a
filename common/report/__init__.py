"""Error analysis people can look at: ``eyegc report`` (HTML and PDF) and the figures it is made of."""

from eyegc.common.report.build import REPORT_FILES, build_report, case_figure, write_report

__all__ = ["REPORT_FILES", "build_report", "case_figure", "write_report"]
