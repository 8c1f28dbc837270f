"""The door's write (Store.enqueue_many): many events, one transaction, durable on return.

On both databases: answers in order (new, duplicate of an earlier delivery, duplicate within
the batch), and a value the database refuses costs only its own event (an outage is
StoreUnavailableError: test_store_recovery.py). Durability: SQLite runs synchronous=FULL,
PostgreSQL commits synchronously even when the server is configured otherwise (and a SQLite
commit is seen by other processes at once: tests/webhooks/test_door_durability.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from escbridge.errors import StoreDataError
from escbridge.model import TicketEvent
from escbridge.store import Enqueued, Store, upgrade

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def event(key: str, ticket: str = "1", instance: str = "zd") -> TicketEvent:
    return TicketEvent(instance=instance, ticket_id=ticket, dedupe_key=key, kind="ticket.updated")


def keys(store: Store) -> list[str]:
    return sorted(job.dedupe_key for job in store.jobs(limit=None))


def test_a_batch_answers_each_event_in_order(store: Store) -> None:
    [earlier] = store.enqueue_many([event("a")], NOW)

    answers = store.enqueue_many(
        [event("b"), event("a"), event("c", instance="other"), event("b")], NOW
    )

    b, again_a, c, again_b = answers
    assert b.accepted and c.accepted and b.job_id != c.job_id
    assert again_a == Enqueued(accepted=False, job_id=earlier.job_id)  # a redelivery
    assert again_b == Enqueued(accepted=False, job_id=b.job_id)  # twice in one batch
    assert keys(store) == ["a", "b", "c"]
    job = store.job(b.job_id or 0)
    assert job is not None and job.status == "pending" and job.received_at == NOW


def test_an_empty_batch_touches_nothing(store: Store) -> None:
    assert store.enqueue_many([], NOW) == []


def test_a_value_the_database_refuses_costs_only_its_own_event(store: Store) -> None:
    bad = event("bad\ud800key")  # a lone surrogate: no database can hold it
    answers = store.enqueue_many([event("x"), bad, event("y")], NOW)

    assert [a.accepted for a in answers] == [True, False, True]
    assert answers[1].refused == "dedupe_key contains a lone surrogate"
    assert not answers[1].duplicate
    assert keys(store) == ["x", "y"]
    with pytest.raises(StoreDataError, match="lone surrogate"):
        store.enqueue(bad, NOW)


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_postgresql_refuses_a_nul_for_that_event_only(store: Store) -> None:
    answers = store.enqueue_many([event("x"), event("n", ticket="1\x002")], NOW)
    assert answers[0].accepted
    assert answers[1].refused == "ticket_id contains a NUL character"
    assert keys(store) == ["x"]


# --- durability ------------------------------------------------------------------------------


def test_sqlite_commits_are_flushed_to_disk(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    with Store(url) as store, store.engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_postgresql_commits_synchronously_even_when_the_server_says_off(store: Store) -> None:
    # The test server runs with synchronous_commit=off (tests/pgserver.py): the store's
    # sessions must switch it back on, or a 2xx would not survive a crash.
    with store.engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        server_default = raw.execute(
            "SELECT reset_val FROM pg_settings WHERE name = %s", ("synchronous_commit",)
        ).fetchone()[0]
        assert server_default == "off"
        assert raw.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_a_writer_holding_the_lock_may_write_within_it(store: Store) -> None:
    """The receiver's group commit takes its turn first, then gathers and writes."""
    with store.writing():
        assert store.enqueue_many([event("a")], NOW)[0].accepted
    with store.writing(), store.writing():
        assert store.enqueue(event("b"), NOW).accepted
    assert keys(store) == ["a", "b"]
