"""Zendesk webhooks: signature verification and the two payload forms.

Signature (developer.zendesk.com, "Verifying webhook authenticity"):
``base64(HMAC-SHA256(key=signing secret as-is, msg=timestamp + raw body))`` in
``X-Zendesk-Webhook-Signature``, timestamp in ``X-Zendesk-Webhook-Signature-Timestamp``.
Zendesk prescribes no replay window; we refuse timestamps more than ``window`` away from now.

Payloads:
- a webhook connected to a trigger posts the JSON body the admin pasted (``TRIGGER_BODY``);
- a webhook subscribed to ``zen:event-type:ticket.*`` posts Zendesk's event envelope, with
  string ids and UPPERCASE enums.
Either way the event is only a hint: the worker re-fetches the ticket.

Dedupe keys come only from what the signature covers (the timestamp header and the body):
the event id in an event payload, else a hash of the signed timestamp and the body. The
``X-Zendesk-Webhook-Invocation-Id`` header is not signed, so a captured delivery replayed
inside the window with that header changed or removed must still be a duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from escbridge.connector.contract import Headers
from escbridge.connector.payload import load_json
from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent
from escbridge_zendesk.parse import parse_time

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
INVOCATION_HEADER = "X-Zendesk-Webhook-Invocation-Id"  # not signed: never part of a dedupe key
WEBHOOK_ID_HEADER = "X-Zendesk-Webhook-Id"
EVENT_PREFIX = "zen:event-type:"
MAX_EVENT_ID = 100  # Zendesk's are UUIDs; a longer one is hashed so the key fits its column

# The JSON body an admin pastes into the trigger's "Notify active webhook" action. Ids only:
# placeholders render as text and their quoting inside JSON is not documented, so nothing
# free-form (subject, comments) goes in; the worker fetches the ticket anyway.
TRIGGER_BODY = """{
  "escbridge": 1,
  "ticket_id": "{{ticket.id}}",
  "actor_id": "{{current_user.id}}",
  "status": "{{ticket.status}}",
  "priority": "{{ticket.priority}}"
}"""

_DIGITS = re.compile(r"^\d+$")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature Zendesk sends (also used by the sandbox and tests)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | None,
    *,
    now: datetime,
    window: timedelta = timedelta(minutes=5),
) -> None:
    """Raise WebhookAuthError unless the request is signed with ``secret`` and recent."""
    if not secret:
        raise WebhookAuthError("no webhook_secret is configured for this instance")
    found = Headers(headers)
    signature = found.get(SIGNATURE_HEADER)
    timestamp = found.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise WebhookAuthError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookAuthError("signature does not match (wrong secret or altered body)")
    try:
        sent = parse_time(timestamp)
    except ValueError:
        sent = None
    if sent is None:
        raise WebhookAuthError("signature timestamp is not a time")
    if abs(now - sent) > window:
        raise WebhookAuthError(
            f"signature timestamp {timestamp} is outside the {int(window.total_seconds())} s "
            "replay window"
        )


def signed_dedupe_key(instance: str, headers: Mapping[str, str], body: bytes) -> str:
    """``<instance>:zendesk-signed:<sha256 of timestamp + body>``.

    A hash of exactly the message the HMAC covers, so nothing a replayer can change without
    breaking ``verify`` (the invocation id, other headers, where the timestamp ends and the
    body begins) moves the key. Two deliveries share it only when they carry the same body
    signed in the same second: one event as far as the ticket is concerned (the worker
    re-fetches it anyway).
    """
    timestamp = Headers(headers).get(TIMESTAMP_HEADER) or ""
    digest = hashlib.sha256(timestamp.encode() + body).hexdigest()[:40]
    return f"{instance}:zendesk-signed:{digest}"


def _clean_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if text in ("", "0", "-1") or not _DIGITS.match(text):
        return None
    return text


def parse(headers: Mapping[str, str], body: bytes, *, instance: str) -> list[TicketEvent]:
    """Events in one delivery; non-ticket events (e.g. user.deleted) give an empty list."""
    data = load_json(body)  # refuses what no store can keep, naming where, never the value
    if not isinstance(data, Mapping):
        raise WebhookPayloadError("body is not a JSON object")
    kind = str(data.get("type") or "")
    if kind.startswith(EVENT_PREFIX):
        return _parse_event(headers, body, data, kind.removeprefix(EVENT_PREFIX), instance)
    if "ticket_id" in data or isinstance(data.get("ticket"), Mapping):
        return [_parse_trigger(headers, body, data, instance)]
    raise WebhookPayloadError(
        "not a Zendesk ticket webhook: expected an event subscription payload "
        '("type": "zen:event-type:ticket.…") or the trigger body with "ticket_id"'
    )


def _parse_event(
    headers: Mapping[str, str],
    body: bytes,
    data: Mapping[str, Any],
    kind: str,
    instance: str,
) -> list[TicketEvent]:
    if not kind.startswith("ticket."):
        return []
    detail = data.get("detail") if isinstance(data.get("detail"), Mapping) else {}
    assert isinstance(detail, Mapping)
    ticket_id = _clean_id(detail.get("id"))
    subject = str(data.get("subject") or "")
    if ticket_id is None and subject.startswith("zen:ticket:"):
        ticket_id = _clean_id(subject.removeprefix("zen:ticket:"))
    if ticket_id is None:
        raise WebhookPayloadError("a ticket event without a ticket id (detail.id)")
    event_id = str(data.get("id") or "").strip()
    dedupe = (
        f"{instance}:zendesk-event:{event_id}"
        if event_id and len(event_id) <= MAX_EVENT_ID
        else signed_dedupe_key(instance, headers, body)
    )
    try:
        occurred = parse_time(data.get("time"))
    except ValueError:
        occurred = None
    return [
        TicketEvent(
            instance=instance,
            ticket_id=ticket_id,
            dedupe_key=dedupe,
            kind=kind,
            actor=_clean_id(detail.get("actor_id")),
            occurred_at=occurred,
        )
    ]


def _parse_trigger(
    headers: Mapping[str, str], body: bytes, data: Mapping[str, Any], instance: str
) -> TicketEvent:
    ticket = data.get("ticket") if isinstance(data.get("ticket"), Mapping) else {}
    assert isinstance(ticket, Mapping)
    raw_id = data.get("ticket_id", ticket.get("id"))
    ticket_id = _clean_id(raw_id)
    if ticket_id is None:
        # The value is not quoted: whatever the body holds stays out of replies and logs.
        unrendered = "{{" in str(raw_id)
        raise WebhookPayloadError(
            "ticket_id is the unrendered placeholder {{ticket.id}}: put it in a trigger body"
            if unrendered
            else "ticket_id is not a ticket id (is the placeholder {{ticket.id}} in the "
            "trigger body?)"
        )
    found = Headers(headers)
    dedupe = signed_dedupe_key(instance, headers, body)
    actor = _clean_id(data.get("actor_id", data.get("current_user_id")))
    try:
        occurred = parse_time(found.get(TIMESTAMP_HEADER))
    except ValueError:
        occurred = None
    return TicketEvent(
        instance=instance,
        ticket_id=ticket_id,
        dedupe_key=dedupe,
        kind="ticket.updated",
        actor=actor,
        occurred_at=occurred,
    )
