"""A store that comes back: the same process writes again, without a restart.

SQLite: the database file is made read-only, then writable again; the process opened its
connections while it was read-only (as a receiver or worker started, or whose pool grew,
during the outage does), and such a connection stays read-only for good unless it is
discarded. PostgreSQL: the server is stopped, then started again on the same data and port;
the pool's connections died with it. See tests/store_outage.py for how each is done.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PostgresServer
from processing_harness import engine, event
from sqlalchemy.engine import make_url
from store_outage import PostgresOutage, SqliteOutage

from escbridge.errors import StoreUnavailableError
from escbridge.processing import Processor
from escbridge.store import Store, probe_write
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

Outage = SqliteOutage | PostgresOutage

TICKETS = [str(n) for n in range(1, 7)]


@pytest.fixture
def outage(db_backend: str, request: pytest.FixtureRequest) -> Iterator[Outage]:
    """A fresh store on the backend under test that a test can take down and bring back."""
    made: Outage
    if db_backend == "sqlite":
        made = SqliteOutage(request.getfixturevalue("_sqlite_template"))
    else:
        made = PostgresOutage(
            request.getfixturevalue("postgresql_server"), request.getfixturevalue("store_url")
        )
    try:
        yield made
    finally:
        made.remove()


def _processor(store: Store, helpdesk: FakeHelpdesk, clock: FakeClock) -> Processor:
    return Processor(
        store,
        engine(),
        {"fake": FakeConnector(helpdesk)},
        clock=clock,
        rng=random.Random(7),
        worker_id="recovering-worker",
    )


def _enqueue_all(processor: Processor, keys: list[str]) -> tuple[int, int]:
    """(taken, refused) for one delivery of each key: taken is stored or found a duplicate,
    refused is StoreUnavailableError (the receiver's 503)."""
    stored = refused = 0
    for key in keys:
        try:
            processor.enqueue(event(key, key=f"evt-{key}"))
        except StoreUnavailableError:
            refused += 1
        else:
            stored += 1
    return stored, refused


def test_the_same_process_enqueues_and_works_again_once_the_store_is_back(
    outage: Outage, tmp_path: Path
) -> None:
    clock = FakeClock()
    helpdesk_dir = outage.directory if isinstance(outage, SqliteOutage) else tmp_path
    with outage.acting():
        helpdesk = FakeHelpdesk(helpdesk_dir / "helpdesk.db")
        for ticket in TICKETS:
            helpdesk.add(ticket, tags=["vip"])
        # Another process queued the first half and keeps the database open throughout, as
        # the receiver and the other workers do (so SQLite's -wal file stays as it was).
        bystander = Store(outage.url)
        assert _enqueue_all(_processor(bystander, helpdesk, clock), TICKETS[:3]) == (3, 0)

        store = Store(outage.url)
        if isinstance(outage, PostgresOutage):
            store.job_counts()  # a pooled connection, which dies with the server
        # (On SQLite this store opens its connections during the outage: one opened before
        # it is writable and stays so, whatever the file's mode.)
        outage.begin()
        try:
            processor = _processor(store, helpdesk, clock)
            # While the store is down: every write refused as "unavailable" (a 503 upstream),
            # the worker's claim too, and the write probe says so; reads may still work.
            assert _enqueue_all(processor, TICKETS[3:]) == (0, 3)
            with pytest.raises(StoreUnavailableError):
                processor.run_once()
            with pytest.raises(StoreUnavailableError):
                probe_write(store.engine, store.url, timeout=0.5)
            if isinstance(outage, SqliteOutage):
                # A read succeeds and its (read-only) connection goes back to the pool: the
                # trap that kept the receiver answering 503 after the file was writable again.
                assert store.job_counts()["pending"] == 3

            outage.end()

            # The same Store object, no restart: the first write after recovery gets in.
            assert _enqueue_all(processor, TICKETS[3:]) == (3, 0)
            probe_write(store.engine, store.url, timeout=0.5)
            assert _enqueue_all(processor, TICKETS) == (6, 0)  # redeliveries, as duplicates
            report = processor.run_once()
            assert report.claimed == 6
            assert report.outcomes == {"escalated": 6}
            assert helpdesk.applies() == dict.fromkeys(TICKETS, 1)
            assert store.job_counts()["done"] == 6
        finally:
            store.close()
            bystander.close()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_a_locked_sqlite_database_is_unavailable_then_writable_again(store_url: str) -> None:
    path = store_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    with Store(store_url, busy_timeout=0.2) as store:
        assert store.enqueue(event("1"), FakeClock()()).accepted
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the database
        try:
            with pytest.raises(StoreUnavailableError, match="locked"):
                store.enqueue(event("2"), FakeClock()())
            with pytest.raises(StoreUnavailableError, match="locked"):
                probe_write(store.engine, store.url, timeout=0.2)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.enqueue(event("2"), FakeClock()()).accepted
        probe_write(store.engine, store.url, timeout=0.2)
        assert store.job_counts()["pending"] == 2


def _set_read_only(server: PostgresServer, database: str, read_only: bool) -> None:
    """Every new session of ``database`` read-only (or not), and the current ones ended: what
    an application sees when its server fails over to a standby, and back."""
    setting = "on" if read_only else "off"
    server.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {setting}')
    server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_a_read_only_postgresql_is_unavailable_and_its_sessions_are_not_kept(
    store_url: str, postgresql_server: PostgresServer
) -> None:
    server = postgresql_server
    database = str(make_url(store_url).database)
    clock = FakeClock()
    with Store(store_url) as store:
        assert store.enqueue(event("1"), clock()).accepted
        _set_read_only(server, database, True)
        try:
            # The pooled session died (failed over); the next ones are read-only. Both are
            # refused as "unavailable", never an internal error, and neither is kept.
            for ticket in ("2", "3"):
                with pytest.raises(StoreUnavailableError):
                    store.enqueue(event(ticket), clock())
            with pytest.raises(StoreUnavailableError, match="read-only"):
                probe_write(store.engine, store.url, timeout=0.5)
            assert store.job_counts()["pending"] == 1  # reads work on a read-only session
        finally:
            server.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        # Back to the primary: no session kept from the read-only time refuses the write.
        assert store.enqueue(event("2"), clock()).accepted
        assert store.enqueue(event("3"), clock()).accepted
        probe_write(store.engine, store.url, timeout=0.5)
