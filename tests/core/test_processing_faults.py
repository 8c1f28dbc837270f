"""Fault tests with real worker processes: many workers, duplicates, SIGKILL, on both databases.

Each worker is a separate Python process (processing_harness.py run as a script) with an
in-process fake connector; the fake helpdesk lives in a shared SQLite file and logs every
write, so "escalated exactly once" is counted on the helpdesk's side.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from processing_harness import event

from escbridge.store import Store
from escbridge.testing import FakeHelpdesk

HARNESS = Path(__file__).with_name("processing_harness.py")
DEADLINE = 300.0  # seconds: a hang fails the test instead of blocking the suite


def start_worker(store_url: str, helpdesk: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HARNESS), "--store", store_url, "--helpdesk", str(helpdesk), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = worker.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        pytest.fail(f"worker still running after {DEADLINE}s\n{err[-3000:]}")
    return worker.returncode, out, err


def delivery_time() -> datetime:
    """The wall clock: the workers' own."""
    return datetime.now(UTC)


def summaries(workers: Sequence[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for worker in workers:
        code, out, err = finish(worker)
        assert code == 0, f"worker failed ({code}):\n{err[-3000:]}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.mark.slow
def test_four_workers_escalate_every_ticket_exactly_once_through_duplicates_and_5xx(
    store_url: str, tmp_path: Path
):
    tickets = [f"T{n}" for n in range(600)]  # enough for every worker to meet every race
    helpdesk = FakeHelpdesk(tmp_path / "helpdesk.db")
    helpdesk.add_many(tickets, tags=["vip"])
    # 2,400 distinct events (4 per ticket) and 600 redeliveries of some of them: 3,000.
    events = [event(t, key=f"{t}-{n}") for t in tickets for n in range(4)]
    rng = random.Random(42)
    deliveries = events + rng.sample(events, 600)
    rng.shuffle(deliveries)
    stop_file = tmp_path / "producer-done"
    options = ["--stop-file", str(stop_file), "--flaky", "0.02", "--backoff", "0.05"]
    workers = [
        start_worker(store_url, tmp_path / "helpdesk.db", "--worker-id", f"w{n}", *options)
        for n in range(4)
    ]
    accepted = duplicates = 0
    with Store(store_url) as store:
        for delivery in deliveries:  # the receivers, while the workers run
            result = store.enqueue(delivery, delivery_time())
            accepted += result.accepted
            duplicates += result.duplicate
        stop_file.touch()
        reports = summaries(workers)

        assert (accepted, duplicates) == (2400, 600)
        assert helpdesk.applies() == dict.fromkeys(tickets, 1)
        assert set(helpdesk.levels().values()) == {"l2"}
        recorded = store.escalations()
        assert sorted(e.ticket_id for e in recorded) == sorted(tickets)
        assert store.job_counts() == {"pending": 0, "processing": 0, "done": 2400, "failed": 0}
    # How the events fall to the workers is the scheduler's business (a worker that starts
    # late on a busy machine may find little left): only the sum is the promise.
    assert sum(int(r["done"]) for r in reports) == 2400


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "recovered"),
    [
        ("after_fetch:5", 0),  # claimed, ticket locked and fetched, nothing applied
        ("apply:5", 0),  # intent written, the helpdesk not yet called
        ("after_apply:5", 1),  # the helpdesk has the escalation, escbridge has not recorded it
    ],
    ids=["between-claim-and-apply", "after-intent-before-apply", "between-apply-and-record"],
)
def test_a_worker_killed_mid_event_loses_nothing_and_escalates_nothing_twice(
    store_url: str, tmp_path: Path, kill_at: str, recovered: int
):
    tickets = [f"K{n}" for n in range(30)]
    helpdesk = FakeHelpdesk(tmp_path / "helpdesk.db")
    helpdesk.add_many(tickets, tags=["vip"])
    with Store(store_url) as store:
        for ticket_id in tickets:
            store.enqueue(event(ticket_id), delivery_time())

        victim = start_worker(
            store_url, tmp_path / "helpdesk.db", "--kill-at", kill_at, "--lease", "30"
        )
        code, _, err = finish(victim)
        assert code == -signal.SIGKILL, err[-3000:]
        assert len(store.escalations()) == 4  # four events finished before the kill
        assert store.job_counts()["processing"] > 0  # the rest of its batch is still leased

        # A worker started later (its clock past the dead worker's 30 s lease) takes over.
        summaries([start_worker(store_url, tmp_path / "helpdesk.db", "--clock-offset", "60")])

        assert helpdesk.applies() == dict.fromkeys(tickets, 1)
        recorded = store.escalations()
        assert sorted(e.ticket_id for e in recorded) == sorted(tickets)
        assert sum(e.outcome == "recovered" for e in recorded) == recovered
        assert all(e.rule_id == "vip" and e.reasons for e in recorded)
        assert store.job_counts() == {"pending": 0, "processing": 0, "done": 30, "failed": 0}
        assert all(
            state is not None and state.intent is None and state.lock_owner is None
            for state in (store.ticket_state("fake", t) for t in tickets)
        )
