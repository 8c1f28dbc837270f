"""benchmarks/engine.py runs end to end on a few tickets: escbridge and the hand-written rules
agree on every ticket (the script refuses to time them otherwise), every path has its row, and
the 1%-changed scan passes over exactly the unchanged tickets. Speeds and ratios are the
benchmark's business, not a test's: a loaded machine moves them."""

from __future__ import annotations

import re

import pytest
from bench_loader import benchmark

pytestmark = pytest.mark.slow


def test_the_engine_benchmark_agrees_with_its_baseline_and_prints_every_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--tickets", "2000", "--runs", "1", "--rule-engine-tickets", "200"]
    assert benchmark("engine").main([*args, "--scan-tickets", "500", "--changed", "0.02"]) == 0
    out, err = capsys.readouterr()
    assert "DISAGREEMENT" not in err
    for path in ("conditions only", "rule-engine"):
        assert re.search(rf"^{path}.*\d", out, re.MULTILINE), out
    scan = re.search(r"scan of ([\d,]+) tickets, 2% changed: .*\(([\d,]+) passed over", out)
    assert scan is not None, out
    scanned, passed = (int(x.replace(",", "")) for x in scan.groups())
    assert (scanned, passed) == (500, 490)
