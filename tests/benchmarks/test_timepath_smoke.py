"""benchmarks/timepath.py runs end to end on a tiny account and prints both designs' rows.

Only what cannot depend on timing or load is asserted: the table's rows for both designs, and
the 30-day idle ticket escalated by the new design's reconciliation (which completes before the
window opens) and never by the 14-day sweep. Lateness and "missed" (both measured on an
accelerated clock, so a loaded machine moves them) are the benchmark's business, not a test's.
"""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from bench_loader import benchmark

pytestmark = pytest.mark.slow


def timepath() -> ModuleType:
    return benchmark("timepath")


def table(text: str) -> dict[str, list[str]]:
    """The printed table: row label -> the two designs' cells."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c for c in re.split(r"\s{2,}", line.strip()) if c]
        if len(cells) == 3:
            rows[cells[0]] = cells[1:]
    return rows


def test_both_designs_on_a_small_account(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--tickets", "200", "--minutes", "1", "--warmup", "5", "--speed", "20"]
    assert timepath().main([*args, "--grace", "30"]) == 0
    out = capsys.readouterr().out
    assert "new (due-queue)" in out and "today (sweep 60s)" in out
    rows = table(out)
    for label in (
        "time-based escalations due",
        "lateness p50 / p99 / max (s)",
        "missed (not escalated by the end)",
        "API calls/hour: export",
        "API calls/hour: update",
        "reads/hour (all GETs)",
    ):
        assert label in rows, label
    new, sweep = rows["ticket idle-30d"]
    assert new.startswith("escalated to l2 at -"), new  # by the reconciliation, before the window
    assert sweep.endswith("not escalated by the end"), sweep  # outside the sweep's 14 days
    assert "reconciliation before the window" in out
