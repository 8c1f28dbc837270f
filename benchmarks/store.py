"""Events per second through the inbox and processing, on SQLite and PostgreSQL.

Measures escbridge's own cost of an event: the receiver's insert into the inbox, then
claim → lock → fetch → decide → intent → apply → record → done in 1 and 4 worker processes
(and, on SQLite, 1 process with 4 threads: the set-up docs/operating/store.md recommends there).
The connector is an in-memory fake (no network), so the figures are the store's and the
engine's, not a helpdesk's. One ticket in four escalates; the rest are decided "unchanged".

    .venv/bin/python benchmarks/store.py                 # 4,000 events per run
    .venv/bin/python benchmarks/store.py --events 10000
    .venv/bin/python benchmarks/store.py --postgres-url postgresql+psycopg://u:p@host/scratch

PostgreSQL runs on a throw-away local server (the binaries must be installed; see
scripts/ensure-postgres.sh) unless --postgres-url names a scratch database, whose escbridge
tables are emptied before each run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from escbridge.connector import ApplyResult, CheckReport, ConflictHandler, ConnectorInfo
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, Ticket, TicketEvent
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor
from escbridge.store import Store, upgrade
from escbridge.store.schema import metadata

MATRIX = """\
version: 1
name: benchmark
levels:
  - {id: l1, name: Frontline, groups: {"*": Frontline}}
  - {id: l2, name: Senior support, groups: {"*": Senior}}
rules:
  - id: vip
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions: {priority: high}
"""
CREATED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ticket(n: int) -> Ticket:
    tags = ["vip"] if n % 4 == 0 else ["general"]
    return Ticket(id=str(n), instance="bench", tags=tags, created_at=CREATED, updated_at=CREATED)


class MemoryConnector:
    """Tickets in a dict: fetch and apply cost nothing but their Python objects."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo("memory", "1", "In-memory")
    instance = "bench"

    def __init__(self, count: int) -> None:
        self.tickets = {str(n): ticket(n) for n in range(count)}

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        return self.tickets[ticket_id]

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        self.tickets[ticket.id] = ticket.model_copy(
            update={"level": actions.level, "tags": ticket.tags | set(actions.tags_add)}
        )
        return ApplyResult(ticket.id, ok=True, actions=actions)

    def check(self, groups: Collection[str]) -> CheckReport:
        return CheckReport(ok=True)

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[Any]:
        return iter(())

    def apply_many(
        self, items: Sequence[tuple[Ticket, Actions]], *, on_conflict: ConflictHandler | None = None
    ) -> list[ApplyResult]:
        return [self.apply(t, a) for t, a in items]

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        return Ticket.model_validate(raw)

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None:
        return None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]:
        return []

    def is_own_change(self, event: TicketEvent) -> bool:
        return False

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        return None


def worker(url: str, events: int, threads: int, ready: Barrier, results: Any) -> None:
    """One worker process: set up, wait for the start, drain the inbox, report."""
    store = Store(url)
    processor = Processor(
        store,
        Engine(parse_matrix(MATRIX, "benchmark.yaml")),
        {"bench": MemoryConnector(events)},
        settings=ProcessingConfig(batch_size=20, poll_seconds=0.01),
    )
    store.job_counts()  # connect and check the schema before the clock starts
    ready.wait()
    report = processor.run(drain=True, concurrency=threads)
    store.close()
    results.put(report.done)


@dataclass
class Result:
    backend: str
    workers: int
    threads: int
    events: int
    enqueue_per_second: float
    process_per_second: float
    escalated: int


def empty(url: str) -> None:
    with Store(url) as store, store.engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(sa.delete(table))


def run(backend: str, url: str, workers: int, events: int, threads: int = 1) -> Result:
    upgrade(url)
    empty(url)
    with Store(url) as store:
        started = time.perf_counter()
        for n in range(events):
            store.enqueue(
                TicketEvent(instance="bench", ticket_id=str(n), dedupe_key=f"evt-{n}"),
                datetime.now(UTC),
            )
        enqueue_seconds = time.perf_counter() - started

        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(workers + 1)
        results = context.Queue()
        processes = [
            context.Process(target=worker, args=(url, events, threads, ready, results))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        ready.wait()
        started = time.perf_counter()
        done = sum(results.get() for _ in processes)
        process_seconds = time.perf_counter() - started
        for process in processes:
            process.join()
        counts = store.job_counts()
        escalated = len(store.escalations())
    if done != events or counts["done"] != events:
        raise SystemExit(f"{backend}/{workers}: processed {done} of {events} ({counts})")
    return Result(
        backend,
        workers,
        threads,
        events,
        events / enqueue_seconds,
        events / process_seconds,
        escalated,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per run (default 4000)")
    parser.add_argument("--postgres-url", help="a scratch PostgreSQL database to use instead")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--databases", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="escbridge-bench-") as scratch:
        for workers in args.workers if "sqlite" in args.databases else []:
            url = f"sqlite:///{Path(scratch) / f'bench-{workers}.db'}"
            results.append(run("sqlite", url, workers, args.events))
        if "sqlite" in args.databases:  # what docs/operating/store.md recommends on SQLite: threads
            url = f"sqlite:///{Path(scratch) / 'bench-threads.db'}"
            results.append(run("sqlite", url, 1, args.events, threads=4))

        server = None
        pg_url = args.postgres_url
        skipped = None
        if "postgresql" not in args.databases:
            pass
        elif pg_url is None:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from pgserver import PostgresUnavailable, start_postgres  # test support

            try:
                server = start_postgres()
                pg_url = server.url(server.create_database())
            except PostgresUnavailable as error:
                skipped = str(error).splitlines()[0]
        try:
            if pg_url is not None and "postgresql" in args.databases:
                for workers in args.workers:
                    results.append(run("postgresql", pg_url, workers, args.events))
        finally:
            if server is not None:
                server.stop()

    print(f"escbridge store benchmark: {args.events} events per run, in-memory fake connector")
    print(f"{'database':<11} {'workers':<22} {'inbox events/s':>15} {'processed/s':>12}")
    for r in results:
        shape = f"{r.workers} process{'es' if r.workers > 1 else ''}"
        if r.threads > 1:
            shape += f" × {r.threads} threads"
        print(
            f"{r.backend:<11} {shape:<22} {r.enqueue_per_second:>15,.0f}"
            f" {r.process_per_second:>12,.0f}"
        )
    if skipped:
        print(f"postgresql: not run ({skipped})")


if __name__ == "__main__":
    main()
