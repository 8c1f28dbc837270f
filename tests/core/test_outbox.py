"""The notification outbox: written with the escalation, delivered exactly once in effect.

Every test runs on SQLite and on PostgreSQL (the ``store`` fixture), with a fake helpdesk, a
clock moved by hand and HTTP answered by ``responses``: what a user checks is what the
receiving end got, how often, and what `escbridge jobs` would show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from processing_harness import MATRIX, event

from escbridge.errors import StoreUnavailableError
from escbridge.matrix import parse_matrix
from escbridge.notify.deliver import Notifier
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor
from escbridge.store import Store, TicketWrites
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

HOOK = "http://127.0.0.1:8765/escbridge"
SLACK = "http://127.0.0.1:8766/services/T000/B000/XXXX"
SECRET = "whsec-test-0123456789abcdef"
ENV = {"HOOK_SECRET": SECRET, "SLACK_URL": SLACK, "SLACK_TOKEN": "xoxb-test-token-0123456789"}

NOTIFY = f"""\
notify:
  targets:
    audit:
      webhook: {{url: "{HOOK}", secret: "${{HOOK_SECRET}}"}}
    leads:
      slack: {{webhook_url: "${{SLACK_URL}}"}}
    digest-hook:
      webhook: {{url: "{HOOK}/digest", secret: "${{HOOK_SECRET}}"}}
      digest: 15m
"""


def matrix_text(l2: str = "[audit, leads]", l3: str = "[digest-hook]") -> str:
    text = MATRIX.replace(
        '    groups: {"*": Senior}\n', f'    groups: {{"*": Senior}}\n    notify: {l2}\n'
    )
    text = text.replace(
        '    groups: {"*": Managers}\n', f'    groups: {{"*": Managers}}\n    notify: {l3}\n'
    )
    return text + NOTIFY


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def helpdesk(tmp_path: Path) -> FakeHelpdesk:
    return FakeHelpdesk(tmp_path / "helpdesk.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def make(store: Store, helpdesk: FakeHelpdesk, clock: FakeClock) -> Callable[..., Processor]:
    def build(text: str | None = None, **notifier: Any) -> Processor:
        matrix = parse_matrix(text or matrix_text(), "matrix.yaml")
        settings: dict[str, Any] = {
            "environ": ENV,
            "backoff": lambda attempt: 60.0 * attempt,
            "clock": clock,
            **notifier,
        }
        note = Notifier(store, matrix.notify, **settings)
        return Processor(
            store,
            Engine(matrix),
            {"fake": FakeConnector(helpdesk)},
            settings=ProcessingConfig(),
            clock=clock,
            rng=random.Random(7),
            worker_id="test-worker",
            notifier=note,
        )

    return build


def deliver(processor: Processor) -> Any:
    report = processor.notify_once()
    assert report is not None
    return report


def bodies(http: responses.RequestsMock, url: str) -> list[dict[str, Any]]:
    return [
        json.loads(call.request.body or b"{}") for call in http.calls if call.request.url == url
    ]


# --- written with the escalation -----------------------------------------------------------


def test_an_escalation_writes_one_notification_per_target_of_its_level(make, helpdesk, store):
    helpdesk.add("1", tags=["vip"], subject="Cannot log in")
    processor = make()
    processor.enqueue(event("1"))

    assert processor.run_once().outcomes == {"escalated": 1}

    [escalation] = store.escalations()
    rows = store.notifications(["pending"])
    assert sorted(row.target for row in rows) == ["audit", "leads"]
    for row in rows:
        assert row.escalation_id == escalation.id
        assert row.context["ticket_id"] == "1"
        assert row.context["subject"] == "Cannot log in"
        assert (row.context["from_level"], row.context["to_level"]) == ("l1", "l2")
        assert row.context["rule_id"] == "vip"


def test_a_record_that_fails_writes_neither_the_escalation_nor_its_notifications(
    make, helpdesk, store, monkeypatch
):
    helpdesk.add("1", tags=["vip"])
    processor = make()
    processor.enqueue(event("1"))

    def outage(self: TicketWrites, *_: Any) -> None:
        raise StoreUnavailableError("the database went away mid-transaction")

    # The shadow is the record transaction's last write: it fails after the rows were added.
    monkeypatch.setattr(TicketWrites, "save_shadows", outage)
    report = processor.run_once()

    assert report.retried == 1
    assert store.escalations() == []
    assert store.notification_counts()["pending"] == 0


def test_a_worker_that_dies_right_after_the_record_leaves_the_notifications_to_the_next(
    make, helpdesk, store, http
):
    helpdesk.add("1", tags=["vip"])
    make().enqueue(event("1"))
    make().run_once()  # recorded; this "process" ends before delivering anything
    http.post(HOOK, status=200)
    http.post(SLACK, status=200, body="ok")

    report = deliver(make())  # a new worker

    assert (report.sent, report.failed, report.unknown) == (2, 0, 0)
    assert len(bodies(http, HOOK)) == 1 and len(bodies(http, SLACK)) == 1
    assert deliver(make()).messages == 0  # nothing is sent twice
    assert store.notification_counts()["sent"] == 2


# --- the signed webhook ------------------------------------------------------------------


def test_the_webhook_is_signed_over_timestamp_and_body(make, helpdesk, clock, http):
    helpdesk.add("1", tags=["vip"])
    processor = make()
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(HOOK, status=204)
    http.post(SLACK, status=200, body="ok")

    deliver(processor)

    [call] = [c for c in http.calls if c.request.url == HOOK]
    headers = call.request.headers
    raw = call.request.body
    assert isinstance(raw, bytes)
    timestamp = headers["X-Escbridge-Timestamp"]
    assert int(timestamp) == int(clock().timestamp())
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    assert headers["X-Escbridge-Signature"] == f"v1={expected.hexdigest()}"
    body = json.loads(raw)
    assert body["type"] == "escalation"
    assert headers["X-Escbridge-Delivery"] == str(body["id"])
    assert body["escalations"][0]["ticket_id"] == "1"


def test_an_unanswered_webhook_is_sent_again_with_the_same_delivery_id(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[audit]"))
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(HOOK, body=requests.ReadTimeout("no answer"))

    first = deliver(processor)
    assert (first.sent, first.unknown, first.retried) == (0, 0, 1)
    assert deliver(processor).messages == 0  # kept until its backoff has passed

    http.replace(responses.POST, HOOK, status=200)
    clock.advance(seconds=61)
    second = deliver(processor)

    assert second.sent == 1
    deliveries = [c.request.headers["X-Escbridge-Delivery"] for c in http.calls]
    assert len(deliveries) == 2 and deliveries[0] == deliveries[1]
    assert store.notification_counts()["sent"] == 1


# --- retries, dead letters, permanent refusals ----------------------------------------------


def test_a_503_is_retried_after_a_backoff_then_dead_lettered_and_replayable(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[leads]"), max_attempts=3)
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(SLACK, status=503, headers={"Retry-After": "120"})

    assert deliver(processor).retried == 1
    [row] = store.notifications(["pending"])
    assert row.not_before == clock() + timedelta(seconds=120)  # Retry-After beats the backoff
    assert "503" in (row.last_error or "")
    for _ in range(2):
        clock.advance(seconds=600)
        deliver(processor)

    [dead] = store.notifications(["failed"])
    assert dead.attempts == 3 and "gave up after 3 attempts" in (dead.last_error or "")
    assert len(http.calls) == 3

    assert store.replay_notifications([dead.id], clock()) == [dead.id]
    http.replace(responses.POST, SLACK, status=200, body="ok")
    assert deliver(processor).sent == 1


def test_a_4xx_fails_at_once_with_the_reason(make, helpdesk, http, store):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[leads]"))
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(SLACK, status=404, body="channel_not_found")

    assert deliver(processor).failed == 1
    [row] = store.notifications(["failed"])
    assert row.attempts == 1
    assert "404" in (row.last_error or "") and "channel_not_found" in (row.last_error or "")
    assert SLACK not in (row.last_error or "")  # the webhook URL is the credential


def test_a_lost_answer_from_a_slack_webhook_is_flagged_never_resent(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[leads]"))
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(SLACK, status=502)

    assert deliver(processor).unknown == 1
    clock.advance(hours=2)
    assert deliver(processor).messages == 0
    assert len(http.calls) == 1
    [row] = store.notifications(["unknown"])
    assert "502" in (row.last_error or "")


# --- a worker that dies mid-send ----------------------------------------------------------


def _die_mid_send(store: Store, target: str, clock: FakeClock) -> int:
    """Claim the next message of ``target`` as a worker that is then killed (nothing settled)."""
    held = store.claim_notifications(target, "dead-worker", clock(), timedelta(minutes=2))
    assert held is not None
    return held.delivery_id


def test_a_stale_sending_webhook_row_is_sent_again_the_slack_webhook_one_flagged(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"])
    processor = make()
    processor.enqueue(event("1"))
    processor.run_once()
    hook_id = _die_mid_send(store, "audit", clock)
    _die_mid_send(store, "leads", clock)
    http.post(HOOK, status=200)
    http.post(SLACK, status=200, body="ok")

    assert deliver(processor).messages == 0  # the leases have not run out yet
    clock.advance(minutes=3)
    report = deliver(processor)

    assert (report.sent, report.unknown) == (1, 1)
    [call] = http.calls
    assert call.request.url == HOOK
    assert call.request.headers["X-Escbridge-Delivery"] == str(hook_id)
    [unknown] = store.notifications(["unknown"])
    assert unknown.target == "leads" and "stopped while sending" in (unknown.last_error or "")


def test_a_stale_slack_bot_message_is_looked_for_before_it_is_posted(
    make, helpdesk, clock, http, store
):
    text = matrix_text(l2="[bot]").replace(
        "    leads:\n",
        '    bot:\n      slack: {token: "${SLACK_TOKEN}", channel: C0123456789,'
        ' api_url: "http://127.0.0.1:8767/api"}\n    leads:\n',
    )
    helpdesk.add("1", tags=["vip"])
    helpdesk.add("2", tags=["vip"])
    processor = make(text=text)
    processor.enqueue(event("1"))
    processor.enqueue(event("2"))
    processor.run_once()
    first = _die_mid_send(store, "bot", clock)
    second = _die_mid_send(store, "bot", clock)
    history = "http://127.0.0.1:8767/api/conversations.history"
    posted = {"event_type": "escbridge_notification", "event_payload": {"id": str(first)}}
    http.get(history, json={"ok": True, "messages": [{"ts": "1.0", "metadata": posted}]})
    http.post("http://127.0.0.1:8767/api/chat.postMessage", json={"ok": True, "ts": "2.0"})

    clock.advance(minutes=3)
    report = deliver(processor)

    assert report.sent == 2
    posts = [c for c in http.calls if c.request.method == "POST"]
    assert len(posts) == 1  # the first was found in the channel; only the second is posted
    body = json.loads(posts[0].request.body or b"{}")
    assert body["channel"] == "C0123456789"
    assert body["metadata"]["event_payload"]["id"] == str(second)


# --- digests ---------------------------------------------------------------------------


def test_a_digest_target_sends_the_escalations_of_its_window_as_one_message(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"], subject="lawyer letter")
    helpdesk.add("2", subject="my lawyer called")
    processor = make()
    processor.enqueue(event("1", key="a"))
    processor.enqueue(event("2", key="b"))
    processor.run_once()
    rows = store.notifications(["pending"])
    digest_rows = [row for row in rows if row.target == "digest-hook"]
    assert len(digest_rows) == 2
    assert {row.not_before for row in digest_rows} == {clock() + timedelta(minutes=15)}
    http.post(HOOK, status=200)
    http.post(SLACK, status=200, body="ok")
    http.post(f"{HOOK}/digest", status=200)

    deliver(processor)
    assert bodies(http, f"{HOOK}/digest") == []
    clock.advance(minutes=15)
    deliver(processor)

    [digest] = bodies(http, f"{HOOK}/digest")
    assert digest["type"] == "digest"
    assert sorted(e["ticket_id"] for e in digest["escalations"]) == ["1", "2"]
    sent = [row for row in store.notifications(["sent"]) if row.target == "digest-hook"]
    assert {row.digest_of for row in sent} == {min(row.id for row in sent)}


def test_rows_of_a_target_no_longer_in_the_matrix_fail_saying_so(make, helpdesk, store):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[audit]"))
    processor.enqueue(event("1"))
    processor.run_once()

    later = make(
        text=matrix_text(l2="[leads]").replace("    audit:\n      webhook", "    x:\n      webhook")
    )
    assert deliver(later).failed == 1
    [row] = store.notifications(["failed"])
    assert "no longer in the matrix" in (row.last_error or "")


def test_rows_left_by_a_matrix_whose_notify_section_was_removed_are_settled(
    make, helpdesk, store, clock
):
    """A worker whose matrix names no target at all still has a notifier: what an earlier
    matrix queued is settled (failed, saying why), not left waiting for ever."""
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[audit]"))
    processor.enqueue(event("1"))
    processor.run_once()
    assert store.notification_counts()["pending"] == 1

    later = Processor(
        store,
        Engine(parse_matrix(MATRIX, "matrix.yaml")),  # no notify: section at all
        {"fake": FakeConnector(helpdesk)},
        settings=ProcessingConfig(),
        clock=clock,
        rng=random.Random(7),
        worker_id="test-worker",
    )
    assert deliver(later).failed == 1
    [row] = store.notifications(["failed"])
    assert "no longer in the matrix" in (row.last_error or "")


# --- quiet hours ---------------------------------------------------------------------------


def quiet(text: str, window: str) -> str:
    return text.replace(
        '      slack: {webhook_url: "${SLACK_URL}"}\n',
        '      slack: {webhook_url: "${SLACK_URL}"}\n'
        f"      quiet_hours: {{{window}, timezone: UTC}}\n",
    )


def test_a_notification_made_in_quiet_hours_waits_for_their_end(make, helpdesk, clock, http, store):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=quiet(matrix_text(l2="[leads]"), 'from: "11:00", to: "13:00"'))
    processor.enqueue(event("1"))
    processor.run_once()  # at 12:00
    http.post(SLACK, status=200, body="ok")

    [row] = store.notifications(["pending"])
    assert row.not_before == clock().replace(hour=13, minute=0)
    assert deliver(processor).messages == 0
    clock.advance(hours=1)
    assert deliver(processor).sent == 1


def test_quiet_hours_are_checked_again_when_the_notification_is_due(
    make, helpdesk, clock, http, store
):
    helpdesk.add("1", tags=["vip"])
    processor = make(text=matrix_text(l2="[leads]"))
    processor.enqueue(event("1"))
    processor.run_once()  # due at once (12:00) ...
    http.post(SLACK, status=200, body="ok")

    # ... but the matrix the next worker runs has quiet hours from 12:00 on
    later = make(text=quiet(matrix_text(l2="[leads]"), 'from: "12:00", to: "14:00"'))
    report = deliver(later)

    assert (report.messages, report.postponed) == (0, 1)
    [row] = store.notifications(["pending"])
    assert row.not_before == clock().replace(hour=14, minute=0)
    assert len(http.calls) == 0


# --- the worker loop -----------------------------------------------------------------------


def test_a_draining_worker_delivers_the_notifications_of_what_it_escalated(
    make, helpdesk, http, store
):
    helpdesk.add_many([str(i) for i in range(5)], tags=["vip"])
    processor = make(text=matrix_text(l2="[audit]"))
    for i in range(5):
        processor.enqueue(event(str(i)))
    http.post(HOOK, status=200)

    processor.run(drain=True)

    tickets = sorted(b["escalations"][0]["ticket_id"] for b in bodies(http, HOOK))
    assert tickets == ["0", "1", "2", "3", "4"]
    assert store.notification_counts()["sent"] == 5


def test_two_notifiers_at_once_send_each_notification_once(make, helpdesk, http, store):
    helpdesk.add_many([str(i) for i in range(20)], tags=["vip"])
    processor = make(text=matrix_text(l2="[audit]"))
    for i in range(20):
        processor.enqueue(event(str(i)))
    while processor.run_once().claimed:
        pass
    http.post(HOOK, status=200)
    first, second = make(text=matrix_text(l2="[audit]")), make(text=matrix_text(l2="[audit]"))
    threads = [
        threading.Thread(target=lambda p=p, w=w: p.notifier.run_once(w, p.clock()))
        for p, w in ((first, "w1"), (second, "w2"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    deliveries = [c.request.headers["X-Escbridge-Delivery"] for c in http.calls]
    assert len(deliveries) == 20 and len(set(deliveries)) == 20
    assert store.notification_counts()["sent"] == 20


def test_the_ticket_history_shows_who_was_told_and_what_failed(make, helpdesk, http, store):
    from escbridge.cli.history import format_history
    from escbridge.store.history import ticket_history

    helpdesk.add("1", tags=["vip"])
    processor = make()
    processor.enqueue(event("1"))
    processor.run_once()
    http.post(HOOK, status=200)
    http.post(SLACK, status=410, body="channel_is_archived")
    deliver(processor)

    found = ticket_history(store, "fake", "1")
    text = format_history(found, found.notifications[0].created_at)

    audit, leads = sorted(found.notifications, key=lambda n: n.target)
    assert f"notification #{audit.id} to audit sent" in text
    assert f"notification #{leads.id} to leads failed after 1 attempt" in text
    assert f"`escbridge jobs --replay-notification {leads.id}`" in text
    assert "channel_is_archived" in text


# --- found by the review of delivery (V1) --------------------------------------------------


def _escalate(processor: Processor, helpdesk: FakeHelpdesk, count: int) -> None:
    for i in range(count):
        helpdesk.add(str(i), tags=["vip"])
        processor.enqueue(event(str(i)))
    while processor.run_once().claimed:
        pass


def test_a_long_pass_counts_each_lease_from_its_own_claim(make, helpdesk, clock, http, store):
    """Sends take time: the second message of a pass is claimed minutes after the pass began,
    and a second worker looking meanwhile must not find it stale and send it again."""
    first = make(text=matrix_text(l2="[audit]"), lease=timedelta(minutes=3))
    other = make(text=matrix_text(l2="[audit]"), lease=timedelta(minutes=3))
    _escalate(first, helpdesk, 3)
    deliveries: list[str] = []
    looking: list[bool] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        deliveries.append(request.headers["X-Escbridge-Delivery"])
        if looking:  # the second worker's own sends are quick
            return 200, {}, ""
        clock.advance(minutes=2)  # the first worker's: slow (a receiver under load)
        if len(deliveries) == 2:  # meanwhile a second worker looks at the outbox
            assert other.notifier is not None
            looking.append(True)
            other.notifier.run_once("w2", clock())
            looking.clear()
        return 200, {}, ""

    http.add_callback(responses.POST, HOOK, callback=answer)
    assert first.notifier is not None
    first.notifier.run_once("w1", clock())

    assert sorted(deliveries) == sorted(set(deliveries)) and len(deliveries) == 3
    assert store.notification_counts()["sent"] == 3


def test_a_claim_lasts_as_long_as_its_send_can_take(make, helpdesk, clock, http, store):
    """A short ``lease_seconds`` must not let a second worker take over a send still waiting
    for its answer (a webhook's: up to the connect and read timeouts)."""
    first = make(text=matrix_text(l2="[audit]"), lease=timedelta(seconds=10))
    other = make(text=matrix_text(l2="[audit]"), lease=timedelta(seconds=10))
    _escalate(first, helpdesk, 1)
    deliveries: list[str] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        deliveries.append(request.headers["X-Escbridge-Delivery"])
        clock.advance(seconds=19)  # answered just before the read timeout (20 s)
        if len(deliveries) == 1:
            assert other.notifier is not None
            other.notifier.run_once("w2", clock())
        return 200, {}, ""

    http.add_callback(responses.POST, HOOK, callback=answer)
    assert first.notifier is not None
    report = first.notifier.run_once("w1", clock())

    assert len(deliveries) == 1 and report.sent == 1
    assert store.notification_counts()["sent"] == 1


def test_the_lease_covers_every_step_of_a_slow_smtp_conversation(store):
    from escbridge.notify import send as senders
    from escbridge.notify.deliver import longest_send

    text = matrix_text().replace(
        "    leads:\n",
        "    mail:\n      email: {host: 127.0.0.1, security: none,"
        " from: a@example.com, to: [b@example.com, c@example.com]}\n    leads:\n",
    )
    matrix = parse_matrix(text, "matrix.yaml")
    notifier = Notifier(store, matrix.notify, environ=ENV, lease=timedelta(seconds=10))

    steps = 14  # connect … QUIT, two recipients
    assert longest_send(matrix.notify["mail"]) >= timedelta(seconds=steps * senders.READ_TIMEOUT)
    assert notifier.lease_for(matrix.notify["mail"]) > longest_send(matrix.notify["mail"])
    assert notifier.lease_for(matrix.notify["audit"]) > timedelta(
        seconds=senders.CONNECT_TIMEOUT + senders.READ_TIMEOUT
    )


def test_a_stale_claim_whose_target_left_the_matrix_is_flagged_not_failed(
    make, helpdesk, clock, store
):
    """It may have gone out: `failed` would let a replay of every failed one send it again."""
    processor = make()
    _escalate(processor, helpdesk, 1)
    _die_mid_send(store, "leads", clock)
    gone = make(text=matrix_text(l2="[audit]").replace("    leads:\n", "    other:\n"))

    clock.advance(minutes=3)
    deliver(gone)

    [row] = [row for row in store.notifications(["unknown"]) if row.target == "leads"]
    assert "no longer in the matrix" in (row.last_error or "")
    assert "may have gone out" in (row.last_error or "")
    assert row.id not in store.replay_notifications(None, clock())


def test_a_stale_claim_whose_secret_is_unset_now_is_flagged_not_failed(
    make, helpdesk, clock, http, store
):
    processor = make()
    _escalate(processor, helpdesk, 1)
    _die_mid_send(store, "leads", clock)
    http.post(HOOK, status=200)
    later = make(environ={"HOOK_SECRET": SECRET})  # SLACK_URL no longer set

    clock.advance(minutes=3)
    deliver(later)

    [row] = store.notifications(["unknown"])
    assert row.target == "leads" and "SLACK_URL" in (row.last_error or "")
    assert store.replay_notifications(None, clock()) == []


@pytest.mark.parametrize(
    "asked", ["86400", "1e300", "inf", "Wed, 21 Oct 2099 07:28:00 GMT"], ids=str
)
def test_a_huge_retry_after_waits_an_hour_at_most(make, helpdesk, clock, http, store, asked):
    processor = make(text=matrix_text(l2="[leads]"))
    _escalate(processor, helpdesk, 1)
    http.post(SLACK, status=429, headers={"Retry-After": asked})

    assert deliver(processor).retried == 1

    [row] = store.notifications(["pending"])
    assert row.not_before == clock() + timedelta(hours=1)
    assert "429" in (row.last_error or "")


@pytest.mark.parametrize("stale", [False, True], ids=["due", "stale"])
def test_a_digest_is_never_split_by_a_row_another_claim_is_writing(
    make, helpdesk, clock, store, store_url, stale
):
    """PostgreSQL: while another transaction holds one row of a digest (a concurrent claim
    between its SELECT and its UPDATE), a claim must not take the rest as a message of its
    own — that would tell some escalations in two messages (a stale claim's rows resent
    under another delivery id). It waits, then finds the digest taken. (SQLite's write
    transaction holds the whole database: one claimer at a time by construction.)"""
    if not store_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite writers hold the whole database")
    processor = make(text=matrix_text(l2="[digest-hook]"))
    _escalate(processor, helpdesk, 3)
    clock.advance(minutes=15)
    lease = timedelta(minutes=2)
    if stale:  # one message of three rows, its worker dead; now its lease has run out
        held = store.claim_notifications("digest-hook", "dead", clock(), lease, digest=True)
        assert held is not None and len(held.rows) == 3
        clock.advance(minutes=3)
    ids = sorted(row.id for row in store.notifications(["pending", "sending"], limit=None))
    engine = sa.create_engine(store_url)
    claimed: list[Any] = []
    try:
        with engine.connect() as other, engine.connect() as watch:
            other.execute(sa.text("BEGIN"))
            other.execute(
                sa.text("SELECT id FROM notifications WHERE id = :id FOR UPDATE"), {"id": ids[0]}
            )
            claimer = threading.Thread(
                target=lambda: claimed.append(
                    store.claim_notifications("digest-hook", "w2", clock(), lease, digest=True)
                )
            )
            claimer.start()
            waiting = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            deadline = time.monotonic() + 30
            while claimer.is_alive() and time.monotonic() < deadline:
                if watch.execute(waiting).scalar():
                    break  # the claim waits for the row: now the other claim completes
                watch.rollback()
                time.sleep(0.01)
            other.execute(
                sa.text(
                    "UPDATE notifications SET state = 'sending', claimed_by = 'w1#x',"
                    " lease_until = :until WHERE id = ANY(:ids)"
                ),
                {"until": clock() + lease, "ids": ids},
            )
            other.execute(sa.text("COMMIT"))
            claimer.join(timeout=30)
    finally:
        engine.dispose()

    assert not claimer.is_alive()
    [got] = claimed
    assert got is None or sorted(got.ids) == ids  # the whole message, or none of it


def test_an_escalation_recorded_while_its_digest_is_sent_goes_in_the_next_one(
    make, helpdesk, clock, http, store
):
    """Never lost, never in two messages: the digest under way keeps the rows it claimed."""
    processor = make(text=matrix_text(l2="[digest-hook]"))
    _escalate(processor, helpdesk, 2)
    clock.advance(minutes=15)
    messages: list[dict[str, Any]] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        messages.append(json.loads(request.body or b"{}"))
        if len(messages) == 1:  # meanwhile a worker records a third escalation
            helpdesk.add("late", tags=["vip"])
            processor.enqueue(event("late"))
            processor.run_once()
        return 200, {}, ""

    http.add_callback(responses.POST, f"{HOOK}/digest", callback=answer)
    assert deliver(processor).sent == 1
    assert deliver(processor).messages == 0  # the late one opened a window of its own
    clock.advance(minutes=15)
    assert deliver(processor).sent == 1

    told = [[e["ticket_id"] for e in m["escalations"]] for m in messages]
    assert sorted(told[0]) == ["0", "1"] and told[1] == ["late"]
    assert store.notification_counts()["sent"] == 3


def test_a_stale_claim_waits_for_the_end_of_quiet_hours_and_a_drain_does_not(
    make, helpdesk, clock, http, store
):
    """Taking a stale webhook claim over means sending it again: not in quiet hours. Until
    they end it is not due, so a draining worker is not kept waiting for it."""
    processor = make(text=matrix_text(l2="[audit]"))
    _escalate(processor, helpdesk, 1)
    hook_id = _die_mid_send(store, "audit", clock)  # at 12:00; the worker dies
    http.post(HOOK, status=200)
    quiet_text = matrix_text(l2="[audit]").replace(
        f'      webhook: {{url: "{HOOK}", secret: "${{HOOK_SECRET}}"}}\n',
        f'      webhook: {{url: "{HOOK}", secret: "${{HOOK_SECRET}}"}}\n'
        '      quiet_hours: {from: "12:01", to: "14:00", timezone: UTC}\n',
        1,
    )
    later = make(text=quiet_text)

    clock.advance(minutes=3)  # 12:03: the lease ran out, the quiet hours began
    report = deliver(later)

    assert (report.messages, report.postponed) == (0, 1) and len(http.calls) == 0
    assert store.notifications_due(clock()) == 0
    clock.advance(hours=2)
    assert deliver(later).sent == 1
    [call] = http.calls
    assert call.request.headers["X-Escbridge-Delivery"] == str(hook_id)


def test_a_slack_bot_read_back_looks_from_when_the_message_was_due(
    make, helpdesk, clock, http, store
):
    """A message held by quiet hours is looked for since they ended, not since its
    escalation: hours of a busy channel need not fit the pages read."""
    text = matrix_text(l2="[bot]").replace(
        "    leads:\n",
        '    bot:\n      slack: {token: "${SLACK_TOKEN}", channel: C0123456789,'
        ' api_url: "http://127.0.0.1:8767/api"}\n'
        '      quiet_hours: {from: "11:00", to: "20:00", timezone: UTC}\n    leads:\n',
    )
    processor = make(text=text)
    _escalate(processor, helpdesk, 1)  # at 12:00, in quiet hours: due at 20:00
    clock.advance(hours=8)
    _die_mid_send(store, "bot", clock)  # at 20:00 a worker posts it and dies
    history = "http://127.0.0.1:8767/api/conversations.history"
    http.get(history, json={"ok": True, "messages": []})
    http.post("http://127.0.0.1:8767/api/chat.postMessage", json={"ok": True, "ts": "2.0"})

    clock.advance(minutes=10)
    assert deliver(processor).sent == 1

    [look] = [c for c in http.calls if c.request.method == "GET"]
    oldest = float(parse_qs(urlsplit(look.request.url).query)["oldest"][0])
    assert oldest == clock().replace(hour=20, minute=0).timestamp() - 60


def test_a_digest_stays_one_message_while_its_service_is_down(make, helpdesk, clock, http, store):
    """A row being retried belongs to a window that has closed: the escalations recorded
    meanwhile still share one window (one message), not one each."""
    processor = make(text=matrix_text(l2="[digest-hook]"))

    def escalate(ticket: str) -> None:
        helpdesk.add(ticket, tags=["vip"])
        processor.enqueue(event(ticket))
        processor.run_once()

    messages: list[list[str]] = []
    answers = iter([503, 200, 200])

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}")
        messages.append(sorted(e["ticket_id"] for e in body["escalations"]))
        return next(answers), {}, ""

    http.add_callback(responses.POST, f"{HOOK}/digest", callback=answer)
    escalate("a")  # 12:00: its window closes at 12:15
    clock.advance(minutes=15)
    assert deliver(processor).retried == 1  # the service is down
    clock.advance(minutes=1)
    escalate("b")  # 12:16: a new window, to 12:31
    clock.advance(minutes=4)
    escalate("c")  # 12:20: in b's window

    pending = {row.ticket_id: row.not_before for row in store.notifications(["pending"])}
    assert pending["b"] == pending["c"] == clock() + timedelta(minutes=11)
    clock.advance(minutes=11)
    deliver(processor)

    assert messages == [["a"], ["a", "b", "c"]]
