"""Job reports: the report directory with ``report.json``, and :class:`ReportResult`."""

from __future__ import annotations

from jobtrace.report.result import ReportResult

__all__ = ["ReportResult"]
