"""Replays are duplicates: the dedupe key comes only from what the signature covers.

Issue 14: a captured Zendesk delivery replayed inside the replay window with its unsigned
``X-Zendesk-Webhook-Invocation-Id`` changed or removed was accepted as new. Every replay here
reuses the captured signature and timestamp (what an attacker has), so it passes ``verify``;
the door must answer 200 duplicate and store nothing new. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from escbridge_zendesk.webhook import INVOCATION_HEADER, TIMESTAMP_HEADER
from webhook_support import Rig, event_body, json_of, signed

URL = "/webhooks/eu"

TRIGGER = json.dumps({"escbridge": 1, "ticket_id": "77", "actor_id": "9003"}).encode()


def post(rig: Rig, body: bytes, headers: dict[str, str]) -> Any:
    return rig.client.post(URL, data=body, headers=headers)


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != name.lower()}


@pytest.mark.parametrize("form", ["trigger", "event"])
def test_a_replay_with_a_changed_or_missing_invocation_id_is_a_duplicate(
    db_rig: Rig, form: str
) -> None:
    body = TRIGGER if form == "trigger" else event_body(4711)
    captured = signed(body, invocation="inv-1")
    first = post(db_rig, body, captured)
    assert first.status_code == 202
    replays = [
        {**captured, INVOCATION_HEADER: "inv-2"},
        {**captured, INVOCATION_HEADER: "attacker-chosen-" + "x" * 40},
        without(captured, INVOCATION_HEADER),
        {**captured, "X-Zendesk-Webhook-Id": "another-webhook"},
    ]
    for headers in replays:
        again = post(db_rig, body, headers)
        assert again.status_code == 200, again.data
        assert json_of(again) == {"status": "duplicate", "event_id": json_of(first)["event_id"]}
    assert db_rig.pending() == 1


def test_moving_bytes_between_timestamp_and_body_keeps_the_signature_but_is_not_accepted(
    rig: Rig,
) -> None:
    """HMAC(timestamp + body) is the same when bytes move across the boundary; such a request
    must not become a second event (its timestamp or its body no longer parses)."""
    captured = signed(TRIGGER)
    assert post(rig, TRIGGER, captured).status_code == 202
    stamp = captured[TIMESTAMP_HEADER]
    shifted_left = {**captured, TIMESTAMP_HEADER: stamp + TRIGGER[:1].decode()}
    shifted_right = {**captured, TIMESTAMP_HEADER: stamp[:-1]}
    assert post(rig, TRIGGER[1:], shifted_left).status_code in (400, 401)
    assert post(rig, stamp[-1:].encode() + TRIGGER, shifted_right).status_code in (400, 401)
    assert rig.pending() == 1


def test_distinct_genuine_deliveries_are_each_stored(rig: Rig) -> None:
    """The same trigger body signed at two different times is two events (two changes)."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = signed(TRIGGER, at=now, invocation="inv-1")
    second = signed(TRIGGER, at=now.replace(second=(now.second + 1) % 60), invocation="inv-2")
    assert first[TIMESTAMP_HEADER] != second[TIMESTAMP_HEADER]
    assert post(rig, TRIGGER, first).status_code == 202
    assert post(rig, TRIGGER, second).status_code == 202
    other = json.dumps({"escbridge": 1, "ticket_id": "78", "actor_id": "9003"}).encode()
    assert post(rig, other, signed(other, at=now)).status_code == 202
    assert rig.pending() == 3
