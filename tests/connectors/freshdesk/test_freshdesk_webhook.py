"""Freshdesk rule webhooks: the shared secret, the body as a hint, dedupe keys, own changes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import responses
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk import webhook as fw
from freshdesk_payloads import AGENT_ME, API_KEY, BASE, WEBHOOK_SECRET, ZULIP_PRIORITY_CHANGED

from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent

NOW = datetime(2026, 3, 11, 9, 30, 10, tzinfo=UTC)
TEMPLATE_BODY = (
    b'{"ticket": {"id": "1234", "status": "Open", "priority": "Urgent", "group": "Escalations"},'
    b' "event": "{priority:{from:2,to:4}}", "performer": "hannah@acme.example",'
    b' "source": "freshdesk"}'
)


class Now:
    def __init__(self) -> None:
        self.value = NOW

    def __call__(self) -> datetime:
        return self.value


def connector(now: Now | None = None, **settings: Any) -> FreshdeskConnector:
    base: dict[str, Any] = {"domain": "acme", "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET}
    cfg = FreshdeskConfig.model_validate({**base, **settings})
    return FreshdeskConnector(cfg, instance="fd", utcnow=now or Now(), sleep=lambda s: None)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


# --------------------------------------------------------------------------- verification


def test_basic_auth_with_the_configured_user_and_secret_is_accepted() -> None:
    connector().verify_webhook(basic("escbridge", WEBHOOK_SECRET), TEMPLATE_BODY, {})
    connector(webhook_username="fd-rule").verify_webhook(
        {
            "authorization": "basic "
            + base64.b64encode(f"fd-rule:{WEBHOOK_SECRET}".encode()).decode()
        },
        TEMPLATE_BODY,
        {},
    )


def test_the_rules_api_key_mode_sends_the_secret_as_user_and_x() -> None:
    connector().verify_webhook(basic(WEBHOOK_SECRET, "X"), TEMPLATE_BODY, {})


def test_the_secret_header_is_accepted_under_its_configured_name() -> None:
    connector().verify_webhook({"x-escbridge-secret": WEBHOOK_SECRET}, TEMPLATE_BODY, {})
    connector(webhook_header="X-Hook-Token").verify_webhook(
        {"X-Hook-Token": f" {WEBHOOK_SECRET} "}, TEMPLATE_BODY, {}
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no credentials"),
        (basic("escbridge", "wrong"), "wrong basic-auth"),
        (basic("someone", WEBHOOK_SECRET), "wrong basic-auth"),
        ({"X-Escbridge-Secret": "wrong"}, "wrong secret"),
        ({"Authorization": "Bearer " + WEBHOOK_SECRET}, "unsupported"),
        ({"Authorization": "Basic !!notbase64"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}, "malformed"),
    ],
)
def test_anything_else_is_refused_without_echoing_what_was_sent(
    headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(WebhookAuthError, match=reason) as caught:
        connector().verify_webhook(headers, TEMPLATE_BODY, {})
    assert WEBHOOK_SECRET not in str(caught.value) and 'wrong"' not in str(caught.value)


def test_without_a_configured_secret_every_request_is_refused() -> None:
    with pytest.raises(WebhookAuthError, match="no webhook_secret"):
        connector(webhook_secret=None).verify_webhook(
            basic("escbridge", WEBHOOK_SECRET), TEMPLATE_BODY, {}
        )


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = fw.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(fw.hmac, "compare_digest", spy)
    connector().verify_webhook({"X-Escbridge-Secret": WEBHOOK_SECRET}, b"{}", {})
    with pytest.raises(WebhookAuthError):
        connector().verify_webhook(basic("escbridge", "nope"), b"{}", {})
    assert (WEBHOOK_SECRET.encode(), WEBHOOK_SECRET.encode()) in compared
    assert (b"nope", WEBHOOK_SECRET.encode()) in compared
    # both basic-auth forms are evaluated, so timing does not tell which one was tried
    assert (b"escbridge", WEBHOOK_SECRET.encode()) in compared


# --------------------------------------------------------------------------- parsing


def test_the_documented_template_gives_one_event_for_the_ticket() -> None:
    (event,) = connector().parse_webhook({"Content-Type": "application/json"}, TEMPLATE_BODY)
    assert isinstance(event, TicketEvent)
    assert (event.instance, event.ticket_id, event.kind) == ("fd", "1234", "ticket.updated")
    assert event.actor == "hannah@acme.example"
    assert event.dedupe_key.startswith("freshdesk:1234:")


@pytest.mark.parametrize(
    "body",
    [
        {"ticket": {"id": 1234}},
        {"ticket": {"id": "1234"}},
        {"ticket": {"id": " #1234 "}},
        {"ticket_id": "1234"},
        {"ticket_id": 1234.0},
        {"freshdesk_webhook": {"ticket_id": "1234"}},
        {"data": {"ticket": {"id": 1234}}},
        {"ticket": {"url": "https://acme.freshdesk.com/a/tickets/1234"}},
        {"freshdesk_webhook": {"ticket_url": "http://acme.freshdesk.com/helpdesk/tickets/1234"}},
    ],
)
def test_ticket_id_as_number_or_string_in_the_common_shapes(body: dict[str, Any]) -> None:
    (event,) = connector().parse_webhook({}, json.dumps(body).encode())
    assert event.ticket_id == "1234"


def test_the_recorded_simple_content_payload() -> None:
    (event,) = connector().parse_webhook({}, json.dumps(ZULIP_PRIORITY_CHANGED).encode())
    assert (event.ticket_id, event.kind, event.actor) == ("11", "ticket.updated", None)


def test_form_encoded_simple_content() -> None:
    body = b"freshdesk_webhook%5Bticket_id%5D=77&freshdesk_webhook%5Bticket_status%5D=Open"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    (event,) = connector().parse_webhook(headers, body)
    assert event.ticket_id == "77"


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        ("{ticket_action:created}", "ticket.created"),
        ('{\\"ticket_action\\":\\"created\\"}', "ticket.created"),
        ("{note_type:private}", "ticket.note_added"),
        ("{status:{from:4,to:6}}", "ticket.updated"),
        ("", "ticket.updated"),
    ],
)
def test_triggered_event_in_both_renderings(event: str, kind: str) -> None:
    body = ('{"ticket": {"id": "5"}, "event": "' + event + '"}').encode()
    assert connector().parse_webhook({}, body)[0].kind == kind


def test_a_quote_in_a_substituted_value_does_not_lose_the_event() -> None:
    # Freshdesk substitutes placeholders as plain text: a subject with a quote breaks JSON.
    body = (
        b'{"ticket": {"id": "1234", "subject": "Printer "on fire""},'
        b' "event": "{ticket_action:created}"}'
    )
    (event,) = connector().parse_webhook({"Content-Type": "application/json"}, body)
    assert (event.ticket_id, event.kind) == ("1234", "ticket.created")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"<xml><ticket_id>1</ticket_id></xml>", "Encoding to JSON"),
        (b"[1, 2]", "JSON object"),
        (b"not json at all", "not valid JSON"),
        (b'{"ticket": {"id": "{{ticket.id}}"}}', "placeholder was not rendered"),
        (b'{"ticket": {"id": "abc"}}', "no ticket id"),
        (b'{"ticket": {"id": "../../admin"}}', "no ticket id"),
        (b'{"ticket": {"id": true}}', "no ticket id"),
    ],
)
def test_bodies_without_a_usable_ticket_id_are_payload_errors(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message):
        connector().parse_webhook({}, body)


# --------------------------------------------------------------------------- dedupe


def test_a_redelivery_inside_the_window_has_the_same_key() -> None:
    now = Now()
    conn = connector(now)
    now.value = datetime(2026, 3, 11, 9, 30, 0, tzinfo=UTC)  # start of a 15-minute slot
    first = conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key
    now.value += timedelta(minutes=5)  # Freshdesk's first retry
    assert conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key == first
    now.value += timedelta(minutes=10)  # next slot: a new event
    assert conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key != first


def test_another_body_or_ticket_is_another_event() -> None:
    conn = connector()
    key = conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key
    other_change = TEMPLATE_BODY.replace(b"from:2,to:4", b"from:4,to:3")
    other_ticket = TEMPLATE_BODY.replace(b'"1234"', b'"1235"')
    assert conn.parse_webhook({}, other_change)[0].dedupe_key != key
    assert conn.parse_webhook({}, other_ticket)[0].dedupe_key != key
    assert len(key) <= 255


def test_the_window_is_configurable() -> None:
    now = Now()
    conn = connector(now, webhook_dedupe_window=3600)
    now.value = datetime(2026, 3, 11, 9, 0, 0, tzinfo=UTC)
    key = conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key
    now.value += timedelta(minutes=35)  # second retry, same hour slot
    assert conn.parse_webhook({}, TEMPLATE_BODY)[0].dedupe_key == key


# --------------------------------------------------------------------------- own changes


@responses.activate
def test_own_changes_are_recognised_by_the_api_keys_agent() -> None:
    responses.get(f"{BASE}/agents/me", json=AGENT_ME)
    conn = connector()

    def event(actor: str | None) -> TicketEvent:
        return TicketEvent(instance="fd", ticket_id="1", dedupe_key="k", actor=actor)

    assert conn.is_own_change(event("integration-test@airbyte.io"))
    assert conn.is_own_change(event("67013469919"))
    assert not conn.is_own_change(event("hannah@acme.example"))
    assert not conn.is_own_change(event(None))
    assert len(responses.calls) == 1  # the agent is learned once


@responses.activate
def test_when_the_agent_cannot_be_learned_nothing_is_dropped() -> None:
    responses.get(f"{BASE}/agents/me", status=503)
    event = TicketEvent(instance="fd", ticket_id="1", dedupe_key="k", actor="x@y.z")
    assert connector().is_own_change(event) is False
