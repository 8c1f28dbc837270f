"""POST /webhooks/<instance>, branch by branch, in the chain's order.

size (413) → instance (401, as verification) → verification (401) → parse (400) → own changes
(200 ignored)
→ dedupe (200 duplicate) → durable enqueue (202 queued) | store unavailable (503 + Retry-After).

Deliveries are signed with the Zendesk connector's production signer and checked by its
production verifier; every event answered 2xx is looked up in the real store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from escbridge_webhooks import ReceiverSettings, create_app
from escbridge_webhooks.chain import (
    Context,
    Enqueue,
    LimitSize,
    WebhookRequest,
)
from escbridge_zendesk.webhook import SIGNATURE_HEADER
from webhook_support import (
    API_TOKEN,
    OWN_USER,
    SCRAPE,
    SECRET,
    LogLines,
    MakeRig,
    Rig,
    event_body,
    json_of,
    load,
    signed,
    write_config,
)

from escbridge.errors import StoreUnavailableError
from escbridge.model import TicketEvent
from escbridge.processing import build_processor
from escbridge.store import Enqueued, Store

URL = "/webhooks/eu"


def post(rig: Rig, body: bytes, headers: dict[str, str], url: str = URL) -> Any:
    return rig.client.post(url, data=body, headers=headers)


# --- 1. size limit ---------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_with_413_before_anything_else(rig: Rig) -> None:
    big = event_body() + b" " * 5000
    response = post(rig, big, signed(big))
    assert response.status_code == 413
    assert json_of(response) == {"error": "payload too large", "limit_bytes": 4096}
    # Before the instance is even looked up: an unknown instance gets 413 too.
    assert post(rig, big, {}, "/webhooks/nope").status_code == 413
    assert rig.pending() == 0


def test_a_body_without_declared_length_is_cut_off_at_the_limit() -> None:
    # Chunked uploads declare no Content-Length: the limit is enforced on what is read.
    read: list[int] = []

    def read_body(limit: int) -> bytes:
        read.append(limit)
        return b"x" * limit

    step = LimitSize(100)
    request = WebhookRequest("eu", {}, {}, None, read_body)
    reply = step(Context(request))
    assert reply is not None and reply.status == 413
    assert read == [101]  # never more than one byte past the limit
    ok = Context(WebhookRequest("eu", {}, {}, None, lambda limit: b"{}"))
    assert step(ok) is None and ok.body == b"{}"


# --- 2. instance lookup ----------------------------------------------------------------------


def test_an_unknown_instance_is_401_like_a_forgery_and_its_name_is_not_echoed(rig: Rig) -> None:
    body = event_body()
    response = post(rig, body, signed(body), "/webhooks/evil<script>alert(1)")
    assert response.status_code == 401
    assert "script" not in response.get_data(as_text=True)
    assert json_of(response) == {"error": "invalid request"}


# --- 3. verification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "headers"),
    [
        ("unsigned", lambda body: {"Content-Type": "application/json"}),
        ("wrong secret", lambda body: signed(body, secret="an-attacker-guess")),
        ("stale", lambda body: signed(body, at=datetime.now(UTC) - timedelta(hours=1))),
        ("altered body", lambda body: signed(body.replace(b"123", b"124"))),
    ],
)
def test_a_request_that_is_not_genuine_is_401_with_the_reason_logged_not_sent(
    rig: Rig, log_lines: LogLines, case: str, headers: Any
) -> None:
    body = event_body(123)
    response = post(rig, body, headers(body))
    assert response.status_code == 401, case
    assert json_of(response) == {"error": "invalid request"}
    assert rig.pending() == 0
    [line] = [e for e in log_lines.entries() if e.get("outcome") == "unauthorized"]
    assert line["status"] == 401 and line["reason"]  # why, for the operator
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert SECRET not in log_lines.text


def test_a_verifier_that_crashes_fails_closed(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    connector = rig.processor.connectors["eu"]

    def broken(*_args: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(connector, "verify_webhook", broken)
    body = event_body()
    response = post(rig, body, signed(body))
    assert response.status_code == 401
    assert rig.pending() == 0


# --- 4. parse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"this is not json", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (json.dumps({"hello": "world"}).encode(), "not a Zendesk ticket webhook"),
        (json.dumps({"ticket_id": "{{ticket.id}}"}).encode(), "unrendered placeholder"),
        (event_body("9" * 150), "ticket_id is longer than 100 characters"),
    ],
)
def test_a_genuine_body_that_cannot_be_understood_is_400_saying_what_is_wrong(
    rig: Rig, body: bytes, detail: str
) -> None:
    response = post(rig, body, signed(body))
    assert response.status_code == 400
    data = json_of(response)
    assert data["error"] == "invalid payload"
    assert detail in data["detail"]
    assert rig.pending() == 0


def test_a_parser_that_crashes_is_still_a_400(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> list[TicketEvent]:
        raise IndexError("bug")

    monkeypatch.setattr(rig.processor.connectors["eu"], "parse_webhook", broken)
    body = event_body()
    response = post(rig, body, signed(body))
    assert response.status_code == 400
    assert json_of(response)["detail"] == "the payload could not be read (IndexError)"


def test_a_delivery_without_ticket_events_is_200_ignored(rig: Rig) -> None:
    body = event_body(kind="ticket.x").replace(b"zen:event-type:ticket.x", b"zen:event-type:user.x")
    response = post(rig, body, signed(body))
    assert response.status_code == 200
    assert json_of(response) == {"status": "ignored", "reason": "no ticket events"}
    assert rig.pending() == 0


# --- 5. own changes --------------------------------------------------------------------------


def test_escbridges_own_change_is_200_ignored_and_not_stored(rig: Rig) -> None:
    body = event_body(123, actor=OWN_USER)
    response = post(rig, body, signed(body))
    assert response.status_code == 200
    assert json_of(response) == {"status": "ignored", "reason": "own change"}
    assert rig.pending() == 0


# --- 6 + 7. dedupe and durable enqueue, on both store backends -------------------------------


def test_a_new_event_is_stored_then_answered_202_with_its_id(db_rig: Rig) -> None:
    body = event_body(4711)
    response = post(db_rig, body, signed(body))
    assert response.status_code == 202
    data = json_of(response)
    assert data == {"status": "queued", "event_id": data["event_id"]}
    job = db_rig.store.job(data["event_id"])
    assert job is not None and (job.instance, job.ticket_id, job.status) == (
        "eu",
        "4711",
        "pending",
    )
    assert job.kind == "ticket.priority_changed" and job.actor == "9003"


def test_a_redelivery_is_200_duplicate_and_stored_once(db_rig: Rig) -> None:
    body = event_body(4711, event_id="01J-same-event")
    first = post(db_rig, body, signed(body))
    again = post(db_rig, body, signed(body))  # Zendesk retries with a fresh signature
    assert first.status_code == 202 and again.status_code == 200
    assert json_of(again) == {"status": "duplicate", "event_id": json_of(first)["event_id"]}
    assert db_rig.pending() == 1


def test_trigger_deliveries_are_deduplicated_on_what_the_signature_covers(rig: Rig) -> None:
    # The invocation id is not signed: only timestamp + body count (test_signed_dedupe.py).
    body = json.dumps({"escbridge": 1, "ticket_id": "77", "actor_id": "9003"}).encode()
    at = datetime.now(UTC).replace(microsecond=0)
    assert post(rig, body, signed(body, at=at, invocation="inv-1")).status_code == 202
    assert post(rig, body, signed(body, at=at, invocation="inv-2")).status_code == 200
    later = at + timedelta(seconds=1)
    assert post(rig, body, signed(body, at=later, invocation="inv-3")).status_code == 202
    assert rig.pending() == 2


def test_when_the_store_is_down_the_answer_is_503_with_retry_after(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    # A PostgreSQL server that is not there: connection refused.
    down = "postgresql+psycopg://escbridge:hunter2-db-password@127.0.0.1:9/escbridge"
    config = load(write_config(tmp_path, down))
    processor = build_processor(config, store=Store(down, busy_timeout=1))
    app = create_app(config, processor=processor, settings=ReceiverSettings(retry_after_seconds=7))
    client = app.test_client()
    body = event_body()
    response = client.post(URL, data=body, headers=signed(body))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert json_of(response) == {
        "error": "store unavailable, deliver again later",
        "retry_after": 7,
    }
    assert "hunter2" not in response.get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and json_of(ready)["problems"] == ["store unreachable"]


def test_a_store_not_at_the_current_schema_is_503_and_not_ready(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    rig = make_rig(f"sqlite:///{tmp_path / 'never-upgraded.db'}")
    body = event_body()
    assert post(rig, body, signed(body)).status_code == 503
    ready = rig.client.get("/readyz")
    assert ready.status_code == 503
    assert json_of(ready)["problems"] == ["store schema is not current: run `escbridge db upgrade`"]


def test_a_bug_behind_the_chain_is_a_500_never_a_2xx(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, log_lines: LogLines
) -> None:
    def broken(_events: Sequence[TicketEvent], _now: datetime) -> list[Enqueued]:
        raise RuntimeError("bug quoting the body: secret-from-body")

    monkeypatch.setattr(rig.store, "enqueue_many", broken)
    body = event_body()
    response = post(rig, body, signed(body))
    assert response.status_code == 500
    assert json_of(response) == {
        "error": "internal error",
        "request_id": response.headers["X-Request-Id"],
    }
    # Logged as where the bug is, never its message (it may quote the body).
    lines = [e for e in log_lines.entries() if e["msg"].startswith("unhandled error: RuntimeError")]
    assert lines and "in broken" in lines[0]["msg"]
    assert "secret-from-body" not in json.dumps(log_lines.entries())
    assert 'escbridge_webhooks_rejected_total{instance="eu",reason="error"} 1.0' in (
        rig.client.get("/metrics", headers=SCRAPE).get_data(as_text=True)
    )


class _Store:
    """An enqueuer that answers from a script: accepted, duplicate, refused, or down."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)

    def enqueue_many(self, events: Sequence[TicketEvent]) -> list[Enqueued]:
        if "down" in self.answers:
            raise StoreUnavailableError("store unavailable")
        return [
            Enqueued(
                accepted=answer == "new",
                job_id=None if answer == "refused" else n,
                refused="ticket_id contains a NUL character" if answer == "refused" else None,
            )
            for n, answer in enumerate(self.answers[: len(events)], start=1)
        ]


def _events(*ids: str) -> list[TicketEvent]:
    return [TicketEvent(instance="eu", ticket_id=i, dedupe_key=f"k{i}") for i in ids]


def test_a_delivery_of_several_events_reports_each() -> None:
    ctx = Context(WebhookRequest("eu", {}, {}, 0, lambda n: b""), events=_events("1", "2", "3"))
    reply = Enqueue(_Store("new", "dup", "new"))(ctx)
    assert (reply.status, dict(reply.body)) == (
        202,
        {"status": "queued", "event_id": 1, "event_ids": [1, 3], "duplicates": 1},
    )


def test_a_delivery_the_store_cannot_take_is_503_so_all_of_it_comes_again() -> None:
    ctx = Context(WebhookRequest("eu", {}, {}, 0, lambda n: b""), events=_events("1", "2"))
    reply = Enqueue(_Store("new", "down"), retry_after=5)(ctx)
    assert reply.status == 503 and reply.headers == {"Retry-After": "5"}
    assert ctx.accepted == []  # one transaction: none of it was kept


def test_an_event_the_store_refuses_is_the_senders_400_naming_the_field() -> None:
    ctx = Context(WebhookRequest("eu", {}, {}, 0, lambda n: b""), events=_events("1", "2"))
    reply = Enqueue(_Store("new", "refused"))(ctx)
    assert (reply.status, dict(reply.body)) == (
        400,
        {"error": "invalid payload", "detail": "ticket_id contains a NUL character"},
    )


# --- the other routes ------------------------------------------------------------------------


def test_url_validation_get_is_refused_where_the_helpdesk_sends_none(rig: Rig) -> None:
    # Zendesk sends no URL check; Zoho Desk's is in test_strangers.py.
    assert rig.client.get(URL).status_code == 401
    assert rig.client.get("/webhooks/nope").status_code == 401
    assert rig.pending() == 0


def test_health_and_readiness(db_rig: Rig) -> None:
    assert json_of(db_rig.client.get("/healthz")) == {"status": "ok"}
    ready = db_rig.client.get("/readyz")
    assert ready.status_code == 200 and json_of(ready) == {"status": "ready"}


def test_wrong_methods_and_paths_are_answered_in_json(rig: Rig) -> None:
    response = rig.client.put(URL)
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert "error" in json_of(response)
    assert json_of(rig.client.get("/nothing-here")).get("error")


def test_metrics_count_every_outcome(rig: Rig) -> None:
    body = event_body(5, event_id="e-5")
    post(rig, body, signed(body))  # accepted
    post(rig, body, signed(body))  # duplicate
    post(rig, body, {})  # unauthorized
    own = event_body(6, actor=OWN_USER)
    post(rig, own, signed(own))  # ignored
    post(rig, b"{}", {}, "/webhooks/random-scan")  # unknown instance
    response = rig.client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    for line in (
        'escbridge_webhooks_received_total{instance="eu"} 4.0',
        'escbridge_webhooks_received_total{instance="-"} 1.0',
        'escbridge_webhooks_accepted_total{instance="eu"} 1.0',
        'escbridge_webhooks_duplicates_total{instance="eu"} 1.0',
        'escbridge_webhooks_rejected_total{instance="eu",reason="unauthorized"} 1.0',
        'escbridge_webhooks_rejected_total{instance="-",reason="unknown_instance"} 1.0',
        'escbridge_webhooks_ignored_total{instance="eu",reason="own_change"} 1.0',
        'escbridge_webhook_duration_seconds_count{outcome="queued"} 1.0',
        "escbridge_queue_depth 1.0",
        'escbridge_inbox_jobs{status="pending"} 1.0',
        'escbridge_notifications{state="failed"} 0.0',
        "escbridge_store_up 1.0",
    ):
        assert line in text, line
    assert "random-scan" not in text  # label values never come from the request


# --- logs ------------------------------------------------------------------------------------


def test_every_line_carries_the_request_id_and_no_secret_or_body(
    rig: Rig, log_lines: LogLines
) -> None:
    body = event_body(31337, event_id="evt-secretive-subject")
    response = post(rig, body, signed(body, extra={"X-Request-Id": "helpdesk-req-42"}))
    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == "helpdesk-req-42"
    entries = log_lines.entries()
    assert entries and all(e["request_id"] == "helpdesk-req-42" for e in entries)
    [line] = [e for e in entries if e["logger"] == "escbridge_webhooks"]  # one per delivery
    assert line["outcome"] == "queued" and line["bytes"] == len(body) and line["events"] == 1
    for leaked in (SECRET, API_TOKEN, "evt-secretive-subject", signed(body)[SIGNATURE_HEADER]):
        assert leaked not in log_lines.text


def test_an_odd_request_id_is_replaced(rig: Rig) -> None:
    response = rig.client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert response.headers["X-Request-Id"] != "bad id\twith spaces"
    assert len(response.headers["X-Request-Id"]) == 32
