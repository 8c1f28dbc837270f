"""Requests from a Freshdesk automation rule's "Trigger webhook" action.

Freshdesk signs nothing (no HMAC, no timestamp, no delivery id), so a request is genuine only
if it carries the shared secret the admin typed into the rule: as the basic-auth password (or,
in the rule's "API key" mode, as the basic-auth user), or in a custom header. Both are compared
in constant time. The body is only a hint: the ticket id is read from it and the ticket is
re-fetched; everything else in it is display text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from escbridge.connector.contract import Headers
from escbridge.connector.payload import load_json
from escbridge.errors import PayloadNotJsonError, WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent

__all__ = [
    "dedupe_key",
    "event_kind",
    "extract_actor",
    "extract_ticket_id",
    "parse_body",
    "parse_webhook",
    "verify_webhook",
]

_DIGITS = re.compile(r"^#?\s*(\d{1,19})$")
_URL_ID = re.compile(r"/(?:helpdesk/|a/)?tickets/(\d{1,19})(?:[/?#]|$)")
_PLACEHOLDER = re.compile(r"\{\{.*\}\}")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def verify_webhook(
    headers: Mapping[str, str],
    *,
    secret: str | None,
    username: str,
    header_name: str,
) -> None:
    """Raise ``WebhookAuthError`` unless the request carries the configured secret.

    Accepted: ``Authorization: Basic`` with ``username:secret`` (rule setting "Username +
    Password"), with ``secret:<anything>`` (rule setting "API key", which sends ``key:X``), or
    the header ``<header_name>: secret``. The messages never contain what was sent.
    """
    if not secret:
        raise WebhookAuthError("no webhook_secret is configured for this instance")
    found = Headers(headers)
    supplied = found.get(header_name)
    if supplied is not None:
        if _same(supplied.strip(), secret):
            return
        raise WebhookAuthError(f"wrong secret in the {header_name} header")
    authorization = found.get("Authorization")
    if authorization is None:
        raise WebhookAuthError(f"no credentials: expected basic auth or the {header_name} header")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise WebhookAuthError("unsupported Authorization scheme (expected Basic)")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise WebhookAuthError("malformed basic-auth credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise WebhookAuthError("malformed basic-auth credentials")
    # Evaluate both forms every time so the timing does not reveal which one was tried.
    as_password = _same(user, username) & _same(password, secret)
    as_api_key = _same(user, secret)
    if as_password or as_api_key:
        return
    raise WebhookAuthError("wrong basic-auth credentials")


def parse_body(headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
    """The rule's content as a mapping: JSON (recommended) or X-FORM-URLENCODED."""
    content_type = (Headers(headers).get("Content-Type") or "").lower()
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        raise WebhookPayloadError("empty body: set the rule's Content to the escbridge template")
    if "xml" in content_type or text.startswith("<"):
        raise WebhookPayloadError("XML bodies are not supported: set the rule's Encoding to JSON")
    if "x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        data = load_json(body)
    except PayloadNotJsonError:  # broken syntax only: a NUL or a surrogate is refused
        return _salvage(text)
    if not isinstance(data, Mapping):
        raise WebhookPayloadError("the body must be a JSON object")
    return data


_LOOSE_ID = re.compile(r'"(?:ticket_id|ticket)"\s*:\s*(?:\{[^{}]*?"id"\s*:\s*)?"?\s*#?(\d{1,19})\b')
_LOOSE_EVENT = re.compile(r'"(?:event|triggered_event)"\s*:\s*"(\{[^"]*\})"')


def _salvage(text: str) -> Mapping[str, Any]:
    """Freshdesk substitutes placeholders as plain text, so a quote or a line break in, say, a
    subject makes the body invalid JSON. The ticket id is all we need: find it by pattern."""
    match = _LOOSE_ID.search(text)
    if match is None:
        raise WebhookPayloadError("the body is not valid JSON (check the rule's Content)")
    event = _LOOSE_EVENT.search(text)
    return {"ticket_id": match.group(1), "event": event.group(1) if event else ""}


def _candidates(data: Mapping[str, Any]) -> list[Any]:
    """Where the common templates put the ticket id, most specific first."""
    out: list[Any] = []
    for root in (data, data.get("freshdesk_webhook"), data.get("data")):
        if not isinstance(root, Mapping):
            continue
        ticket = root.get("ticket")
        if isinstance(ticket, Mapping):
            out += [ticket.get("id"), ticket.get("ticket_id"), ticket.get("display_id")]
        out += [
            root.get("ticket_id"),
            root.get("ticket[id]"),
            root.get("freshdesk_webhook[ticket_id]"),
        ]
    # form-encoded "Simple" content: freshdesk_webhook[ticket_id]=11
    for key, value in data.items():
        if isinstance(key, str) and re.fullmatch(r"\w*\[?ticket(?:_|\]\[)id\]?", key):
            out.append(value)
    return [c for c in out if c is not None]


def _ticket_id_from(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return str(int(value))
    if isinstance(value, str):
        match = _DIGITS.match(value.strip())
        if match and int(match.group(1)) > 0:
            return str(int(match.group(1)))
    return None


def extract_ticket_id(data: Mapping[str, Any]) -> str:
    """``ticket.id`` as a number or a string, in any of the usual template shapes.

    Falls back to a ``ticket_url``/``url`` ending in ``/tickets/<id>``.
    """
    candidates = _candidates(data)
    for value in candidates:
        found = _ticket_id_from(value)
        if found is not None:
            return found
    for root in (data, data.get("freshdesk_webhook"), data.get("ticket")):
        if isinstance(root, Mapping):
            for key in ("ticket_url", "url", "portal_url"):
                url = root.get(key)
                if isinstance(url, str):
                    match = _URL_ID.search(url)
                    if match:
                        return str(int(match.group(1)))
    unrendered = any(isinstance(v, str) and _PLACEHOLDER.search(v) for v in candidates)
    if unrendered:
        raise WebhookPayloadError(
            "the ticket id placeholder was not rendered: use {{ticket.id}} in the rule's Content"
        )
    raise WebhookPayloadError(
        'no ticket id in the body: expected {"ticket": {"id": "{{ticket.id}}"}}'
    )


def event_kind(data: Mapping[str, Any]) -> str:
    """``ticket.created``, ``ticket.note_added`` or ``ticket.updated`` from ``{{triggered_event}}``.

    Freshdesk renders it as pseudo-JSON with bare keys (``{ticket_action:created}``) or, in newer
    code, as escaped JSON (``{\\"ticket_action\\":\\"created\\"}``): quotes are ignored.
    """
    raw: Any = None
    for root in (data, data.get("freshdesk_webhook")):
        if isinstance(root, Mapping):
            raw = raw or root.get("event") or root.get("triggered_event")
    if isinstance(raw, Mapping):
        raw = json.dumps(raw)
    text = re.sub(r'[\\"\s]', "", str(raw or "")).lower()
    if "ticket_action:created" in text:
        return "ticket.created"
    if "note_type:" in text or "reply_sent" in text:
        return "ticket.note_added"
    return "ticket.updated"


def extract_actor(data: Mapping[str, Any]) -> str | None:
    """Who made the change, when the template sends it (``performer``: an email or an id)."""
    for root in (data, data.get("freshdesk_webhook")):
        if not isinstance(root, Mapping):
            continue
        for key in ("performer", "actor", "event_performer", "triggered_by"):
            value = root.get(key)
            if isinstance(value, Mapping):
                value = value.get("email") or value.get("id")
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, str):
                text = value.strip().lower()
                if _EMAIL.match(text) or text.isdigit():
                    return text
    return None


def dedupe_key(ticket_id: str, body: bytes, now: datetime, window: int) -> str:
    """``freshdesk:<ticket>:<sha256 of the body>:<window number>``.

    The same body for the same ticket inside one ``window``-second slot (UTC epoch based) is
    one event: a Freshdesk redelivery 5 min later usually lands in the same slot, and one that
    crosses a slot boundary is harmless (the ticket is re-fetched and its level marker stops a
    second escalation).
    """
    digest = hashlib.sha256(body).hexdigest()[:40]
    slot = int(now.timestamp()) // window
    return f"freshdesk:{ticket_id}:{digest}:{slot}"


def parse_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    instance: str,
    now: datetime,
    window: int,
) -> list[TicketEvent]:
    """One event per delivery (Freshdesk sends one ticket per rule firing)."""
    data = parse_body(headers, body)
    ticket_id = extract_ticket_id(data)
    return [
        TicketEvent(
            instance=instance,
            ticket_id=ticket_id,
            dedupe_key=dedupe_key(ticket_id, body, now, window),
            kind=event_kind(data),
            actor=extract_actor(data),
            occurred_at=None,  # Freshdesk sends no event time; the ticket is re-fetched anyway
        )
    ]
