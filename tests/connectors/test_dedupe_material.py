"""What each helpdesk's dedupe key is made of: nothing a replayer can change for free.

- Zendesk signs ``timestamp + body``: the key is the event id in the body, else a hash of
  exactly those signed bytes; unsigned headers (invocation id, webhook id) do not enter it.
- Freshdesk signs nothing (a shared secret authenticates the sender, not the body): the key is
  the ticket, a hash of the body and the receive-time slot; no header enters it, so replaying a
  captured delivery with other credentials' shape (basic auth vs the secret header) or other
  headers is still a duplicate inside the slot.
- Zoho's JWT covers its claims, not the body: the key hashes the event itself (canonical JSON,
  so key order and spacing do not make a new event); neither the JWT nor the URL token enters it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from escbridge_freshdesk import webhook as fw
from escbridge_zendesk import webhook as zw
from escbridge_zohodesk import webhook as zo

TS = "2026-03-11T09:30:00Z"
ZD_BODY = b'{"escbridge": 1, "ticket_id": "77", "actor_id": "9003"}'


def zendesk_key(headers: dict[str, str], body: bytes = ZD_BODY) -> str:
    (event,) = zw.parse(headers, body, instance="eu")
    return event.dedupe_key


def test_zendesk_key_ignores_every_unsigned_header() -> None:
    signed = {zw.TIMESTAMP_HEADER: TS, zw.SIGNATURE_HEADER: zw.sign("s3cret", TS, ZD_BODY)}
    key = zendesk_key(signed)
    for extra in (
        {zw.INVOCATION_HEADER: "inv-1"},
        {zw.INVOCATION_HEADER: "inv-2"},
        {zw.WEBHOOK_ID_HEADER: "01HANAHCF4QSDH4KXY4G2SAR4C"},
        {"X-Zendesk-Account-Id": "1", "X-Request-Id": "r"},
    ):
        assert zendesk_key({**signed, **extra}) == key
    assert zendesk_key({**signed, zw.TIMESTAMP_HEADER: "2026-03-11T09:30:01Z"}) != key
    assert zendesk_key(signed, ZD_BODY.replace(b"77", b"78")) != key


def test_freshdesk_key_comes_from_the_body_ticket_and_slot_only() -> None:
    body = b'{"ticket_id": "1234", "event": "{ticket_action:updated}"}'
    now = datetime(2026, 3, 11, 9, 31, tzinfo=UTC)

    def key(headers: dict[str, str]) -> str:
        (event,) = fw.parse_webhook(headers, body, instance="fd", now=now, window=900)
        return event.dedupe_key

    first = key({"Authorization": "Basic ZXNjYnJpZGdlOnNlY3JldA==", "Content-Type": "json"})
    assert key({"X-Escbridge-Secret": "secret", "Content-Type": "json"}) == first
    assert key({"X-Request-Id": "other", "Content-Type": "json"}) == first


def test_zoho_key_is_the_event_itself_not_its_transport() -> None:
    event = {
        "eventType": "Ticket_Update",
        "orgId": "55",
        "eventTime": "1618493667998",
        "payload": {"id": "1892000000100015", "modifiedBy": "7", "status": "Open"},
    }
    same_event_other_spelling = json.dumps([dict(reversed(list(event.items())))], indent=2)
    (a,) = zo.parse_events(json.dumps([event]).encode(), "zo")
    (b,) = zo.parse_events(same_event_other_spelling.encode(), "zo")
    assert a.dedupe_key == b.dedupe_key
    changed = {**event, "eventTime": "1618493667999"}
    (c,) = zo.parse_events(json.dumps([changed]).encode(), "zo")
    assert c.dedupe_key != a.dedupe_key
