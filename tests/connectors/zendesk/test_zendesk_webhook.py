"""Zendesk webhooks: signature, replay window, both payload forms, dedupe keys, own changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses
from escbridge_zendesk import TRIGGER_BODY, ZendeskConfig, ZendeskConnector
from escbridge_zendesk import webhook as zw
from zendesk_payloads import EVENT_TICKET_CREATED, EVENT_USER_DELETED, ME_ADMIN

from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
TS = "2021-03-25T05:09:27Z"
NOW = datetime(2021, 3, 25, 5, 9, 30, tzinfo=UTC)


def connector(**settings: Any) -> ZendeskConnector:
    base: dict[str, Any] = {
        "subdomain": "acme",
        "email": "escbridge@acme.example",
        "api_token": "tok-zendesk-123",
        "webhook_secret": SECRET,
    }
    cfg = ZendeskConfig.model_validate({**base, **settings})
    return ZendeskConnector(cfg, instance="eu", utcnow=lambda: NOW, sleep=lambda s: None)


def signed(body: bytes, ts: str = TS, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Zendesk-Webhook-Signature": zw.sign(secret, ts, body),
        "X-Zendesk-Webhook-Signature-Timestamp": ts,
        "Content-Type": "application/json; charset=utf-8",
    }


def test_published_test_vector_uses_the_secret_as_is() -> None:
    body = b'{"event":"ticket.updated","id":123}'
    assert zw.sign(SECRET, TS, body) == "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM="
    headers = {
        "x-zendesk-webhook-signature": "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM=",
        "x-zendesk-webhook-signature-timestamp": TS,  # header names are case-insensitive
    }
    connector().verify_webhook(headers, body, {})


def test_altered_body_wrong_secret_and_missing_headers_are_refused() -> None:
    body = b'{"ticket_id":"1"}'
    conn = connector()
    with pytest.raises(WebhookAuthError, match="does not match"):
        conn.verify_webhook(signed(body), body + b" ", {})
    with pytest.raises(WebhookAuthError, match="does not match"):
        conn.verify_webhook(signed(body, secret="another-secret"), body, {})
    with pytest.raises(WebhookAuthError, match="missing"):
        conn.verify_webhook({"X-Zendesk-Webhook-Signature": "x"}, body, {})


def test_no_secret_configured_refuses_everything() -> None:
    body = b"{}"
    with pytest.raises(WebhookAuthError, match="no webhook_secret"):
        connector(webhook_secret=None).verify_webhook(signed(body), body, {})


def test_signature_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = zw.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(zw.hmac, "compare_digest", spy)
    body = b"{}"
    connector().verify_webhook(signed(body), body, {})
    assert len(calls) == 1


@pytest.mark.parametrize("offset", [timedelta(minutes=6), -timedelta(minutes=6)])
def test_replay_window_refuses_old_and_future_timestamps(offset: timedelta) -> None:
    body = b"{}"
    ts = (NOW - offset).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(WebhookAuthError, match="replay window"):
        connector().verify_webhook(signed(body, ts), body, {})


def test_replay_window_is_configurable() -> None:
    body = b"{}"
    ts = (NOW - timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
    connector(replay_window_seconds=600).verify_webhook(signed(body, ts), body, {})
    with pytest.raises(WebhookAuthError):
        connector(replay_window_seconds=60).verify_webhook(
            signed(body, (NOW - timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ")), body, {}
        )


def test_event_subscription_payload_string_ids_and_dedupe_by_event_id() -> None:
    body = json.dumps(EVENT_TICKET_CREATED).encode()
    (event,) = connector().parse_webhook({}, body)
    assert event == TicketEvent(
        instance="eu",
        ticket_id="5158",
        dedupe_key="eu:zendesk-event:cbe4028c-7f4e-4a3b-9d55-0c6f2c7e1a11",
        kind="ticket.created",
        actor="8447388090494",
        occurred_at=datetime(2025, 1, 8, 10, 12, 7, 672717, tzinfo=UTC),
    )


def test_event_change_payload_with_nullish_actor_and_subject_only_id() -> None:
    data = json.loads(json.dumps(EVENT_TICKET_CREATED))
    data["type"] = "zen:event-type:ticket.priority_changed"
    data["event"] = {"current": "URGENT", "previous": "LOW"}
    data["detail"]["actor_id"] = "0"
    del data["detail"]["id"]
    (event,) = connector().parse_webhook({}, json.dumps(data).encode())
    assert (event.ticket_id, event.kind, event.actor) == ("5158", "ticket.priority_changed", None)


def test_non_ticket_events_are_ignored() -> None:
    assert connector().parse_webhook({}, json.dumps(EVENT_USER_DELETED).encode()) == []


def test_trigger_body_documented_for_admins_parses_and_dedupes_on_signed_material() -> None:
    rendered = (
        TRIGGER_BODY.replace("{{ticket.id}}", "35436")
        .replace("{{current_user.id}}", "6130907993114")
        .replace("{{ticket.status}}", "open")
        .replace("{{ticket.priority}}", "high")
    )
    body = rendered.encode()
    headers = {**signed(body), "X-Zendesk-Webhook-Invocation-Id": "1234567890"}
    (event,) = connector().parse_webhook(headers, body)
    assert event.ticket_id == "35436" and event.actor == "6130907993114"
    assert event.dedupe_key == zw.signed_dedupe_key("eu", signed(body), body)
    assert event.dedupe_key.startswith("eu:zendesk-signed:")
    assert event.occurred_at == datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)


def test_trigger_body_dedupes_on_the_signed_timestamp_and_body() -> None:
    body = b'{"ticket_id": "7", "actor_id": ""}'
    (a,) = connector().parse_webhook(signed(body), body)
    (b,) = connector().parse_webhook(signed(body), body)
    assert a.dedupe_key == b.dedupe_key and a.dedupe_key.startswith("eu:zendesk-signed:")
    assert a.actor is None
    (c,) = connector().parse_webhook(signed(b'{"ticket_id": "8"}'), b'{"ticket_id": "8"}')
    assert c.dedupe_key != a.dedupe_key
    (later,) = connector().parse_webhook(signed(body, "2021-03-25T05:09:28Z"), body)
    assert later.dedupe_key != a.dedupe_key  # the same change signed a second later


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"ticket_id": "{{ticket.id}}"}', "placeholder"),
        (b'{"hello": 1}', "not a Zendesk ticket webhook"),
        (b'{"type": "zen:event-type:ticket.created", "detail": {}, "id": "x"}', "ticket id"),
    ],
)
def test_payloads_that_cannot_be_understood(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        connector().parse_webhook({}, body)


def test_is_own_change_with_configured_integration_user() -> None:
    conn = connector(integration_user_id=6130907993114)
    own = TicketEvent(instance="eu", ticket_id="1", dedupe_key="k", actor="6130907993114")
    human = own.model_copy(update={"actor": "42"})
    assert conn.is_own_change(own) and not conn.is_own_change(human)
    assert not conn.is_own_change(own.model_copy(update={"actor": None}))


@responses.activate
def test_is_own_change_learns_the_integration_user_once_from_users_me() -> None:
    responses.get("https://acme.zendesk.com/api/v2/users/me.json", json=ME_ADMIN)
    conn = connector()
    event = TicketEvent(instance="eu", ticket_id="1", dedupe_key="k", actor="6130907993114")
    assert conn.is_own_change(event)
    assert conn.is_own_change(event)
    assert len(responses.calls) == 1
