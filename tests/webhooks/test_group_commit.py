"""Group commit at the door: concurrent deliveries of one process share one transaction.

The interleavings are made, not hoped for: the store's first commit blocks until the test
has seen the other deliveries queue behind it, then lets go; every thread is joined with a
generous timeout that only guards against a hang.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest
from escbridge_webhooks.chain import Context, Enqueue, GroupCommit, Reply, WebhookRequest

from escbridge.errors import StoreUnavailableError
from escbridge.model import TicketEvent
from escbridge.store import Enqueued, Store

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GUARD = 30.0  # seconds: a failure guard only


def events(*keys: str) -> list[TicketEvent]:
    return [TicketEvent(instance="eu", ticket_id=k, dedupe_key=k) for k in keys]


class GatedStore:
    """A store whose first commit waits at a gate the test opens; answers every event as new
    (numbered in commit order) unless ``fail`` says otherwise; or passes through to ``real``."""

    def __init__(self, real: Store | None = None) -> None:
        self.real = real
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.commits: list[list[str]] = []
        self.fail: BaseException | None = None
        self.lock_fails: BaseException | None = None  # the writer lock, after the first commit
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        if self.lock_fails is not None and self.commits:
            raise self.lock_fails
        with self.real.writing() if self.real is not None else contextlib.nullcontext():
            yield

    def enqueue_many(self, batch: Sequence[TicketEvent], now: datetime) -> list[Enqueued]:
        with self._lock:
            self.commits.append([e.dedupe_key for e in batch])
            first = len(self.commits) == 1
        if first:
            self.entered.set()
            assert self.gate.wait(GUARD)
        if self.fail is not None and not first:
            raise self.fail
        if self.real is not None:
            return self.real.enqueue_many(batch, now)
        start = sum(len(c) for c in self.commits[:-1])
        return [Enqueued(accepted=True, job_id=start + n) for n in range(1, len(batch) + 1)]


def deliver(
    committer: GroupCommit, keys: Sequence[str], results: dict[str, Reply]
) -> threading.Thread:
    """One delivery through the Enqueue step, in its own thread (as gunicorn runs it)."""
    name = ",".join(keys)

    def run() -> None:
        ctx = Context(WebhookRequest("eu", {}, {}, 0, lambda n: b""), events=events(*keys))
        results[name] = Enqueue(committer, retry_after=5)(ctx)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def until(condition: Callable[[], bool]) -> None:
    """Wait for a state the test's own threads reach (no timing assumption: a guard only)."""
    done = threading.Event()
    for _ in range(int(GUARD * 1000)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("the expected state was never reached")


def first_then_queued(
    store: GatedStore, committer: GroupCommit, later: Sequence[Sequence[str]]
) -> tuple[dict[str, Reply], list[threading.Thread]]:
    """Start one delivery, hold its commit, queue ``later`` behind it, then let go."""
    results: dict[str, Reply] = {}
    threads = [deliver(committer, ["first"], results)]
    assert store.entered.wait(GUARD)
    threads += [deliver(committer, keys, results) for keys in later]
    until(lambda: committer.waiting() == len(later))
    store.gate.set()
    for thread in threads:
        thread.join(GUARD)
        assert not thread.is_alive()
    return results, threads


def test_deliveries_that_queue_behind_a_commit_share_the_next_one() -> None:
    store = GatedStore()
    committer = GroupCommit(store, lambda: NOW)
    later = [["a"], ["b", "c"], ["d"], ["e"]]

    results, _ = first_then_queued(store, committer, later)

    # Two commits: the first alone (no timer waits for company), then all four together.
    assert store.commits[0] == ["first"]
    assert sorted(store.commits[1]) == ["a", "b", "c", "d", "e"] and len(store.commits) == 2
    # Each caller got its own answers, job ids in the order its events were committed.
    batch = store.commits[1]
    for keys in later:
        reply = results[",".join(keys)]
        ids = [batch.index(k) + 2 for k in keys]  # numbered after the first commit's one job
        assert reply.status == 202 and reply.body["event_id"] == ids[0]
        assert reply.body.get("event_ids", ids) == ids
    assert results["first"].status == 202 and results["first"].body["event_id"] == 1


def test_an_outage_answers_every_waiting_delivery_503() -> None:
    store = GatedStore()
    store.fail = StoreUnavailableError("store unavailable: database is locked")
    committer = GroupCommit(store, lambda: NOW)

    results, _ = first_then_queued(store, committer, [["a"], ["b"], ["c"]])

    assert results["first"].status == 202  # its commit went through before the outage
    for key in "abc":
        reply = results[key]
        assert reply.status == 503 and reply.headers == {"Retry-After": "5"}
    assert len(store.commits) == 2  # the three shared the commit that failed


def test_a_writer_lock_that_fails_answers_every_waiting_delivery_503() -> None:
    store = GatedStore()
    store.lock_fails = StoreUnavailableError("store unavailable: cannot lock escbridge.db")
    committer = GroupCommit(store, lambda: NOW)

    results, _ = first_then_queued(store, committer, [["a"], ["b"]])

    assert results["first"].status == 202
    assert results["a"].status == 503 and results["b"].status == 503
    assert store.commits == [["first"]]  # nothing else reached the database
    store.lock_fails = None  # the lock is back: the committer was not left stuck
    assert committer.enqueue_many(events("c"))[0].accepted and committer.waiting() == 0


def test_a_bug_in_the_store_reaches_every_waiting_caller() -> None:
    store = GatedStore()
    store.fail = RuntimeError("bug")
    committer = GroupCommit(store, lambda: NOW)
    raised: list[BaseException] = []

    def call(keys: list[str]) -> None:
        try:
            committer.enqueue_many(events(*keys))
        except RuntimeError as error:
            raised.append(error)

    first = threading.Thread(target=call, args=(["first"],))
    first.start()
    assert store.entered.wait(GUARD)
    others = [threading.Thread(target=call, args=([k],)) for k in "ab"]
    for thread in others:
        thread.start()
    until(lambda: committer.waiting() == 2)
    store.gate.set()
    for thread in [first, *others]:
        thread.join(GUARD)
    assert len(raised) == 2  # answered 500 each by the app, never a 2xx


def test_the_lead_passes_on_so_no_caller_waits_for_later_commits() -> None:
    """The thread that committed returns at once; the next queued delivery leads the next
    commit, so the committer is never stuck behind a caller that has gone."""
    store = GatedStore()
    committer = GroupCommit(store, lambda: NOW)
    results, _ = first_then_queued(store, committer, [["a"]])
    assert set(results) == {"first", "a"}
    # Nothing is running now: a delivery alone is committed at once, by its own thread.
    assert committer.enqueue_many(events("z"))[0].accepted
    assert store.commits[-1] == ["z"] and committer.waiting() == 0


def test_a_large_queue_is_split_at_max_events() -> None:
    store = GatedStore()
    committer = GroupCommit(store, lambda: NOW, max_events=2)
    first_then_queued(store, committer, [["a"], ["b"], ["c"]])
    assert store.commits[0] == ["first"]
    assert sorted(k for c in store.commits[1:] for k in c) == ["a", "b", "c"]
    assert all(len(c) <= 2 for c in store.commits)


# --- on the real stores ----------------------------------------------------------------------


def test_a_shared_commit_on_a_real_store_answers_new_and_duplicate_alike(store: Store) -> None:
    [kept] = store.enqueue_many(events("old"), NOW)
    gated = GatedStore(real=store)
    committer = GroupCommit(gated, lambda: NOW)

    # "x" twice in one shared commit (a redelivery racing the first delivery), and "old".
    results, _ = first_then_queued(gated, committer, [["x"], ["old"], ["y"]])

    assert len(gated.commits) == 2
    assert results["old"].status == 200 and results["old"].body["event_id"] == kept.job_id
    assert results["x"].status == 202 and results["y"].status == 202
    assert results["x"].body["event_id"] != results["y"].body["event_id"]
    jobs = {job.dedupe_key: job for job in store.jobs(limit=None)}
    assert set(jobs) == {"old", "first", "x", "y"}
    assert jobs["x"].id == results["x"].body["event_id"] and jobs["x"].received_at == NOW


def test_a_redelivery_in_the_same_commit_is_a_duplicate_of_the_first(store: Store) -> None:
    gated = GatedStore(real=store)
    committer = GroupCommit(gated, lambda: NOW)
    results: dict[str, Reply] = {}
    first = deliver(committer, ["first"], results)
    assert gated.entered.wait(GUARD)
    one = deliver(committer, ["k"], results)
    until(lambda: committer.waiting() == 1)
    # The same delivery again, under another thread name, queued into the same commit.
    again: list[list[Enqueued]] = []
    thread = threading.Thread(target=lambda: again.append(committer.enqueue_many(events("k"))))
    thread.start()
    until(lambda: committer.waiting() == 2)
    gated.gate.set()
    for t in (first, one, thread):
        t.join(GUARD)
    assert results["k"].status == 202
    assert again == [[Enqueued(accepted=False, job_id=results["k"].body["event_id"])]]
    assert [job.dedupe_key for job in store.jobs(limit=None)].count("k") == 1


@pytest.mark.parametrize("count", [1, 3])
def test_the_receiver_stores_through_its_group_committer(count: int, store: Store) -> None:
    """Receiver wiring: the chain's Enqueue step writes through one GroupCommit per app."""
    from escbridge_webhooks.app import Receiver, ReceiverSettings
    from escbridge_webhooks.metrics import WebhookMetrics

    class Clock:
        clock = staticmethod(lambda: NOW)

    receiver = Receiver(
        connectors={},
        helpdesks={},
        enqueuer=Clock(),
        store=store,
        settings=ReceiverSettings(),
        metrics=WebhookMetrics(),
    )
    enqueue = receiver.steps[-1]
    assert isinstance(enqueue, Enqueue) and enqueue.enqueuer is receiver.committer
    keys = [f"r{n}" for n in range(count)]
    answers = receiver.committer.enqueue_many(events(*keys))
    assert [a.accepted for a in answers] == [True] * count
    assert sorted(job.dedupe_key for job in store.jobs(limit=None)) == keys
