"""End to end on loopback: the Freshdesk sandbox, its rule webhooks, a receiver, the worker.

Everything real except the helpdesk: the connector speaks HTTP to the emulator on 127.0.0.1,
the emulator fires its automation-rule webhook (with the configured auth) at a receiver that
verifies and parses it with the connector, the store is SQLite, and the engine decides from a
matrix. What is checked is what a Freshdesk admin would see on the ticket.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.sandbox import Fault, FreshdeskSandbox, serve_sandbox
from flask import Flask, request

from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, Priority
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.sandbox import ServerThread, quiet_werkzeug, serve
from escbridge.store import Store, upgrade
from escbridge.testing import FakeClock

API_KEY = "sandbox-api-key-e2e-0123"
SECRET = "e2e-webhook-secret-456789"

MATRIX = """\
version: 1
name: freshdesk e2e
levels:
  - id: l1
    name: Frontline
    groups: {"*": Frontline}
  - id: l2
    name: Senior support
    groups: {"*": Senior Support}
  - id: l3
    name: Escalations
    groups: {"*": Escalations}
limits:
  cooldown: 30m
  daily_cap: 3
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions: {priority: urgent}
"""


@dataclass
class Rig:
    sandbox: FreshdeskSandbox
    api: ServerThread
    receiver: ServerThread
    connector: FreshdeskConnector
    processor: Processor
    store: Store
    clock: FakeClock
    received: list[int]

    def run(self) -> dict[str, int]:
        """Deliver pending webhooks, then let the worker process the inbox."""
        assert self.sandbox.webhooks.flush(5)
        report = self.processor.run_once(limit=50)
        return report.outcomes


def make_receiver(
    connector: FreshdeskConnector, processor: Processor, received: list[int]
) -> Flask:
    """What escbridge's receiver does with a delivery: verify, parse, enqueue, answer fast."""
    app = Flask("receiver")

    @app.post("/webhooks/fd")
    def hook() -> Any:
        headers = dict(request.headers)
        body = request.get_data()
        try:
            connector.verify_webhook(headers, body, request.args.to_dict())
        except WebhookAuthError:
            received.append(401)
            return "", 401
        try:
            events = connector.parse_webhook(headers, body)
        except WebhookPayloadError as exc:
            received.append(400)
            return str(exc), 400
        for event in events:
            processor.enqueue(event)
        received.append(202)
        return "", 202

    return app


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    quiet_werkzeug()
    options: dict[str, Any] = getattr(request, "param", {})
    clock = FakeClock()  # the emulator's rate-limit clock, moved by the connector's sleeps
    sandbox, api = serve_sandbox(api_key=API_KEY, monotonic=clock.monotonic, **options)
    config = FreshdeskConfig.model_validate(
        {
            "domain": "sandbox",
            "api_key": API_KEY,
            "api_url": api.url,
            "webhook_secret": SECRET,
            "level_field": "escalation_level",
        }
    )
    connector = FreshdeskConnector(config, instance="fd", sleep=clock.sleep)
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    store = Store(url)
    engine = Engine(parse_matrix(MATRIX, "matrix.yaml"), helpdesks={"fd": "freshdesk"})
    processor = Processor(store, engine, {"fd": connector}, secrets=config.secret_values())
    received: list[int] = []
    receiver = serve(make_receiver(connector, processor, received))
    sandbox.webhook_url = f"{receiver.url}/webhooks/fd"
    sandbox.webhook_auth = {"mode": "basic", "username": "escbridge", "password": SECRET}
    try:
        yield Rig(sandbox, api, receiver, connector, processor, store, clock, received)
    finally:
        sandbox.webhooks.close()
        stopping = threading.Thread(target=receiver.stop)  # each stop waits up to 0.5 s
        stopping.start()
        api.stop()
        stopping.join()
        store.close()


def escalated(sandbox: FreshdeskSandbox, ticket_id: int) -> tuple[str, int, list[str], int]:
    """What an admin checks: group, priority, tags, how many private notes."""
    t = sandbox.ticket(ticket_id)
    group = next(g["name"] for g in sandbox.groups if g["id"] == t["group_id"])
    return group, t["priority"], t["tags"], len(sandbox.notes(ticket_id))


# --------------------------------------------------------------------------- check


def test_check_names_the_agent_and_the_missing_groups(rig: Rig) -> None:
    report = rig.connector.check(["Senior Support", "Legal"])
    assert not report.ok and report.missing_groups == ("Legal",)
    assert "escbridge@sandbox.example" in report.identity
    assert any('custom status 6 "Waiting on Customer" counts as pending' in n for n in report.notes)
    assert rig.connector.check(["Senior Support", "Escalations"]).ok


def test_check_reports_a_wrong_key_without_showing_it(rig: Rig) -> None:
    settings = {**rig.connector.config.model_dump(), "api_key": "wrong-key-987654"}
    config = FreshdeskConfig.model_validate(settings)
    report = FreshdeskConnector(config, instance="fd", sleep=rig.clock.sleep).check([])
    assert not report.ok and "rejected the credentials" in report.problems[0]
    assert "check api_key" in report.problems[0]
    assert "wrong-key-987654" not in " ".join(report.problems)


# --------------------------------------------------------------------------- the event path


def test_a_new_vip_ticket_is_escalated_seconds_after_its_webhook(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = rig.sandbox.create_ticket(subject="Checkout down", tags=["vip"], group="Frontline")
    tid = created["id"]
    assert rig.run() == {"escalated": 1}
    assert rig.received[0] == 202
    group, priority, tags, notes = escalated(rig.sandbox, tid)
    assert (group, priority, notes) == ("Senior Support", 4, 1)
    assert tags == ["vip", "escbridge_l2"]
    assert rig.sandbox.ticket(tid)["custom_fields"]["cf_escalation_level"] == "l2"
    note = rig.sandbox.notes(tid)[0]
    assert note["private"] and note["user_id"] == FreshdeskSandbox.ESCBRIDGE_ID
    assert "escbridge ref: esc-" in note["body_text"]

    # Our own PUT fired the rule again: recognised as our change, nothing written.
    assert rig.run() == {"own_change": 1}
    assert escalated(rig.sandbox, tid)[3] == 1
    (record,) = rig.store.escalations(ticket_id=str(tid))
    assert (record.rule_id, record.to_level) == ("vip", "l2")
    for text in (caplog.text,):
        assert API_KEY not in text and SECRET not in text


def test_a_redelivered_webhook_is_one_event(rig: Rig) -> None:
    rig.sandbox.webhook_url = None
    tid = rig.sandbox.create_ticket(tags=["vip"])["id"]
    delivery = rig.sandbox.webhook_template.replace("{{ticket.id}}", str(tid))
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"escbridge:{SECRET}".encode()).decode(),
    }
    url = f"{rig.receiver.url}/webhooks/fd"
    for _ in range(3):  # Freshdesk retries when an answer is slow: same body each time
        assert requests.post(url, data=delivery, headers=headers, timeout=5).status_code == 202
    assert rig.processor.run_once().outcomes == {"escalated": 1}
    assert rig.store.job_counts()["pending"] == 0
    assert escalated(rig.sandbox, tid)[3] == 1


@pytest.mark.parametrize(
    "rig", [{"webhook_template": '{"ticket_id": {{ticket.id}}}'}], indirect=True
)
def test_the_secret_header_form_and_a_numeric_id_template(rig: Rig) -> None:
    rig.sandbox.webhook_auth = {"mode": "header", "name": "X-Escbridge-Secret", "value": SECRET}
    tid = rig.sandbox.create_ticket(tags=["vip"])["id"]
    assert rig.run() == {"escalated": 1}
    assert escalated(rig.sandbox, tid)[:2] == ("Senior Support", 4)


def test_a_rule_with_the_wrong_password_is_refused(rig: Rig) -> None:
    rig.sandbox.webhook_auth = {"mode": "basic", "username": "escbridge", "password": "guess"}
    rig.sandbox.create_ticket(tags=["vip"])
    assert rig.run() == {}
    assert rig.received == [401]
    assert [d.status for d in rig.sandbox.webhooks.deliveries] == [401]


def test_a_human_change_is_not_mistaken_for_ours(rig: Rig) -> None:
    rig.sandbox.webhook_url = None
    tid = rig.sandbox.create_ticket()["id"]
    rig.sandbox.webhook_url = f"{rig.receiver.url}/webhooks/fd"
    rig.sandbox.human_update(tid, tags=["vip"])  # an agent tags it VIP in the UI
    assert rig.run() == {"escalated": 1}
    assert escalated(rig.sandbox, tid)[2] == ["vip", "escbridge_l2"]


# --------------------------------------------------------------------------- crash safety


def test_a_note_lost_between_put_and_post_is_added_once_by_the_retry(rig: Rig) -> None:
    """The worker fails after the PUT: the retry sees the level tag and adds only the note."""
    rig.sandbox.faults.append(Fault("POST", r"/tickets/\d+/notes", status=503, times=3))
    tid = rig.sandbox.create_ticket(tags=["vip"])["id"]
    rig.sandbox.webhooks.flush(5)
    first = rig.processor.run_once()
    assert first.retried == 1
    group, _, tags, notes = escalated(rig.sandbox, tid)
    assert (group, "escbridge_l2" in tags, notes) == ("Senior Support", True, 0)

    later = rig.processor.clock() + timedelta(hours=1)
    rig.processor.clock = lambda: later
    assert rig.processor.run_once().outcomes.get("recovered") == 1
    assert escalated(rig.sandbox, tid)[3] == 1
    puts = [p for m, p in rig.sandbox.requests_log if m == "PUT"]
    assert puts == [f"/api/v2/tickets/{tid}"]  # the ticket was written once


def test_a_note_created_but_unanswered_is_not_posted_twice(rig: Rig) -> None:
    rig.sandbox.faults.append(Fault("POST", r"/tickets/\d+/notes", status=504, after=True))
    tid = rig.sandbox.create_ticket(tags=["vip"])["id"]
    # The note was confirmed by reading the ticket again, not by an answer: recovered.
    assert rig.run() == {"recovered": 1}
    assert escalated(rig.sandbox, tid)[3] == 1
    posts = [p for m, p in rig.sandbox.requests_log if m == "POST" and p.endswith("/notes")]
    assert len(posts) == 1


# --------------------------------------------------------------------------- apply variants


@pytest.mark.parametrize("rig", [{"accept_null_responder": False}], indirect=True)
def test_unassign_refused_by_the_account_still_escalates(rig: Rig) -> None:
    raw = rig.sandbox.create_ticket(
        tags=["vip"], notify=False, responder_id=FreshdeskSandbox.HUMAN_ID
    )
    ticket = rig.connector.fetch_ticket(str(raw["id"]))
    actions = Actions(
        group="Escalations", note="Up.", tags_add=("escbridge_l3",), level="l3", unassign=True
    )
    assert rig.connector.apply(ticket, actions).ok
    after = rig.sandbox.ticket(raw["id"])
    assert after["responder_id"] == FreshdeskSandbox.HUMAN_ID and "escbridge_l3" in after["tags"]


@pytest.mark.parametrize("rig", [{"tags_mode": "append"}], indirect=True)
def test_an_account_that_appends_tags_still_reads_the_newest_level(rig: Rig) -> None:
    raw = rig.sandbox.create_ticket(tags=["escbridge_l2"], group="Senior Support", notify=False)
    ticket = rig.connector.fetch_ticket(str(raw["id"]))
    assert ticket.level == "l2"
    actions = Actions(
        group="Escalations",
        note="Up.",
        tags_add=("escbridge_l3",),
        tags_remove=("escbridge_l2",),
        level="l3",
    )
    assert rig.connector.apply(ticket, actions).ok
    assert rig.connector.fetch_ticket(str(raw["id"])).level == "l3"


@pytest.mark.parametrize(
    "rig", [{"bulk_mode": "sync"}, {"bulk_mode": "job", "job_polls": 2}], indirect=True
)
def test_apply_many_uses_one_bulk_call_and_a_note_each(rig: Rig) -> None:
    raws = [rig.sandbox.create_ticket(notify=False, group="Frontline") for _ in range(3)]
    rig.sandbox.human_update(raws[2]["id"], tags=["angry"])
    tickets = [rig.connector.fetch_ticket(str(r["id"])) for r in raws]
    actions = Actions(
        group="Senior Support",
        priority=Priority.HIGH,
        note="Overdue.",
        tags_add=("escbridge_l2",),
        level="l2",
    )
    results = rig.connector.apply_many([(t, actions) for t in tickets])
    assert all(r.ok for r in results)
    bulk = [p for m, p in rig.sandbox.requests_log if p.endswith("/bulk_update")]
    puts = [p for m, p in rig.sandbox.requests_log if m == "PUT"]
    assert len(bulk) == 1 and puts == [f"/api/v2/tickets/{raws[2]['id']}"]
    for raw in raws:
        assert escalated(rig.sandbox, raw["id"])[0] == "Senior Support"
        assert escalated(rig.sandbox, raw["id"])[3] == 1
    assert rig.sandbox.ticket(raws[2]["id"])["tags"] == ["angry", "escbridge_l2"]


# --------------------------------------------------------------------------- sync and limits


@pytest.mark.parametrize("rig", [{"max_pages": 2}], indirect=True)
def test_sync_restarts_past_the_page_cap_and_sees_every_open_ticket(rig: Rig) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(250):
        status = 5 if i % 10 == 0 else 2
        rig.sandbox.create_ticket(
            status=status, created_at=start + timedelta(minutes=i), notify=False
        )
    rig.connector.max_pages = 2
    pages = list(rig.connector.iter_tickets(start, None))
    ids = [t.id for p in pages for t in p.tickets]
    assert len(ids) == len(set(ids)) == 225  # 250 minus the 25 closed ones
    lists = [p for m, p in rig.sandbox.requests_log if p == "/api/v2/tickets"]
    assert len(lists) >= 3 and pages[-1].done
    assert pages[-1].cursor == (start + timedelta(minutes=249)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("rig", [{"rate_limit": 12}], indirect=True)
def test_a_throttled_account_is_waited_for_not_hammered(rig: Rig) -> None:
    for _ in range(4):
        rig.sandbox.create_ticket(notify=False)
    fetched = [rig.connector.fetch_ticket(str(i)) for i in range(1, 5)]  # 5 credits each
    assert [t.id for t in fetched] == ["1", "2", "3", "4"]
    assert rig.sandbox.stats.throttled >= 1
    assert rig.clock.sleeps and max(rig.clock.sleeps) <= 61  # Retry-After, not a fixed minute
    assert sum(rig.clock.sleeps) >= 60  # it really waited for the window
