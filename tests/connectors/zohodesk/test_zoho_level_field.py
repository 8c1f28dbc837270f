"""The level marker in a custom field (``level_marker: field``): the option for portals that
already keep escbridge's level in one. The default, a tag, is tested in test_zoho_apply.py,
test_zoho_bulk.py and test_zoho_tags.py."""

from __future__ import annotations

import json

import pytest
import responses
from escbridge_zohodesk import ZohoDeskConfig
from pydantic import ValidationError
from zohodesk_support import (
    DESK,
    TICKET_ID,
    load,
    make_connector,
    settings,
    ticket_json,
    token_reply,
)

from escbridge.model import Actions, Priority

TICKET = f"{DESK}/tickets/{TICKET_ID}"
COMMENTS = f"{TICKET}/comments"
L2 = "55430000000120011"
TO_L2 = Actions(
    group="L2 Support",
    priority=Priority.HIGH,
    note="Escalated by R-12: SLA breach risk",
    level="l2",
    tags_add=("escbridge_l2", "sla_breach"),
    tags_remove=("escbridge_l1",),
)


@pytest.fixture
def connector(rsps, clock):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    rsps.post(f"{TICKET}/associateTag", json={"data": []})
    rsps.post(f"{TICKET}/dissociateTag", body="")
    return make_connector(clock, level_marker="field")


def sent(rsps, method: str, suffix: str = "") -> list[dict]:
    return [
        json.loads(c.request.body)
        for c in rsps.calls
        if c.request.method == method and c.request.url.split("?")[0] == TICKET + suffix
    ]


def test_the_patch_writes_the_level_field_last_after_the_rules_tags(rsps, connector):
    raw = ticket_json(tagCount="1")
    rsps.get(TICKET, json=raw)
    rsps.get(
        f"{TICKET}/tags", json={"tags": [{"id": "1", "name": "escbridge_l1", "tagType": "MANUAL"}]}
    )
    rsps.post(COMMENTS, json={**load("comment.json"), "content": "x"})
    rsps.patch(TICKET, json={**raw, "teamId": L2, "cf": {"cf_escalation_level": "escbridge_l2"}})

    assert connector.apply(connector.parse_ticket({**raw, "tags": ["escbridge_l1"]}), TO_L2).ok

    assert sent(rsps, "PATCH") == [
        {"teamId": L2, "priority": "High", "cf": {"cf_escalation_level": "escbridge_l2"}}
    ]
    # the rule's tag, without the marker (the field carries the level); the old marker tag goes
    assert sent(rsps, "POST", "/associateTag") == [{"tags": ["sla_breach"]}]
    assert sent(rsps, "POST", "/dissociateTag") == [{"tags": ["escbridge_l1"]}]
    order = [
        c.request.url.split("?")[0].rsplit("/", 1)[-1]
        for c in rsps.calls
        if c.request.method in ("POST", "PATCH") and c.request.url.startswith(DESK)
    ]
    assert order == ["comments", "associateTag", "dissociateTag", TICKET_ID]


def test_a_crash_after_the_update_is_recognised_by_the_level_field(rsps, connector):
    done = ticket_json(
        teamId=L2, priority="High", commentCount="1", cf={"cf_escalation_level": "escbridge_l2"}
    )
    rsps.get(TICKET, json=done)
    result = connector.apply(connector.parse_ticket(ticket_json()), TO_L2)
    assert result.ok and result.recovered
    assert [c for c in rsps.calls if c.request.method != "GET" and DESK in c.request.url] == []


def test_bulk_writes_the_level_field_in_the_last_update_many(rsps, clock):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    tickets = {str(9000 + i): ticket_json(id=str(9000 + i)) for i in range(3)}
    for ticket_id, raw in tickets.items():
        rsps.get(f"{DESK}/tickets/{ticket_id}", json=raw)
        rsps.post(f"{DESK}/tickets/{ticket_id}/comments", json=load("comment.json"))
    rsps.post(f"{DESK}/tickets/updateMany", status=204)
    connector = make_connector(clock, level_marker="field")
    actions = Actions(group="L2 Support", priority=Priority.HIGH, note="SLA risk", level="l2")

    results = connector.apply_many([(connector.parse_ticket(t), actions) for t in tickets.values()])

    assert all(r.ok for r in results)
    bulk = [json.loads(c.request.body) for c in rsps.calls if c.request.url.endswith("updateMany")]
    assert [(b["fieldName"], b["isCustomField"]) for b in bulk] == [
        ("teamId", False),
        ("priority", False),
        ("cf_escalation_level", True),  # last: the level marker says "done" once all else is
    ]
    assert bulk[-1]["fieldValue"] == "escbridge_l2"
    assert not [c for c in rsps.calls if "Tag" in c.request.url]


def test_which_marker_the_settings_choose():
    def marker(**overrides: object) -> tuple[str, str | None]:
        config = ZohoDeskConfig.model_validate(settings(**overrides))
        return config.level_marker, config.marker_field

    assert marker() == ("tag", None)  # the default: nothing for an admin to create
    # an instance that named its field before tags existed keeps it
    assert marker(level_field="cf_level") == ("field", "cf_level")
    assert marker(level_marker="field") == ("field", "cf_escalation_level")
    assert marker(level_marker="tag", level_field="cf_level") == ("tag", None)
    assert marker(level_field=None) == ("tag", None)  # the old "marker off": now the tag
    with pytest.raises(ValidationError, match="level_marker: field needs level_field"):
        marker(level_marker="field", level_field=None)
    with pytest.raises(ValidationError, match="level_marker"):
        marker(level_marker="custom")


def test_the_field_marker_reads_the_field_before_the_tags(rsps, connector, clock):
    raw = ticket_json(tags=["escbridge_l3"], cf={"cf_escalation_level": "escbridge_l2"})
    assert connector.parse_ticket(raw).level == "l2"
    tagged = make_connector(clock)  # the default, a tag marker
    assert tagged.parse_ticket(raw).level == "l3"


def test_the_field_marker_re_reads_search_items_without_the_field(rsps, connector):
    item = {k: v for k, v in ticket_json().items() if k != "cf"}
    rsps.get(TICKET, json=ticket_json(cf={"cf_escalation_level": "escbridge_l2"}))
    [ticket] = connector._open_tickets([item])
    assert ticket.level == "l2"
    assert responses.GET in {c.request.method for c in rsps.calls}
