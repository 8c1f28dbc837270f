"""`escbridge report`: what the escalation history says about a period, against the one before.

Layers, so the arithmetic can be tested without a database or a plotting library:

- the store reads the escalation rows (:func:`escbridge.store.reports.load_history`);
- :mod:`~escbridge.reports.figures` turns rows into figures: pure, time is passed in;
- :mod:`~escbridge.reports.text`, :mod:`~escbridge.reports.data` (JSON, CSV) and
  :mod:`~escbridge.reports.html` print them. Only the HTML form imports matplotlib (the
  ``[charts]`` extra), and only when it is called;
- the command's arguments live in :mod:`escbridge.cli.report`.
"""

from __future__ import annotations

from collections.abc import Callable

from escbridge.reports.data import CSV_HEADER, render_csv, render_json, report_data
from escbridge.reports.figures import (
    BACKGROUND_SHARE,
    FACTS,
    UNKNOWN,
    WITHIN_TARGET_MIN_RESOLVED,
    Applied,
    Breakdown,
    Change,
    Durations,
    EscalationRow,
    Reason,
    Repeats,
    RepeatTicket,
    Report,
    RuleScope,
    RungTiming,
    Share,
    TicketUrl,
    Trend,
    TrendPoint,
    Unit,
    Window,
    build_report,
    choose_unit,
    reason_key,
)
from escbridge.reports.html import CHARTS_NEED_MATPLOTLIB, render_html
from escbridge.reports.text import change_text, human, length_text, pct, period_text, render_text

#: The forms of the report, by the name ``--format`` takes.
RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
}

__all__ = [
    "BACKGROUND_SHARE",
    "CHARTS_NEED_MATPLOTLIB",
    "CSV_HEADER",
    "FACTS",
    "RENDERERS",
    "UNKNOWN",
    "WITHIN_TARGET_MIN_RESOLVED",
    "Applied",
    "Breakdown",
    "Change",
    "Durations",
    "EscalationRow",
    "Reason",
    "RepeatTicket",
    "Repeats",
    "Report",
    "RuleScope",
    "RungTiming",
    "Share",
    "TicketUrl",
    "Trend",
    "TrendPoint",
    "Unit",
    "Window",
    "build_report",
    "change_text",
    "choose_unit",
    "human",
    "length_text",
    "pct",
    "period_text",
    "reason_key",
    "render_csv",
    "render_html",
    "render_json",
    "render_text",
    "report_data",
]
