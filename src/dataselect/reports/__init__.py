"""Seeing a selection: an HTML report with figures, comparisons of two selections, and explanations."""

from dataselect.reports.build import build_report
from dataselect.reports.compare import compare_selections
from dataselect.reports.explain import explain_row

__all__ = ["build_report", "compare_selections", "explain_row"]
