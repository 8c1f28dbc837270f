"""`escbridge sync` over 10,000 sandbox tickets: the real run against its own dry run.

A helpdesk emulator (Zendesk by default) runs on 127.0.0.1 with the realistic backlog
`escbridge sandbox` seeds (ages from minutes to two weeks, most old tickets solved, a quarter
already above the first level, VIP and enterprise customers, SLAs by priority), here 10,000
tickets. Each round starts a fresh emulator and store and runs, as `escbridge sync` would with
its defaults on a store's first sync (the demo matrix; the changes pass, then the first
reconciliation, which lists every open ticket again and skips those the changes pass did):

1. a dry run: reads every page, decides every ticket, writes nothing;
2. the real run on the same tickets: the same, plus per page one lock statement, one intent
   transaction, the page's escalations in bulk calls, and one record transaction.

The difference is what a real run adds: the helpdesk writes and escbridge's store. Printed per
round and as the median over rounds: both times, their ratio (target: real <= 1.5x dry run),
escalations, API calls, the store transactions per ticket the real run took, and where the
real run's time went: in the helpdesk's writes (``apply``/``apply_many``, including the wait
for Zendesk's bulk jobs) and in the store's page work (lock, intents, record).

    .venv/bin/python benchmarks/sync.py                      # 10,000 tickets, 3 rounds
    .venv/bin/python benchmarks/sync.py --tickets 2000 --rounds 1 --helpdesk freshdesk
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from escbridge.config import parse_config
from escbridge.matrix import Matrix, load_matrix
from escbridge.processing import Processor
from escbridge.sandbox.backlog import config_yaml, default_matrix_path, realistic_backlog
from escbridge.sandbox.driver import SandboxDriver, SimClock, available_drivers
from escbridge.sandbox.emulator import quiet_werkzeug
from escbridge.store import Store, upgrade
from escbridge.sync import CallCounter, Syncer, SyncOptions, SyncReport, build_sync_processor

#: A Wednesday morning in business hours, so business-time rules have hours to count.
START = datetime(2026, 3, 11, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))


@dataclass
class Round:
    dry: float
    real: float
    scanned: int
    escalated: int
    api_calls: int
    transactions: int
    writing: float  # seconds of the real run spent in the helpdesk's writes
    storing: float  # seconds of the real run spent in the store's page work

    @property
    def ratio(self) -> float:
        return self.real / self.dry if self.dry else float("inf")


class TransactionCounter:
    """Counts the store's transactions (every one passes through ``Store._begin``)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        real = store._begin

        @contextmanager
        def counted() -> Iterator[Any]:
            self.count += 1
            with real() as connection:
                yield connection

        store._begin = counted  # type: ignore[method-assign]


class PhaseTimer:
    """Seconds spent in some of a Processor's phase methods (wrapped on the instance)."""

    def __init__(self, processor: Processor, names: tuple[str, ...]) -> None:
        self.seconds = 0.0
        for name in names:
            real = getattr(processor, name)

            def timed(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - began

            setattr(processor, name, timed)


def seeded(helpdesk: str, matrix: Matrix, tickets: int) -> tuple[SandboxDriver, SimClock]:
    clock = SimClock(START)
    [driver] = available_drivers(only=[helpdesk])
    groups = [g for rung in matrix.rungs if (g := rung.group_for(helpdesk, helpdesk))]
    driver.start(clock, groups)
    for spec in realistic_backlog(
        clock.now(), matrix, instance=helpdesk, helpdesk=helpdesk, count=tickets
    ):
        driver.create_ticket(spec, notify=False)
    return driver, clock


def one_round(helpdesk: str, matrix: Matrix, tickets: int, batch_size: int | None) -> Round:
    driver, clock = seeded(helpdesk, matrix, tickets)
    counter = CallCounter()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'sync.db'}"
        upgrade(url)
        text = config_yaml({helpdesk: driver.instance_settings()}, default_matrix_path(), url)
        config = parse_config(text, str(Path(tmp) / "escbridge.yaml"), Path(tmp))
        processor = build_sync_processor(
            config, counter, overrides={"utcnow": clock.now, "wallclock": clock.wall}
        )
        processor.clock = clock.now
        try:
            processor.store.check_schema()  # connect before the clock starts
            reports: dict[bool, tuple[float, SyncReport, int]] = {}
            writing = PhaseTimer(processor, ("apply", "apply_many"))
            storing = PhaseTimer(processor, ("lock_page", "write_intents", "record"))
            for dry_run in (True, False):
                transactions = TransactionCounter(processor.store)
                syncer = Syncer(
                    processor,
                    SyncOptions(dry_run=dry_run, batch_size=batch_size),
                    api_calls=counter,
                )
                began = time.perf_counter()
                report = syncer.run()
                reports[dry_run] = (time.perf_counter() - began, report, transactions.count)
        finally:
            processor.store.close()
            counter.close()
            driver.stop()
    (dry, dry_report, _), (real, report, transactions) = reports[True], reports[False]
    result = report.instances[helpdesk]
    would = sum(dry_report.instances[helpdesk].escalated.values())
    done = sum(result.escalated.values())
    if not report.ok or done != would:
        raise SystemExit(f"the real run did not do what the dry run said: {report.as_json()}")
    return Round(
        dry,
        real,
        result.scanned,
        done,
        result.api_calls,
        transactions,
        writing.seconds,
        storing.seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="fresh emulator each; median shown")
    parser.add_argument(
        "--helpdesk", default="zendesk", choices=("zendesk", "freshdesk", "zohodesk")
    )
    parser.add_argument("--batch-size", type=int, default=None, help="as `escbridge sync`")
    args = parser.parse_args(argv)
    quiet_werkzeug()
    logging.basicConfig(level=logging.ERROR)
    matrix = load_matrix(default_matrix_path())

    rounds: list[Round] = []
    print(f"{args.tickets} {args.helpdesk} sandbox tickets, `escbridge sync` defaults")
    print(f"{'round':>5} {'dry run':>9} {'real':>9} {'ratio':>6} {'scanned':>8} "
          f"{'escalated':>9} {'API calls':>9} {'store tx/ticket':>15} "
          f"{'of real: writes':>15} {'store':>7}")  # fmt: skip
    for number in range(1, args.rounds + 1):
        r = one_round(args.helpdesk, matrix, args.tickets, args.batch_size)
        rounds.append(r)
        per_ticket = r.transactions / r.scanned if r.scanned else 0.0
        print(f"{number:>5} {r.dry:>8.2f}s {r.real:>8.2f}s {r.ratio:>6.2f} {r.scanned:>8} "
              f"{r.escalated:>9} {r.api_calls:>9} {per_ticket:>15.3f} "
              f"{r.writing:>14.2f}s {r.storing:>6.2f}s")  # fmt: skip

    dry = statistics.median(r.dry for r in rounds)
    real = statistics.median(r.real for r in rounds)
    ratio = statistics.median(r.ratio for r in rounds)
    writing = statistics.median(r.writing for r in rounds)
    storing = statistics.median(r.storing for r in rounds)
    print(f"median: dry run {dry:.2f} s, real sync {real:.2f} s, real / dry run {ratio:.2f}")
    print(
        f"        of the real run: {writing:.2f} s in helpdesk writes, {storing:.2f} s in the store"
    )
    ok = ratio <= 1.5
    print(f"{'PASS' if ok else 'FAIL'}  real sync <= 1.5x its dry run")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
