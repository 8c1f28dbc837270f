"""parse_ticket on recorded-shaped payloads: what an admin's rules see of a Zoho Desk ticket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from escbridge_zohodesk.parse import (
    PriorityMap,
    format_time,
    html_to_text,
    parse_ticket,
    parse_time,
)
from zohodesk_support import Clock, load, make_connector, ticket_json

from escbridge.model import Channel, Priority, Status


def test_the_recorded_ticket():
    ticket = parse_ticket(ticket_json(), instance="support-in")
    assert ticket.id == "55430000068840041"
    assert ticket.instance == "support-in"
    assert ticket.subject == "Battery not charging"
    assert ticket.description == "The battery stopped charging\xa0after the update.\nPlease help."
    assert ticket.status is Status.OPEN
    assert ticket.priority is Priority.NORMAL  # "Medium"
    assert ticket.channel is Channel.CHAT
    assert ticket.group == "Support"  # no team: the department's name
    assert ticket.assignee is None
    assert ticket.requester.email == "carol@zylker.com"
    assert ticket.requester.name == "Carol Diaz"
    assert ticket.organization is not None and ticket.organization.name == "Zylker"
    assert ticket.created_at == datetime(2026, 10, 5, 17, 28, 58, tzinfo=UTC)
    assert ticket.due_at == datetime(2026, 10, 6, 17, 28, 58, tzinfo=UTC)
    assert ticket.last_customer_reply_at == ticket.created_at
    assert ticket.version == "2026-10-05T17:28:58.000Z"
    assert ticket.level is None
    assert ticket.custom_fields == {
        "cf_escalation_level": None,
        "cf_overdue_2h_triggered": "false",
        "is_overdue": False,
        "is_response_overdue": False,
        "is_escalated": False,
    }


def test_read_only_flags_are_visible_to_rules():
    ticket = parse_ticket(ticket_json(isOverDue=True, isEscalated="true"))
    assert ticket.custom_fields["is_overdue"] is True
    assert ticket.custom_fields["is_escalated"] is True


def test_epoch_millisecond_timestamps_as_in_the_oas_examples():
    raw = ticket_json(createdTime="1618493667780", modifiedTime=1618493667780, dueDate=None)
    ticket = parse_ticket(raw)
    assert ticket.created_at == datetime(2021, 4, 15, 13, 34, 27, 780000, tzinfo=UTC)
    assert ticket.updated_at == ticket.created_at
    assert ticket.due_at is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-10-05T17:28:58.000Z", datetime(2026, 10, 5, 17, 28, 58, tzinfo=UTC)),
        ("2026-10-05T17:28:58Z", datetime(2026, 10, 5, 17, 28, 58, tzinfo=UTC)),
        ("1618493667780", datetime(2021, 4, 15, 13, 34, 27, 780000, tzinfo=UTC)),
        (1618493667, datetime(2021, 4, 15, 13, 34, 27, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_times(value, expected):
    assert parse_time(value) == expected


def test_search_ranges_use_desks_millisecond_form():
    assert format_time(datetime(2026, 7, 14, tzinfo=UTC)) == "2026-07-14T00:00:00.000Z"


def test_team_name_from_the_included_object_or_the_cache():
    included = ticket_json(
        teamId="55430000000120011", team={"id": "55430000000120011", "name": "L2 Support"}
    )
    assert parse_ticket(included).group == "L2 Support"
    bare = ticket_json(teamId="55430000000120011", department=None)
    assert parse_ticket(bare, team_names={"55430000000120011": "L2 Support"}).group == "L2 Support"
    assert parse_ticket(bare).group == "55430000000120011"  # unknown name: the id, not a guess


@pytest.mark.parametrize(
    ("status", "status_type", "expected"),
    [
        ("Open", "Open", Status.OPEN),
        ("Escalated", "Open", Status.OPEN),
        ("On Hold", "On Hold", Status.ON_HOLD),
        ("Waiting on customer", "On Hold", Status.PENDING),
        ("Closed", "Closed", Status.CLOSED),
        ("Resolved", "Closed", Status.SOLVED),
        ("Awaiting parts", "On Hold", Status.ON_HOLD),
        ("Done-ish", "Closed", Status.CLOSED),
    ],
)
def test_status_and_status_type(status, status_type, expected):
    assert parse_ticket(ticket_json(status=status, statusType=status_type)).status is expected


def test_custom_status_mapping_from_config():
    raw = ticket_json(status="Awaiting parts", statusType="On Hold")
    ticket = parse_ticket(raw, status_map={"awaiting parts": Status.PENDING})
    assert ticket.status is Status.PENDING


def test_priority_picklist_with_tenant_values():
    priorities = PriorityMap(
        {
            "Low": Priority.LOW,
            "Medium": Priority.NORMAL,
            "High": Priority.HIGH,
            "Critical": Priority.URGENT,
        }
    )
    assert (
        parse_ticket(ticket_json(priority="Critical"), priorities=priorities).priority
        is Priority.URGENT
    )
    assert (
        parse_ticket(ticket_json(priority="high"), priorities=priorities).priority is Priority.HIGH
    )
    assert (
        parse_ticket(ticket_json(priority=None), priorities=priorities).priority is Priority.NORMAL
    )
    assert parse_ticket(ticket_json(priority="Whatever")).priority is Priority.NORMAL
    assert not priorities.known("Whatever")


def test_writing_a_priority_the_portal_lacks_uses_the_nearest_it_has():
    default = PriorityMap({"Low": Priority.LOW, "Medium": Priority.NORMAL, "High": Priority.HIGH})
    assert default.write(Priority.HIGH) == "High"
    assert default.write(Priority.URGENT) == "High"  # no "Urgent" in Zoho by default
    assert default.write(Priority.NORMAL) == "Medium"
    tenant = PriorityMap({"P3": Priority.NORMAL, "P1": Priority.URGENT, "P2": Priority.HIGH})
    assert tenant.write(Priority.URGENT) == "P1"
    assert tenant.write(Priority.LOW) == "P3"


def test_level_from_the_level_field_in_either_form():
    assert parse_ticket(ticket_json(cf={"cf_escalation_level": "escbridge_l2"})).level == "l2"
    assert parse_ticket(ticket_json(cf={"cf_escalation_level": "L3"})).level == "l3"
    assert parse_ticket(ticket_json(cf={"cf_escalation_level": ""})).level is None
    custom = ticket_json(cf={"cf_level": "escbridge_billing"})
    assert parse_ticket(custom, level_field="cf_level").level == "billing"


def test_level_from_marker_tags_when_the_json_carries_tags():
    raw = ticket_json(tags=[{"name": "VIP"}, "escbridge_l2"])
    ticket = parse_ticket(raw)
    assert ticket.tags == frozenset({"vip", "escbridge_l2"})
    assert ticket.level == "l2"
    assert parse_ticket(raw, level_field=None).level == "l2"
    # the field wins when both are there: it is what escbridge writes
    both = ticket_json(tags=["escbridge_l2"], cf={"cf_escalation_level": "escbridge_l3"})
    assert parse_ticket(both).level == "l3"


def test_a_webhook_payload_parses_like_a_ticket():
    payload = {**ticket_json(), **load("webhook_ticket_update.json")[0]["payload"]}
    ticket = parse_ticket(payload)
    assert ticket.id == "31138000011967402"
    assert ticket.updated_at == datetime(2021, 4, 15, 13, 34, 27, tzinfo=UTC)


def test_a_ticket_without_times_is_refused():
    raw = ticket_json()
    del raw["createdTime"], raw["modifiedTime"]
    with pytest.raises(ValueError, match="createdTime"):
        parse_ticket(raw)


def test_html_descriptions_become_words():
    assert html_to_text("<div>Hi&nbsp;there</div><div><b>urgent</b> please</div>") == (
        "Hi\xa0there\nurgent please"
    )
    assert html_to_text("plain &amp; simple") == "plain & simple"


def test_the_connector_parses_with_its_configured_mapping():
    connector = make_connector(
        Clock(), priority_map={"Low": "low", "Medium": "normal", "High": "high", "Urgent": "urgent"}
    )
    assert connector.parse_ticket(ticket_json(priority="Urgent")).priority is Priority.URGENT
    assert connector.parse_ticket(ticket_json()).instance == "support-eu"
