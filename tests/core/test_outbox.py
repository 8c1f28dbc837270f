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
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
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
        note = Notifier(
            store,
            matrix.notify,
            environ=ENV,
            backoff=lambda attempt: 60.0 * attempt,
            **notifier,
        )
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
