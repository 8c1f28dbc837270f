"""The version a Zoho Desk escalation reports is the ticket as escbridge's own agent left it.

The worker drops a webhook that names no actor as escbridge's own change when the ticket still
has that version (``escbridge.processing.OwnWrites``), so a version that holds a person's change
would drop that person's change. A tag call's answer carries no ``modifiedTime``: after one, the
ticket is read once and its version believed only when escbridge's agent made the last change.
"""

from __future__ import annotations

from test_zoho_apply import L2, TICKET, TO_L2, comment_reply, patched
from test_zoho_apply import connector as connector  # the fixture: the API client and its groups
from zohodesk_support import ticket_json

AGENT = "55430000000064999"  # who the connector writes as (the comment's commenter)
PERSON = "55430000000064111"


def test_a_persons_change_right_after_escbridges_write_is_never_taken_for_its_version(
    rsps, connector
):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    escalated = patched(raw, teamId=L2, priority="High", modifiedBy=AGENT)
    person = {**escalated, "modifiedTime": "2026-10-05T18:00:09.000Z", "modifiedBy": PERSON}
    rsps.get(TICKET, json=person)  # the read after the tag call: someone was quicker
    rsps.post(f"{TICKET}/comments", json=comment_reply("note"))
    rsps.patch(TICKET, json={**escalated, "modifiedTime": "2026-10-05T18:00:01.000Z"})

    result = connector.apply(connector.parse_ticket(raw), TO_L2)

    assert result.ok and not result.skipped
    assert result.version is None  # unknown, so the worker decides on every later event
