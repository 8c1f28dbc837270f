"""The store: schema versions, the inbox, per-ticket locks and history, cursors, outages.

Every test that takes ``store``, ``store_url`` or ``empty_database_url`` runs on SQLite and
on a real PostgreSQL server (see tests/conftest.py).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from escbridge.errors import StoreSchemaError, StoreUnavailableError
from escbridge.model import Actions, Decision, Destination, Priority, TicketEvent
from escbridge.secrets import redact
from escbridge.store import (
    FAILED,
    Intent,
    LockLostError,
    Store,
    head_revision,
    parse_url,
    upgrade,
)
from escbridge.store.migrate import sqlite_file
from escbridge.store.schema import metadata

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def event(ticket_id: str = "1", key: str | None = None, instance: str = "zd") -> TicketEvent:
    return TicketEvent(instance=instance, ticket_id=ticket_id, dedupe_key=key or f"k-{ticket_id}")


def decision(to: str = "l2", at: datetime = NOW, ticket_id: str = "1") -> Decision:
    return Decision(
        ticket_id=ticket_id,
        instance="zd",
        at=at,
        escalate=True,
        from_level="l1",
        destination=Destination(kind="level", id=to, name=to.upper(), rank=1, group="Senior"),
        rule_id="vip",
        kind="hierarchical",
        actions=Actions(
            group="Senior", priority=Priority.HIGH, tags_add=(f"escbridge_{to}",), level=to
        ),
        reasons=("tagged vip",),
        summary=f"escalate l1 → {to}",
    )


# --- schema versions ------------------------------------------------------------------


def test_db_upgrade_creates_exactly_the_tables_the_code_describes(empty_database_url):
    result = upgrade(empty_database_url)

    assert (result.before, result.after) == (None, head_revision())
    engine = sa.create_engine(parse_url(empty_database_url))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_db_upgrade_is_safe_to_repeat(empty_database_url):
    upgrade(empty_database_url)
    again = upgrade(empty_database_url)

    assert not again.changed


def test_a_store_never_upgraded_says_to_run_db_upgrade(empty_database_url):
    with Store(empty_database_url) as store, pytest.raises(StoreSchemaError) as raised:
        store.enqueue(event(), NOW)

    # an empty PostgreSQL database is "not initialised"; a SQLite file that is not there is
    # said so without creating it (a read would leave an empty file behind)
    assert "not initialised" in str(raised.value) or "does not exist yet" in str(raised.value)
    assert "escbridge db upgrade" in str(raised.value)
    file = sqlite_file(empty_database_url)
    assert file is None or not file.exists()


def test_a_store_at_an_old_version_says_so_and_upgrading_keeps_its_data(empty_database_url):
    upgrade(empty_database_url, "0001")
    with Store(empty_database_url, check_schema=False) as old:
        old.enqueue(event("kept"), NOW)

    with Store(empty_database_url) as store:
        with pytest.raises(StoreSchemaError) as raised:
            store.job_counts()
        assert "revision 0001" in str(raised.value)
        assert f"needs {head_revision()}" in str(raised.value)
        assert "escbridge db upgrade" in str(raised.value)

    upgrade(empty_database_url)
    with Store(empty_database_url) as store:
        assert [j.ticket_id for j in store.jobs()] == ["kept"]


def test_a_store_upgraded_by_a_newer_escbridge_says_to_upgrade_escbridge(store_url):
    with Store(store_url) as store, store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))

    with Store(store_url) as store, pytest.raises(StoreSchemaError) as raised:
        store.job_counts()
    assert "9999" in str(raised.value) and "upgrade escbridge" in str(raised.value)


# --- the inbox -----------------------------------------------------------------------


def test_a_delivery_is_kept_once_per_instance(store):
    first = store.enqueue(event("1", key="evt-1"), NOW)
    again = store.enqueue(event("1", key="evt-1"), NOW)
    other_account = store.enqueue(event("1", key="evt-1", instance="zd-eu"), NOW)

    assert first.accepted and other_account.accepted
    assert again.duplicate and again.job_id == first.job_id
    assert store.job_counts()["pending"] == 2


def test_claims_take_due_jobs_oldest_first_up_to_the_limit(store):
    for n in range(5):
        store.enqueue(event(str(n)), NOW + timedelta(seconds=n))

    first = store.claim("w1", NOW + timedelta(seconds=10), limit=3, lease=LEASE)
    rest = store.claim("w2", NOW + timedelta(seconds=10), limit=3, lease=LEASE)

    assert [j.ticket_id for j in first] == ["0", "1", "2"]
    assert [j.ticket_id for j in rest] == ["3", "4"]
    assert {j.lease_owner for j in first} == {"w1"}
    assert all(j.attempts == 1 and j.status == "processing" for j in first + rest)
    assert store.claim("w3", NOW + timedelta(seconds=10), lease=LEASE) == []


def test_a_job_is_not_claimed_before_it_is_due(store):
    store.enqueue(event(), NOW + timedelta(minutes=1))

    assert store.claim("w", NOW, lease=LEASE) == []
    assert len(store.claim("w", NOW + timedelta(minutes=1), lease=LEASE)) == 1


def test_workers_claiming_at_once_never_get_the_same_job(store, store_url):
    for n in range(200):
        store.enqueue(event(str(n)), NOW)
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        mine: list[int] = []
        with Store(store_url) as own:  # its own connections, as a separate process would have
            barrier.wait()
            while jobs := own.claim(name, NOW, limit=7, lease=LEASE):
                mine.extend(j.id for j in jobs)
        claimed.append(mine)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [job_id for mine in claimed for job_id in mine]
    assert len(every) == len(set(every)) == 200


def test_a_job_held_by_a_dead_worker_is_claimed_again_after_its_lease(store):
    store.enqueue(event(), NOW)
    [held] = store.claim("dead", NOW, lease=LEASE)

    assert store.claim("alive", NOW + LEASE - timedelta(seconds=1), lease=LEASE) == []
    [again] = store.claim("alive", NOW + LEASE, lease=LEASE)

    assert again.id == held.id and again.attempts == 2 and again.lease_owner == "alive"
    assert not store.complete(held, NOW + LEASE, "escalated")  # the dead worker's claim is void
    assert store.complete(again, NOW + LEASE, "escalated")


def test_a_job_that_keeps_killing_its_workers_is_dead_lettered(store):
    store.enqueue(event(), NOW)
    now = NOW
    for _ in range(3):
        assert store.claim("doomed", now, lease=LEASE, max_attempts=3)
        now += LEASE

    assert store.claim("next", now, lease=LEASE, max_attempts=3) == []
    [job] = store.jobs([FAILED])
    assert job.attempts == 3
    assert "gave up after 3 attempts" in (job.last_error or "")
    assert "lease expired" in (job.last_error or "")


def test_a_deferred_job_gives_back_its_attempt(store):
    store.enqueue(event(), NOW)
    [job] = store.claim("w", NOW, lease=LEASE)

    assert store.defer(job, NOW + timedelta(seconds=2))

    [again] = store.claim("w", NOW + timedelta(seconds=2), lease=LEASE)
    assert again.attempts == 1


def test_failed_jobs_can_be_replayed_with_fresh_attempts(store):
    for n in range(3):
        store.enqueue(event(str(n)), NOW)
    a, b, c = store.claim("w", NOW, lease=LEASE)
    store.dead_letter(a, NOW, "AuthError: HTTP 401")
    store.dead_letter(b, NOW, "NotFound: HTTP 404")
    store.complete(c, NOW, "escalated")

    assert store.retry_jobs([a.id, c.id, 999], NOW) == [a.id]  # done and unknown: left alone
    assert store.retry_jobs(None, NOW) == [b.id]
    replayed = store.claim("w", NOW, lease=LEASE)
    assert sorted(j.id for j in replayed) == sorted([a.id, b.id])
    assert all(j.attempts == 1 for j in replayed)


def test_job_counts_cover_every_status(store):
    for n in range(4):
        store.enqueue(event(str(n)), NOW)
    a, b, _c = store.claim("w", NOW, limit=3, lease=LEASE)
    store.complete(a, NOW, "unchanged")
    store.dead_letter(b, NOW, "boom")

    assert store.job_counts() == {"pending": 1, "processing": 1, "done": 1, "failed": 1}


def test_pruning_forgets_only_done_jobs_finished_before_the_cutoff(store):
    for n in range(3):
        store.enqueue(event(str(n)), NOW)
    a, b, _ = store.claim("w", NOW, lease=LEASE)
    store.complete(a, NOW, "unchanged")
    store.complete(b, NOW + timedelta(days=10), "unchanged")

    assert store.prune_jobs(NOW + timedelta(days=7)) == 1
    assert store.job_counts() == {"pending": 0, "processing": 1, "done": 1, "failed": 0}


def test_error_texts_are_kept_without_credentials(store):
    store.enqueue(event(), NOW)
    [job] = store.claim("w", NOW, lease=LEASE)
    error = (
        "GET https://agent:hunter2pass@acme.zendesk.com/api/v2/tickets/1: HTTP 401 "
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig api_token=abcd1234efgh"
    )

    store.retry_later(job, NOW, error)

    [kept] = store.jobs()
    text = kept.last_error or ""
    for secret in ("hunter2pass", "eyJhbGciOiJIUzI1NiJ9", "abcd1234efgh"):
        assert secret not in text
    assert "HTTP 401" in text and "acme.zendesk.com" in text


def test_known_secret_values_are_redacted_wherever_they_appear():
    assert redact("failed with key s3cr3t-value in body", ["s3cr3t-value"]) == (
        "failed with key [redacted] in body"
    )
    assert "Zoho-oauthtoken [redacted]" in redact("Zoho-oauthtoken 1000.abcdef.123456")
    assert len(redact("x" * 5000)) <= 2000


# --- per-ticket lock, intent, history ----------------------------------------------------


def test_one_worker_at_a_time_holds_a_ticket(store):
    mine = store.lock_ticket("zd", "1", "w1", NOW, LEASE)

    assert mine is not None
    assert store.lock_ticket("zd", "1", "w2", NOW, LEASE) is None
    assert store.lock_ticket("zd", "2", "w2", NOW, LEASE) is not None  # other tickets are free
    store.release(mine)
    assert store.lock_ticket("zd", "1", "w2", NOW, LEASE) is not None


def test_a_dead_workers_ticket_lock_is_taken_over_and_its_writes_are_fenced_off(store):
    dead = store.lock_ticket("zd", "1", "dead", NOW, LEASE)
    assert dead is not None
    later = NOW + LEASE
    alive = store.lock_ticket("zd", "1", "alive", later, LEASE)
    assert alive is not None

    with pytest.raises(LockLostError):
        store.write_intent(dead, Intent(decision()), later)
    with pytest.raises(LockLostError):
        store.record_escalation(dead, Intent(decision()), outcome="applied", now=later)
    assert not store.renew_lock(dead, later, LEASE)
    store.release(dead)  # harmless: it releases nothing
    assert store.lock_ticket("zd", "1", "third", later, LEASE) is None


def test_the_intent_written_before_an_apply_is_found_by_the_next_holder(store):
    lock = store.lock_ticket("zd", "1", "w1", NOW, LEASE)
    assert lock is not None
    store.write_intent(lock, Intent(decision(), NOW - timedelta(days=1), job_id=7), NOW)
    # the worker dies here; its lock expires

    later = store.lock_ticket("zd", "1", "w2", NOW + LEASE, LEASE)

    assert later is not None and later.state.intent is not None
    assert later.state.intent.decision == decision()
    assert later.state.intent.job_id == 7
    assert later.state.intent.ticket_created_at == NOW - timedelta(days=1)


def test_recording_an_escalation_updates_history_and_state_and_finishes_the_job(store):
    store.enqueue(event(), NOW)
    [job] = store.claim("w", NOW, lease=LEASE)
    lock = store.lock_ticket("zd", "1", "w", NOW, LEASE)
    assert lock is not None
    store.write_intent(lock, Intent(decision(), job_id=job.id), NOW)

    recorded = store.record_escalation(
        lock,
        Intent(decision(), job_id=job.id),
        outcome="applied",
        now=NOW + timedelta(seconds=1),
        cooldown=timedelta(minutes=30),
        job=job,
        job_outcome="escalated",
    )

    assert (recorded.to_level, recorded.rule_id, recorded.outcome) == ("l2", "vip", "applied")
    assert store.escalations() == [recorded]
    [history] = store.history("zd", "1")
    assert (history.to, history.from_level, history.at) == ("l2", "l1", NOW)
    state = store.ticket_state("zd", "1")
    assert state is not None
    assert (state.level, state.day_count, state.escalation_count) == ("l2", 1, 1)
    assert state.cooldown_until == NOW + timedelta(minutes=30)
    assert state.intent is None and state.lock_owner is None
    [done] = store.jobs(["done"])
    assert (done.id, done.outcome) == (job.id, "escalated")


def test_the_daily_count_starts_again_each_day(store):
    for at in (NOW, NOW + timedelta(hours=1), NOW + timedelta(days=1)):
        lock = store.lock_ticket("zd", "1", "w", at, LEASE)
        assert lock is not None
        store.record_escalation(lock, Intent(decision(at=at)), outcome="applied", now=at)
        state = store.ticket_state("zd", "1")
        assert state is not None
        counts = (state.day_count, state.escalation_count)

    assert counts == (1, 3)
    assert len(store.history("zd", "1")) == 3


def test_a_locked_ticket_comes_with_its_history_oldest_first(store):
    for at in (NOW, NOW + timedelta(hours=2)):
        lock = store.lock_ticket("zd", "1", "w", at, LEASE)
        assert lock is not None
        store.record_escalation(
            lock, Intent(decision("l2" if at == NOW else "l3", at)), outcome="applied", now=at
        )

    lock = store.lock_ticket("zd", "1", "w", NOW + timedelta(hours=3), LEASE)

    assert lock is not None
    assert [(r.to, r.at) for r in lock.history] == [
        ("l2", NOW),
        ("l3", NOW + timedelta(hours=2)),
    ]


def test_a_page_of_tickets_is_locked_at_once_leaving_out_those_another_worker_holds(store):
    store.record_escalation(
        store.lock_ticket("zd", "2", "w0", NOW, LEASE),  # type: ignore[arg-type]
        Intent(decision(ticket_id="2")),
        outcome="applied",
        now=NOW,
    )
    held = store.lock_ticket("zd", "3", "other", NOW, LEASE)
    dead = store.lock_ticket("zd", "4", "dead", NOW - LEASE, LEASE)  # expired at NOW
    assert held is not None and dead is not None

    locks = store.lock_tickets("zd", ["1", "2", "3", "4", "1"], "sync", NOW, LEASE)

    assert sorted(locks) == ["1", "2", "4"]  # 3 is busy; 4's holder is presumed dead
    assert [h.to for h in locks["2"].history] == ["l2"] and locks["1"].history == ()
    assert store.lock_ticket("zd", "1", "w2", NOW, LEASE) is None  # really held
    with store.batch() as batch:
        assert not batch.write_intent(dead, Intent(decision(ticket_id="4")), NOW)  # fenced
        assert batch.write_intent(locks["4"], Intent(decision(ticket_id="4")), NOW)
        batch.release_many([locks["1"], locks["2"]])
    state = store.ticket_state("zd", "4")
    assert state is not None and state.intent is not None and state.lock_owner == "sync"
    assert store.lock_ticket("zd", "1", "w2", NOW, LEASE) is not None  # released


def test_escalations_of_a_page_are_recorded_together_except_where_the_lock_was_lost(store):
    from escbridge.store import ToRecord

    locks = store.lock_tickets("zd", ["1", "2", "3"], "sync", NOW, LEASE)
    later = NOW + LEASE
    assert store.lock_ticket("zd", "2", "thief", later, LEASE) is not None  # 2 was taken over
    entries = [ToRecord(locks[t], Intent(decision(ticket_id=t)), "applied") for t in "123"]

    with store.batch() as batch:
        stored = batch.record_escalations(entries, now=later)

    assert [s is not None for s in stored] == [True, False, True]
    assert sorted(e.ticket_id for e in store.escalations()) == ["1", "3"]
    assert stored[0] is not None and stored[0].to_level == "l2" and stored[0].id > 0
    assert store.ticket_state("zd", "2").escalation_count == 0  # type: ignore[union-attr]


def test_times_come_back_as_the_same_instant_in_utc(store):
    berlin = timezone(timedelta(hours=1))
    store.enqueue(event(), datetime(2026, 3, 2, 13, 0, tzinfo=berlin))

    [job] = store.jobs()

    assert job.received_at == NOW and job.received_at.tzinfo == UTC


def test_naive_times_are_refused(store):
    with pytest.raises(ValueError, match="aware datetimes only"):
        store.enqueue(event(), datetime(2026, 3, 2, 12, 0))


# --- sync cursors -----------------------------------------------------------------------


def test_sync_cursors_are_kept_per_instance_and_stream(store):
    assert store.get_cursor("zd") is None
    store.save_cursor("zd", "c1", NOW, NOW)
    store.save_cursor("zd", "c2", NOW + timedelta(minutes=5), NOW + timedelta(minutes=5))
    store.save_cursor("fd", None, NOW, NOW, stream="audits")

    cursor = store.get_cursor("zd")
    assert cursor is not None
    assert (cursor.cursor, cursor.since) == ("c2", NOW + timedelta(minutes=5))
    other = store.get_cursor("fd", stream="audits")
    assert other is not None and other.cursor is None
    assert store.get_cursor("fd") is None


# --- connections and outages ------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    with Store(url, busy_timeout=12) as store, store.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert (mode, timeout) == ("wal", 12000)


def test_store_urls_name_a_supported_database():
    assert parse_url("postgresql://u:p@db/escbridge").drivername == "postgresql+psycopg"
    assert parse_url("sqlite:///escbridge.db").drivername == "sqlite"
    with pytest.raises(ValueError, match=r"unsupported store URL mysql://u:\[redacted\]@db/x"):
        parse_url("mysql://u:secret@db/x")


def test_a_postgresql_store_without_its_driver_names_the_extra_to_install(monkeypatch):
    from escbridge.store.database import create_engine

    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails
    with pytest.raises(ValueError) as info:
        create_engine("postgresql://u:secret@db/escbridge")
    assert "needs the PostgreSQL driver, escbridge's [postgres] extra: " in str(info.value)
    assert "pip install 'escbridge[postgres]' (from a checkout: make dist, then " in str(info.value)
    assert "secret" not in str(info.value)


def test_a_database_that_stays_locked_is_reported_unavailable_not_dropped(tmp_path):
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    holder = sqlite3.connect(tmp_path / "escbridge.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Store(url, busy_timeout=0.2) as store, pytest.raises(StoreUnavailableError):
            store.enqueue(event(), NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Store(url) as store:  # once the lock is gone, the same delivery is accepted
        assert store.enqueue(event(), NOW).accepted


def test_an_unreachable_database_is_reported_unavailable_without_its_password(
    db_backend, tmp_path: Path, request
):
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'missing-dir' / 'escbridge.db'}"
    else:
        port = request.getfixturevalue("postgresql_server").port + 1  # nothing listens there
        url = f"postgresql+psycopg://escbridge:topsecret@127.0.0.1:{port}/escbridge"

    with Store(url, busy_timeout=1) as store, pytest.raises(StoreUnavailableError) as raised:
        store.enqueue(event(), NOW)

    assert "topsecret" not in str(raised.value)
    assert "store unavailable" in str(raised.value)


@pytest.mark.postgresql
def test_after_postgresql_drops_its_connections_one_call_fails_then_the_store_recovers(
    postgresql_server,
):
    name = postgresql_server.create_database()
    url = postgresql_server.url(name)
    upgrade(url)
    with Store(url) as store:
        store.enqueue(event("1"), NOW)
        postgresql_server.execute(  # what a restart or a failover does to open connections
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )

        with pytest.raises(StoreUnavailableError):  # answered 503: the sender retries
            store.enqueue(event("2"), NOW)
        assert store.enqueue(event("2"), NOW).accepted
        assert store.job_counts()["pending"] == 2
    postgresql_server.drop_database(name)
