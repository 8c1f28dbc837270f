"""Processing: an event or a ticket becomes one escalation, exactly once in effect.

Every test runs on SQLite and on PostgreSQL, in this process, with a fake helpdesk and a
clock moved by hand. The fault tests with real worker processes and SIGKILL are in
test_processing_faults.py.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from processing_harness import engine, event

from escbridge.connector import ApplyResult
from escbridge.errors import (
    AuthError,
    Conflict,
    RateLimited,
    StoreUnavailableError,
    TransientError,
)
from escbridge.processing import (
    ProcessingConfig,
    Processor,
    backoff_delay,
    classify,
    partly_landed,
    utcnow,
)
from escbridge.store import Store
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

TOKEN = "zd-s3cr3t-api-token-0123456789"


@pytest.fixture
def helpdesk(tmp_path: Path) -> FakeHelpdesk:
    return FakeHelpdesk(tmp_path / "helpdesk.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(store: Store, helpdesk: FakeHelpdesk, clock: FakeClock) -> Callable[..., Processor]:
    """A processor over the test store and helpdesk; keyword arguments go to the connector,
    ``settings`` to the processor."""

    def build(
        settings: ProcessingConfig | None = None, *, wall_clock: bool = False, **connector: Any
    ) -> Processor:
        return Processor(
            store,
            engine(),
            {"fake": FakeConnector(helpdesk, **connector)},
            settings=settings or ProcessingConfig(),
            clock=utcnow if wall_clock else clock,
            rng=random.Random(7),
            secrets=[TOKEN],
            worker_id="test-worker",
        )

    return build


def failing(
    times: int, error: Callable[[], BaseException], op: str = "apply"
) -> Callable[[str, str], None]:
    """A fault that raises ``error()`` on the first ``times`` calls of ``op``."""
    left = [times]

    def fault(name: str, _ticket_id: str) -> None:
        if name == op and left[0] > 0:
            left[0] -= 1
            raise error()

    return fault


def drain(
    processor: Processor,
    clock: FakeClock,
    *,
    step: timedelta = timedelta(hours=1),
    rounds: int = 50,
) -> None:
    """Run the worker until nothing is pending, moving the clock past every backoff."""
    for _ in range(rounds):
        processor.run_once()
        counts = processor.store.job_counts()
        if counts["pending"] == 0 and counts["processing"] == 0:
            return
        clock.advance(seconds=step.total_seconds())
    raise AssertionError(f"inbox not drained: {processor.store.job_counts()}")


# --- the event path -------------------------------------------------------------------


def test_an_event_for_a_matching_ticket_escalates_it_and_records_why(make, helpdesk, store):
    helpdesk.add("1", tags=["vip"])
    processor = make()
    assert processor.enqueue(event("1")).accepted

    report = processor.run_once()

    assert report.outcomes == {"escalated": 1}
    assert helpdesk.levels()["1"] == "l2"
    assert helpdesk.applies() == {"1": 1}
    [record] = store.escalations(instance="fake", ticket_id="1")
    assert (record.from_level, record.to_level, record.rule_id) == ("l1", "l2", "vip")
    assert record.outcome == "applied"
    assert record.to_group == "Senior"
    assert record.reasons  # the engine's explanation is kept
    assert "escbridge_l2" in record.actions.tags_add
    [job] = store.jobs(["done"])
    assert (job.outcome, job.attempts) == ("escalated", 1)
    state = store.ticket_state("fake", "1")
    assert state is not None
    assert (state.level, state.day_count, state.escalation_count) == ("l2", 1, 1)
    assert state.intent is None and state.lock_owner is None


def test_an_event_for_a_ticket_no_rule_matches_changes_nothing(make, helpdesk, store):
    helpdesk.add("2", tags=["general"])
    processor = make()
    processor.enqueue(event("2"))

    assert processor.run_once().outcomes == {"unchanged": 1}
    assert helpdesk.applies() == {}
    assert store.escalations() == []


def test_a_redelivered_event_is_dropped_at_the_door(make, helpdesk, store):
    helpdesk.add("3", tags=["vip"])
    processor = make()

    first = processor.enqueue(event("3", key="zendesk-evt-99"))
    again = processor.enqueue(event("3", key="zendesk-evt-99"))

    assert first.accepted and again.duplicate
    assert again.job_id == first.job_id
    assert store.job_counts()["pending"] == 1


def test_many_events_for_one_ticket_escalate_it_once(make, helpdesk, store, clock):
    helpdesk.add("4", tags=["vip"])
    processor = make()
    for n in range(5):
        processor.enqueue(event("4", key=f"evt-{n}"))
        clock.advance(seconds=1)

    drain(processor, clock, step=timedelta(seconds=1))

    assert helpdesk.applies() == {"4": 1}
    assert len(store.escalations(ticket_id="4")) == 1
    assert store.job_counts() == {"pending": 0, "processing": 0, "done": 5, "failed": 0}


def test_escbridges_own_change_is_not_processed(make, helpdesk, store):
    helpdesk.add("5", tags=["vip"])
    processor = make()
    processor.enqueue(event("5", actor="escbridge"))

    assert processor.run_once().outcomes == {"own_change": 1}
    assert helpdesk.applies() == {}


def test_a_higher_rule_later_escalates_further_and_history_keeps_both(make, helpdesk, store, clock):
    helpdesk.add("6", tags=["vip"])
    processor = make()
    processor.enqueue(event("6", key="a"))
    processor.run_once()
    helpdesk.edit("6", tags=["vip", "escbridge_l2"])
    with helpdesk._tx() as db:
        db.execute("UPDATE tickets SET subject = 'my lawyer will call' WHERE id = '6'")

    clock.advance(minutes=10)  # inside the 30-minute cooldown: held back
    processor.enqueue(event("6", key="b"))
    assert processor.run_once().outcomes == {"unchanged": 1}

    clock.advance(minutes=30)
    processor.enqueue(event("6", key="c"))
    assert processor.run_once().outcomes == {"escalated": 1}
    assert [(e.from_level, e.to_level) for e in store.escalations(ticket_id="6")] == [
        ("l1", "l2"),
        ("l2", "l3"),
    ]
    state = store.ticket_state("fake", "6")
    assert state is not None and state.day_count == 2


# --- the sync path: the same function -----------------------------------------------------


def test_the_sync_path_escalates_a_ticket_it_hands_over(make, helpdesk, store):
    helpdesk.add("7", tags=["vip"])
    processor = make()
    scanned = helpdesk.ticket("7", "fake")

    outcome = processor.process_ticket("fake", scanned)

    assert outcome.status == "escalated"
    assert outcome.escalation is not None and outcome.escalation.job_id is None
    assert helpdesk.applies() == {"7": 1}
    assert processor.process_ticket("fake", "7").status == "unchanged"


def test_a_dry_run_decides_but_writes_nothing(make, helpdesk, store):
    helpdesk.add("8", tags=["vip"])
    processor = make()

    outcome = processor.process_ticket("fake", "8", dry_run=True)

    assert outcome.status == "dry_run"
    assert outcome.decision is not None and outcome.decision.rule_id == "vip"
    assert helpdesk.applies() == {}
    assert store.escalations() == []
    assert store.ticket_state("fake", "8") is None


# --- exactly once, across crashes and concurrent workers ---------------------------------


def test_a_write_that_landed_before_a_timeout_is_recorded_not_reapplied(
    make, helpdesk, store, clock
):
    helpdesk.add("9", tags=["vip"])
    # The helpdesk took the update but the answer was lost: the worker cannot tell.
    lost = iter([TransientError("read timed out")])
    processor = make(land_then_fail=lambda _id: next(lost, None))
    processor.enqueue(event("9"))

    first = processor.run_once()
    assert first.retried == 1
    assert store.escalations() == []
    state = store.ticket_state("fake", "9")
    assert state is not None and state.intent is not None  # the decision in flight is kept

    clock.advance(hours=1)
    second = processor.run_once()

    assert second.outcomes == {"recovered": 1}
    assert helpdesk.applies() == {"9": 1}
    [record] = store.escalations(ticket_id="9")
    assert (record.outcome, record.rule_id, record.to_level) == ("recovered", "vip", "l2")
    assert record.reasons


def test_an_intent_that_never_reached_the_helpdesk_is_decided_again(make, helpdesk, store, clock):
    helpdesk.add("10", tags=["vip"])
    processor = make(fail=failing(1, lambda: TransientError("connection reset")))
    processor.enqueue(event("10"))

    assert processor.run_once().retried == 1
    clock.advance(hours=1)
    assert processor.run_once().outcomes == {"escalated": 1}

    assert helpdesk.applies() == {"10": 1}
    assert [e.outcome for e in store.escalations(ticket_id="10")] == ["applied"]


def test_a_ticket_held_by_another_worker_is_deferred_without_using_an_attempt(
    make, helpdesk, store, clock
):
    helpdesk.add("11", tags=["vip"])
    processor = make()
    processor.enqueue(event("11"))
    other = store.lock_ticket("fake", "11", "other-worker", clock(), timedelta(minutes=5))
    assert other is not None

    assert processor.run_once().deferred == 1
    [job] = store.jobs(["pending"])
    assert job.attempts == 0

    store.unlock(other)
    clock.advance(seconds=5)
    assert processor.run_once().outcomes == {"escalated": 1}


def test_a_concurrent_edit_is_decided_again_on_the_fresh_ticket(make, helpdesk, store, clock):
    helpdesk.add("12", tags=["vip"])

    def human_moves_it_first(name: str, ticket_id: str) -> None:
        if name == "apply" and helpdesk.levels()[ticket_id] is None:
            helpdesk.edit(ticket_id, tags=["vip", "escbridge_l2"], level="l2")

    processor = make(fail=human_moves_it_first)
    processor.enqueue(event("12"))

    assert processor.run_once().outcomes == {"unchanged": 1}
    assert helpdesk.applies() == {}
    assert store.escalations() == []
    state = store.ticket_state("fake", "12")
    assert state is not None and state.intent is None


@pytest.mark.parametrize(
    "answer",
    [
        ApplyResult("14", ok=False, error="conflict", retryable=True, conflict=True),
        Conflict("HTTP 409: ticket 14 changed", status=409),
    ],
    ids=["conflict-past-the-retries", "conflict-raised"],
)
def test_a_conflict_the_connector_cannot_get_past_is_retried_later(
    make, helpdesk, store, clock, monkeypatch, answer
):
    """Whether the connector answers a 409 it could not get past or raises it, the event is
    retried later, never lost."""
    helpdesk.add("14", tags=["vip"])
    processor = make()
    connector = processor.connectors["fake"]
    real = connector.apply
    first = [answer]

    def apply(ticket, actions, *, on_conflict=None):
        if first:
            given = first.pop()
            if isinstance(given, BaseException):
                raise given
            return given
        return real(ticket, actions, on_conflict=on_conflict)

    monkeypatch.setattr(connector, "apply", apply)
    processor.enqueue(event("14"))

    assert processor.run_once().retried == 1
    [job] = store.jobs(["pending"])
    assert "onflict" in (job.last_error or "")
    clock.advance(hours=1)
    assert processor.run_once().outcomes == {"escalated": 1}
    assert helpdesk.applies() == {"14": 1}


def test_a_job_whose_worker_died_comes_back_when_its_lease_ends(make, helpdesk, store, clock):
    helpdesk.add("13", tags=["vip"])
    processor = make(settings=ProcessingConfig(lease_seconds=60))
    processor.enqueue(event("13"))
    [held] = store.claim("dead-worker", clock(), lease=timedelta(seconds=60))

    assert processor.run_once().claimed == 0  # still leased
    clock.advance(seconds=61)
    report = processor.run_once()

    assert report.outcomes == {"escalated": 1}
    [job] = store.jobs(["done"])
    assert job.id == held.id and job.attempts == 2
    assert not store.complete(held, clock(), "escalated")  # the dead worker's claim is void


def test_threads_sharing_a_processor_escalate_each_ticket_once(make, helpdesk, store):
    ids = [f"t{n}" for n in range(40)]
    helpdesk.add_many(ids, tags=["vip"])
    # The wall clock: a ticket busy in another thread is deferred for a second or two.
    processor = make(settings=ProcessingConfig(batch_size=3, poll_seconds=0.01), wall_clock=True)
    for n in range(3):  # each ticket's events spread over batches that threads take at once
        for ticket_id in ids:
            processor.enqueue(event(ticket_id, key=f"{ticket_id}-{n}"))

    report = processor.run(concurrency=4, drain=True)

    assert helpdesk.applies() == dict.fromkeys(ids, 1)
    assert len(store.escalations()) == len(ids)
    assert report.done == 120
    assert store.job_counts() == {"pending": 0, "processing": 0, "done": 120, "failed": 0}


# --- retries and the dead-letter list --------------------------------------------------------


def test_a_5xx_storm_is_retried_with_growing_backoff_until_the_helpdesk_recovers(
    make, helpdesk, store, clock
):
    helpdesk.add("20", tags=["vip"])
    processor = make(
        fail=failing(
            4, lambda: TransientError("HTTP 503: Service Unavailable", status=503), op="fetch"
        )
    )
    processor.enqueue(event("20"))
    delays = []
    for _ in range(4):
        processor.run_once()
        [job] = store.jobs(["pending"])
        delays.append((job.next_attempt_at - clock()).total_seconds())
        assert "503" in (job.last_error or "")
        clock.now = job.next_attempt_at

    assert processor.run_once().outcomes == {"escalated": 1}
    settings = ProcessingConfig()
    for attempt, delay in enumerate(delays, start=1):
        ceiling = settings.backoff_seconds * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling
    [job] = store.jobs(["done"])
    assert job.attempts == 5


def test_a_rate_limit_is_not_retried_before_retry_after(make, helpdesk, store, clock):
    helpdesk.add("21", tags=["vip"])
    processor = make(fail=failing(1, lambda: RateLimited("HTTP 429", retry_after=120, status=429)))
    processor.enqueue(event("21"))

    processor.run_once()

    [job] = store.jobs(["pending"])
    assert job.next_attempt_at >= clock() + timedelta(seconds=120)


def test_a_permanent_failure_is_dead_lettered_with_a_redacted_reason_and_can_be_replayed(
    make, helpdesk, store, clock
):
    helpdesk.add("22", tags=["vip"])
    broken = [True]

    def credentials_revoked(name: str, _ticket_id: str) -> None:
        if broken[0]:
            raise AuthError(
                f"HTTP 401: invalid token {TOKEN} (Authorization: Bearer {TOKEN})", status=401
            )

    processor = make(fail=credentials_revoked)
    processor.enqueue(event("22"))

    assert processor.run_once().dead == 1
    [job] = store.jobs(["failed"])
    assert job.attempts == 1  # not retried: time cannot fix a revoked token
    assert "AuthError" in (job.last_error or "") and "401" in (job.last_error or "")
    assert TOKEN not in (job.last_error or "")

    broken[0] = False  # the admin fixed the credentials
    assert store.retry_jobs([job.id], clock()) == [job.id]
    assert processor.run_once().outcomes == {"escalated": 1}
    assert helpdesk.applies() == {"22": 1}


def test_a_failure_that_never_clears_is_dead_lettered_after_max_attempts(
    make, helpdesk, store, clock
):
    helpdesk.add("23", tags=["vip"])
    processor = make(
        settings=ProcessingConfig(max_attempts=3),
        fail=failing(100, lambda: TransientError("connect timeout")),
    )
    processor.enqueue(event("23"))

    drain(processor, clock)

    [job] = store.jobs(["failed"])
    assert job.attempts == 3
    assert (job.last_error or "").startswith("gave up after 3 attempts")
    assert helpdesk.applies() == {}


def test_an_event_for_an_unknown_instance_is_dead_lettered_saying_so(make, store):
    processor = make()
    processor.enqueue(event("1", instance="not-configured"))

    assert processor.run_once().dead == 1
    [job] = store.jobs(["failed"])
    assert "no connector for instance 'not-configured'" in (job.last_error or "")


def test_a_missing_ticket_is_dead_lettered(make, store):
    processor = make()
    processor.enqueue(event("does-not-exist"))

    assert processor.run_once().dead == 1
    [job] = store.jobs(["failed"])
    assert "NotFound" in (job.last_error or "")


def test_errors_are_classified_by_whether_time_can_cure_them():
    assert classify(TransientError("503")).retryable
    assert classify(StoreUnavailableError("db down")).retryable
    assert classify(RuntimeError("unexpected")).retryable  # retried, then dead-lettered
    assert classify(RateLimited("429", retry_after=30)).min_delay == 30
    assert not classify(AuthError("401")).retryable


def test_backoff_doubles_up_to_its_cap_with_jitter():
    settings = ProcessingConfig(backoff_seconds=2, max_backoff_seconds=60)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60)]:
        delays = {backoff_delay(attempt, settings, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered: workers retrying together spread out


# --- the database going away ---------------------------------------------------------------


def test_an_event_the_database_cannot_take_raises_an_error_the_receiver_answers_503(
    db_backend, tmp_path, helpdesk, clock, request
):
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'escbridge.db'}"
    else:
        server = request.getfixturevalue("postgresql_server")
        url = f"postgresql+psycopg://escbridge:pw@127.0.0.1:{server.port + 1}/escbridge"
    with Store(url, busy_timeout=1, check_schema=False) as down:
        processor = Processor(down, engine(), {"fake": FakeConnector(helpdesk)}, clock=clock)
        with pytest.raises(StoreUnavailableError) as raised:
            processor.enqueue(event("1"))
    assert "pw" not in str(raised.value)


def test_a_worker_outlives_a_database_outage(make, helpdesk, store, clock, monkeypatch):
    helpdesk.add("30", tags=["vip"])
    processor = make(settings=ProcessingConfig(poll_seconds=0.01))
    processor.enqueue(event("30"))
    real_claim = store.claim
    outages = [2]

    def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        if outages[0]:
            outages[0] -= 1
            raise StoreUnavailableError("store unavailable: connection refused")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim", flaky_claim)
    stop = threading.Event()
    report = processor.run(stop=stop, drain=True)

    assert outages == [0]
    assert report.outcomes == {"escalated": 1}


def test_partly_landed_is_the_group_or_tags_of_an_intent_without_its_marker() -> None:
    from datetime import UTC, datetime

    from escbridge.model import Actions, Ticket

    at = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    actions = Actions(level="l2", group="Tier 2", tags_add=("escalated",))

    def ticket(**fields: Any) -> Ticket:
        return Ticket(id="1", created_at=at, updated_at=at, **fields)

    assert partly_landed(ticket(group="tier 2"), actions)  # the group moved, the marker did not
    assert partly_landed(ticket(group="Tier 1", tags=frozenset({"escalated"})), actions)
    assert not partly_landed(ticket(group="Tier 1"), actions)  # nothing landed
    assert not partly_landed(ticket(group="Tier 2", level="l2"), actions)  # all of it landed
    assert not partly_landed(ticket(group="Tier 2"), Actions(group="Tier 2"))  # no marker to miss


@pytest.mark.parametrize("skipped", [False, True], ids=["found", "found-nothing-to-write"])
def test_an_escalation_the_connector_found_on_the_ticket_is_recorded_as_recovered(
    make, helpdesk, store, clock, monkeypatch, skipped
):
    """A write whose answer was lost, found on the ticket by the connector (``recovered``):
    recorded — an audit row, seen by the cooldown and the daily cap — never "unchanged"."""
    helpdesk.add("15", tags=["vip"])
    processor = make()
    connector = processor.connectors["fake"]
    real = connector.apply

    def apply(ticket, actions, *, on_conflict=None):
        real(ticket, actions, on_conflict=on_conflict)  # it landed; the answer was lost
        return ApplyResult(ticket.id, ok=True, actions=actions, recovered=True, skipped=skipped)

    monkeypatch.setattr(connector, "apply", apply)
    processor.enqueue(event("15"))

    assert processor.run_once().outcomes == {"recovered": 1}
    [record] = store.escalations(ticket_id="15")
    assert (record.outcome, record.rule_id, record.to_level) == ("recovered", "vip", "l2")
    state = store.ticket_state("fake", "15")
    assert state is not None and state.intent is None
    assert helpdesk.applies() == {"15": 1}
