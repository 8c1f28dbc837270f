"""The processing tests' matrix and events, and a worker process to run them.

The helpdesk and connector are escbridge.testing's ``FakeHelpdesk`` (tickets in a SQLite file,
so the worker *processes* of the fault tests share it and "escalated exactly once" is counted
on the helpdesk's side) and ``FakeConnector`` (faults: ``fail``, ``kill_at`` — a real SIGKILL
of this very process at a chosen point — and ``land_then_fail``).

Run as a script, this file is one worker, which stops when the inbox is empty:
``python processing_harness.py --store URL --helpdesk PATH [--kill-at after_apply:3]
[--clock-offset SECONDS]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from escbridge.errors import TransientError
from escbridge.matrix import parse_matrix
from escbridge.model import TicketEvent
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor, RunReport
from escbridge.store import Store
from escbridge.testing import FakeConnector, FakeHelpdesk

#: Two levels and a team; tickets tagged ``vip`` go to l2, ``billing`` ones to the team.
MATRIX = """\
version: 1
name: processing tests
levels:
  - id: l1
    name: Frontline
    groups: {"*": Frontline}
  - id: l2
    name: Senior support
    groups: {"*": Senior}
  - id: l3
    name: Management
    groups: {"*": Managers}
teams:
  billing:
    name: Billing
    groups: {"*": Billing}
    level: l2
limits:
  cooldown: 30m
  daily_cap: 3
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions: {priority: high}
  - id: legal
    name: Legal threat
    kind: hierarchical
    when: {keywords: [lawyer]}
    to: l3
    actions: {priority: urgent}
"""


def engine() -> Engine:
    return Engine(parse_matrix(MATRIX, "processing-tests.yaml"))


def event(
    ticket_id: str, key: str | None = None, instance: str = "fake", **extra: Any
) -> TicketEvent:
    return TicketEvent(
        instance=instance, ticket_id=ticket_id, dedupe_key=key or f"evt-{ticket_id}", **extra
    )


# --- the worker process ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--helpdesk", required=True)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--kill-at", default=None, help="POINT:N, e.g. after_apply:3")
    parser.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to now")
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument(
        "--flaky", type=float, default=0.0, help="share of helpdesk calls that fail with a 503"
    )
    parser.add_argument("--backoff", type=float, default=2.0, help="first retry delay, seconds")
    parser.add_argument(
        "--stop-file", default=None, help="stop once this file exists and all is done"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    kill_at = None
    if args.kill_at:
        point, count = args.kill_at.split(":")
        kill_at = (point, int(count))
    offset = timedelta(seconds=args.clock_offset)
    store = Store(args.store)
    rng = random.Random()

    def flaky(_name: str, _ticket_id: str) -> None:
        if rng.random() < args.flaky:
            raise TransientError("HTTP 503: Service Unavailable", status=503)

    connector = FakeConnector(
        FakeHelpdesk(args.helpdesk), kill_at=kill_at, fail=flaky if args.flaky else None
    )
    processor = Processor(
        store,
        engine(),
        {"fake": connector},
        settings=ProcessingConfig(
            lease_seconds=args.lease,
            batch_size=args.batch,
            poll_seconds=args.poll,
            backoff_seconds=args.backoff,
        ),
        clock=lambda: datetime.now(UTC) + offset,
        worker_id=args.worker_id,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = RunReport()
    if args.stop_file:
        # Run until told the producer has finished, then until the inbox is empty.
        stop_file = Path(args.stop_file)
        while not stop.is_set() and not stop_file.exists():
            batch = processor.run_once()
            report.add(batch)
            if not batch.claimed:
                stop.wait(args.poll)
    report.add(processor.run(stop=stop, drain=True))
    store.close()
    print(
        json.dumps(
            {
                "done": report.done,
                "outcomes": report.outcomes,
                "dead": report.dead,
                "deferred": report.deferred,
                "retried": report.retried,
                "claimed": report.claimed,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
