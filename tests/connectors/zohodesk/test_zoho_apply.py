"""apply: one escalation written as the admin expects, and never twice or half after a crash.

The level marker is a tag here (the default, ``level_marker: tag``); the custom-field option
is tested in test_zoho_level_field.py."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from zohodesk_support import DESK, TICKET_ID, Clock, load, make_connector, ticket_json, token_reply

from escbridge.errors import Conflict, RateLimited
from escbridge.model import Actions, Priority

TICKET = f"{DESK}/tickets/{TICKET_ID}"
COMMENTS = f"{TICKET}/comments"
TAGS = f"{TICKET}/tags"
ASSOCIATE, DISSOCIATE = f"{TICKET}/associateTag", f"{TICKET}/dissociateTag"
SUPPORT, BILLING = "55430000000010772", "55430000000010790"
L2, BILLING_TEAM = "55430000000120011", "55430000000120012"

TO_L2 = Actions(
    group="L2 Support",
    priority=Priority.HIGH,
    note="Escalated by R-12: SLA breach risk",
    level="l2",
    tags_add=("escbridge_l2",),
)
TO_BILLING = Actions(
    group="Billing Specialists", note="Billing question, handing over", level="billing"
)


def tag_calls(rsps) -> None:
    """associateTag answers with the tags (TicketTag.json commonTagResponse), dissociateTag
    with an empty 200."""
    rsps.add_callback(
        responses.POST,
        ASSOCIATE,
        callback=lambda r: (200, {}, json.dumps({"data": [
            {"id": "5543000009000001", "name": n, "tagType": "MANUAL"}
            for n in json.loads(r.body)["tags"]
        ]})),
    )  # fmt: skip
    rsps.post(DISSOCIATE, body="")


@pytest.fixture
def connector(rsps, clock):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    tag_calls(rsps)
    return make_connector(clock)


def patched(ticket: dict, **changes) -> dict:
    out = {**ticket, **{k: v for k, v in changes.items() if k != "cf"}}
    out["cf"] = {**ticket["cf"], **changes.get("cf", {})}
    return out


def comment_reply(
    content: str,
    *,
    public: bool = False,
    at: str = "2026-10-05T18:00:00.000Z",
    comment_id: str = "55430000068767745",
) -> dict:
    return {
        **load("comment.json"),
        "id": comment_id,
        "content": content,
        "isPublic": public,
        "commentedTime": at,
        "commenterId": "55430000000064999",
    }


def bodies(rsps, method: str, url: str) -> list[dict]:
    return [
        json.loads(c.request.body)
        for c in rsps.calls
        if c.request.method == method and c.request.url.split("?")[0] == url
    ]


def writes(rsps) -> list[str]:
    return [
        f"{c.request.method} {c.request.url.split('?')[0].removeprefix(DESK)}"
        for c in rsps.calls
        if c.request.method in ("POST", "PATCH", "DELETE") and "/api/v1/" in c.request.url
    ]


def test_moving_to_a_team_in_the_same_department(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    escalated = patched(raw, teamId=L2, priority="High", modifiedBy="55430000000064999")
    rsps.get(TICKET, json={**escalated, "modifiedTime": "2026-10-05T18:00:02.000Z"})
    rsps.post(COMMENTS, json=comment_reply("note"))
    rsps.patch(TICKET, json={**escalated, "modifiedTime": "2026-10-05T18:00:01.000Z"})
    result = connector.apply(connector.parse_ticket(raw), TO_L2)

    assert result.ok and not result.skipped
    # the marker came after the PATCH: the version is the one escbridge's agent left after it
    assert result.version == "2026-10-05T18:00:02.000Z"
    assert writes(rsps) == [
        f"POST /tickets/{TICKET_ID}/comments",
        f"PATCH /tickets/{TICKET_ID}",
        f"POST /tickets/{TICKET_ID}/associateTag",  # the level marker: last, the commit point
    ]
    assert bodies(rsps, "PATCH", TICKET) == [{"teamId": L2, "priority": "High"}]
    assert bodies(rsps, "POST", ASSOCIATE) == [{"tags": ["escbridge_l2"]}]
    [note] = bodies(rsps, "POST", COMMENTS)
    assert note["isPublic"] is False and note["contentType"] == "plainText"
    assert note["content"].startswith("Escalated by R-12: SLA breach risk\n\n[escbridge l2 ref:")


def test_a_team_in_another_department_moves_the_ticket_there(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("note"))
    rsps.patch(TICKET, json=patched(raw, departmentId=BILLING, teamId=BILLING_TEAM))
    assert connector.apply(connector.parse_ticket(raw), TO_BILLING).ok
    assert bodies(rsps, "PATCH", TICKET) == [{"departmentId": BILLING, "teamId": BILLING_TEAM}]
    assert bodies(rsps, "POST", ASSOCIATE) == [{"tags": ["escbridge_billing"]}]


def test_a_department_name_routes_to_the_department_and_clears_the_team(rsps, connector):
    raw = ticket_json(teamId=L2)
    rsps.get(TICKET, json=raw)
    rsps.patch(TICKET, json=patched(raw, departmentId=BILLING, teamId=None))
    assert connector.apply(connector.parse_ticket(raw), Actions(group="billing")).ok
    # zohodesk-oas v1.0/Ticket.json: teamId matches ([0-9]*|null|undefined), JSON null does not
    assert bodies(rsps, "PATCH", TICKET) == [{"departmentId": BILLING, "teamId": "null"}]


TO_SUPPORT = Actions(group="Support", note="Back to the whole Support department", level="l1")


def test_a_department_only_destination_clears_the_team_with_the_string_null(rsps, connector):
    raw = ticket_json(teamId=L2)  # already in Support: only the team changes
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=patched(raw, teamId=None))
    assert connector.apply(connector.parse_ticket(raw), TO_SUPPORT).ok
    assert [b["teamId"] for b in bodies(rsps, "PATCH", TICKET)] == ["null"]


def test_when_desk_refuses_the_string_null_the_team_is_cleared_with_json_null(rsps, connector):
    """api-audit.md #3 is unconfirmed: a 422 on teamId "null" is retried once with JSON null,
    and the handover note just posted stays."""
    raw = ticket_json(teamId=L2)
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x", comment_id="55430000068767801"))
    refused = {
        "errorCode": "INVALID_DATA",
        "message": "The data does not comply to the validation restrictions defined.",
        "errors": [{"fieldName": "/teamId", "errorType": "invalid"}],
    }
    rsps.patch(TICKET, json=refused, status=422)
    rsps.patch(TICKET, json=patched(raw, teamId=None))
    assert connector.apply(connector.parse_ticket(raw), TO_SUPPORT).ok
    assert [b["teamId"] for b in bodies(rsps, "PATCH", TICKET)] == ["null", None]
    assert not [w for w in writes(rsps) if w.startswith("DELETE")]


def test_when_desk_refuses_both_forms_each_is_tried_once_and_the_note_undone(rsps, connector):
    raw = ticket_json(teamId=L2)
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x", comment_id="55430000068767801"))
    rsps.delete(f"{COMMENTS}/55430000068767801", status=204)
    refused = {"errorCode": "INVALID_DATA", "message": "invalid",
               "errors": [{"fieldName": "/teamId", "errorType": "invalid"}]}  # fmt: skip
    rsps.patch(TICKET, json=refused, status=422)
    result = connector.apply(connector.parse_ticket(raw), TO_SUPPORT)
    assert not result.ok and not result.retryable
    assert [b["teamId"] for b in bodies(rsps, "PATCH", TICKET)] == ["null", None]


def test_a_team_name_used_in_two_departments_needs_the_department(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    result = connector.apply(connector.parse_ticket(raw), Actions(group="Leads", note="x"))
    assert not result.ok and not result.retryable
    assert 'write "Department/Leads"' in (result.error or "")
    assert writes(rsps) == []

    rsps.patch(TICKET, json=patched(raw, departmentId=BILLING, teamId="55430000000120014"))
    assert connector.apply(connector.parse_ticket(raw), Actions(group="Billing/Leads")).ok
    assert bodies(rsps, "PATCH", TICKET)[-1] == {
        "departmentId": BILLING,
        "teamId": "55430000000120014",
    }


def test_an_unknown_group_fails_before_anything_is_written(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    result = connector.apply(
        connector.parse_ticket(raw), Actions(group="Tier 9", note="x", level="l9")
    )
    assert not result.ok and not result.retryable
    assert "no group named 'Tier 9'" in (result.error or "")
    assert "L2 Support" in (result.error or "")  # what exists, so the admin can fix the matrix
    assert writes(rsps) == []


def test_priority_is_only_ever_raised_and_none_leaves_it(rsps, connector):
    raw = ticket_json(priority="High", teamId=L2)
    rsps.get(TICKET, json=raw)
    rsps.patch(TICKET, json=raw)
    ticket = connector.parse_ticket(raw)
    connector.apply(ticket, Actions(group="L2 Support", priority=Priority.NORMAL, level="l2"))
    connector.apply(ticket, Actions(group="L2 Support", priority=None, level="l3"))
    connector.apply(ticket, Actions(group="L2 Support", priority=Priority.URGENT, level="l4"))
    assert bodies(rsps, "PATCH", TICKET) == []  # nothing to change: only the markers are written
    assert [b["tags"] for b in bodies(rsps, "POST", ASSOCIATE)] == [
        ["escbridge_l2"],
        ["escbridge_l3"],
        ["escbridge_l4"],
    ]


def test_unassign_sends_null_and_customer_update_is_a_public_reply(rsps, connector):
    raw = ticket_json(assigneeId="55430000000064001")
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=patched(raw, assigneeId=None, teamId=L2))
    actions = Actions(
        group="L2 Support",
        note="internal",
        unassign=True,
        customer_update="A senior engineer is now looking at your request.",
    )
    assert connector.apply(connector.parse_ticket(raw), actions).ok
    note, reply = bodies(rsps, "POST", COMMENTS)
    assert note["isPublic"] is False
    assert reply == {
        "content": "A senior engineer is now looking at your request.",
        "isPublic": True,
        "contentType": "plainText",
    }
    assert bodies(rsps, "PATCH", TICKET)[0]["assigneeId"] is None
    assert writes(rsps)[-1] == f"PATCH /tickets/{TICKET_ID}"  # the commit point is last


def test_no_public_reply_unless_the_rule_asks(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=raw)
    connector.apply(connector.parse_ticket(raw), TO_L2)
    assert [b["isPublic"] for b in bodies(rsps, "POST", COMMENTS)] == [False]


def test_a_crash_between_note_and_update_neither_loses_nor_doubles_the_note(rsps, connector, clock):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    posted: list[dict] = []

    def add_comment(request):
        body = json.loads(request.body)
        comment = comment_reply(body["content"], at="2026-10-05T18:00:00.000Z")
        posted.append(comment)
        return 200, {}, json.dumps(comment)

    rsps.add_callback(responses.POST, COMMENTS, callback=add_comment)
    # the PATCH never reaches Desk (the connection is refused): retried, then a failure
    rsps.patch(TICKET, body=requests.ConnectionError(ConnectionRefusedError(111, "refused")))
    first = connector.apply(connector.parse_ticket(raw), TO_L2)
    assert not first.ok and first.retryable
    assert len(posted) == 1

    # The retry, a minute later: the note is there (Desk bumped modifiedTime for it).
    clock.advance(seconds=60)
    patches_before = len(bodies(rsps, "PATCH", TICKET))  # the shared client retried the PATCH
    after_note = ticket_json(commentCount="1", modifiedTime="2026-10-05T18:00:00.000Z")
    rsps.replace(responses.GET, TICKET, json=after_note)
    rsps.get(COMMENTS, json={"data": posted})
    rsps.replace(responses.PATCH, TICKET, json=patched(after_note, teamId=L2, priority="High"))
    second = connector.apply(connector.parse_ticket(after_note), TO_L2)
    assert second.ok
    assert len(posted) == 1  # not doubled
    assert len(bodies(rsps, "PATCH", TICKET)) == patches_before + 1
    assert bodies(rsps, "POST", ASSOCIATE) == [{"tags": ["escbridge_l2"]}]


def test_a_crash_after_the_marker_is_recognised_by_the_tag(rsps, connector):
    done = ticket_json(teamId=L2, priority="High", commentCount="1", tagCount="2")
    rsps.get(TICKET, json=done)
    rsps.get(TAGS, json={"tags": [
        {"id": "5543000009000001", "name": "escbridge_l2", "tagType": "MANUAL"},
        {"id": "5543000009000002", "name": "VIP", "tagType": "MANUAL"},
    ]})  # fmt: skip
    result = connector.apply(connector.parse_ticket(ticket_json()), TO_L2)
    assert result.ok and result.recovered
    assert writes(rsps) == []  # nothing written twice


def test_an_old_note_of_an_escalation_a_person_undid_does_not_suppress_the_new_one(rsps, connector):
    # l1 -> l2 yesterday (note), a lead moved it back this morning; now it goes to l2 again.
    raw = ticket_json(commentCount="1", modifiedTime="2026-10-05T09:00:00.000Z")
    ticket = connector.parse_ticket(raw)
    marker = None
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=raw)
    rsps.get(COMMENTS, json={"data": []})
    connector.apply(ticket, TO_L2)
    marker = bodies(rsps, "POST", COMMENTS)[0]["content"].split("\n\n")[-1]

    rsps.replace(
        responses.GET,
        COMMENTS,
        json={"data": [comment_reply(f"yesterday\n\n{marker}", at="2026-10-04T17:00:00.000Z")]},
    )
    connector.apply(ticket, TO_L2)
    assert len(bodies(rsps, "POST", COMMENTS)) == 2


def test_a_concurrent_edit_is_a_conflict(rsps, connector):
    raw = ticket_json()
    ticket = connector.parse_ticket(raw)
    rsps.get(TICKET, json=ticket_json(modifiedTime="2026-10-05T17:59:00.000Z", priority="High"))
    with pytest.raises(Conflict):
        connector.apply(ticket, TO_L2)
    assert writes(rsps) == []

    skipped = connector.apply(ticket, TO_L2, on_conflict=lambda fresh: None)
    assert skipped.ok and skipped.skipped and skipped.conflicts == 1

    seen = []

    def redecide(fresh):
        seen.append(fresh.priority)
        return Actions(group="L2 Support", note="re-decided", level="l2")

    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=raw)
    result = connector.apply(ticket, TO_L2, on_conflict=redecide)
    assert result.ok and result.conflicts == 1
    assert seen == [Priority.HIGH]
    assert result.actions is not None and result.actions.note == "re-decided"


def test_a_ticket_that_keeps_changing_gives_up_retryably(rsps, clock):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    connector = make_connector(clock, conflict_retries=2)
    stamps = iter(f"2026-10-05T17:5{i}:00.000Z" for i in range(9))
    rsps.add_callback(
        responses.GET,
        TICKET,
        callback=lambda r: (200, {}, json.dumps(ticket_json(modifiedTime=next(stamps)))),
    )
    result = connector.apply(
        connector.parse_ticket(ticket_json()), TO_L2, on_conflict=lambda t: TO_L2
    )
    assert not result.ok and result.retryable and result.conflict and result.conflicts == 3


def test_when_patch_does_not_move_departments_the_move_endpoint_does(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(
        TICKET,
        status=422,
        json={
            "errorCode": "INVALID_DATA",
            "message": "invalid",
            "errors": [{"fieldName": "/departmentId", "errorType": "invalid"}],
        },
    )
    rsps.post(f"{TICKET}/move", status=200, body="")
    rsps.patch(TICKET, json=patched(raw, departmentId=BILLING, teamId=BILLING_TEAM))
    assert connector.apply(connector.parse_ticket(raw), TO_BILLING).ok
    move = next(c.request for c in rsps.calls if c.request.url.split("?")[0].endswith("/move"))
    assert f"departmentId={BILLING}" in move.url
    assert bodies(rsps, "PATCH", TICKET)[-1] == {"teamId": BILLING_TEAM}


def test_when_null_does_not_unassign_the_string_null_does(rsps, connector):
    raw = ticket_json(assigneeId="55430000000064001", teamId=L2)
    rsps.get(TICKET, json=raw)
    rsps.patch(
        TICKET,
        status=422,
        json={
            "errorCode": "INVALID_DATA",
            "message": "invalid",
            "errors": [{"fieldName": "/assigneeId", "errorType": "invalid"}],
        },
    )
    rsps.patch(TICKET, json=patched(raw, assigneeId=None))
    assert connector.apply(
        connector.parse_ticket(raw), Actions(group="L2 Support", unassign=True)
    ).ok
    assert [b["assigneeId"] for b in bodies(rsps, "PATCH", TICKET)] == [None, "null"]


def test_a_refused_update_takes_its_note_and_reply_back(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("n", comment_id="55430000068767801"))
    rsps.post(COMMENTS, json=comment_reply("r", comment_id="55430000068767802", public=True))
    rsps.patch(
        TICKET,
        status=422,
        json={
            "errorCode": "INVALID_DATA",
            "message": "invalid",
            "errors": [{"fieldName": "/priority", "errorType": "invalid"}],
        },
    )
    rsps.delete(f"{COMMENTS}/55430000068767801", status=204)
    rsps.delete(f"{COMMENTS}/55430000068767802", status=204)
    result = connector.apply(
        connector.parse_ticket(raw), TO_L2.model_copy(update={"customer_update": "hi"})
    )
    assert not result.ok and not result.retryable
    assert "priority: invalid" in (result.error or "")
    assert writes(rsps)[-2:] == [
        f"DELETE /tickets/{TICKET_ID}/comments/55430000068767801",
        f"DELETE /tickets/{TICKET_ID}/comments/55430000068767802",
    ]


def test_credits_running_out_mid_apply_is_raised_for_the_sync_to_stop(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, status=429, json={"errorCode": "THRESHOLD_EXCEEDED", "message": "x"})
    with pytest.raises(RateLimited):
        connector.apply(connector.parse_ticket(raw), TO_L2)


def test_with_a_tag_marker_nothing_is_written_into_cf(rsps):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    tag_calls(rsps)
    connector = make_connector(Clock(), level_field=None)  # no field at all: the tag
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.patch(TICKET, json=raw)
    connector.apply(connector.parse_ticket(raw), Actions(group="L2 Support", level="l2"))
    assert bodies(rsps, "PATCH", TICKET) == [{"teamId": L2}]
    assert bodies(rsps, "POST", ASSOCIATE) == [{"tags": ["escbridge_l2"]}]


def test_the_integration_agent_is_learned_from_its_own_update(rsps):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    tag_calls(rsps)
    connector = make_connector(Clock(), agent_id=None)
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.patch(TICKET, json=patched(raw, modifiedBy="55430000000064777"))
    connector.apply(connector.parse_ticket(raw), Actions(group="L2 Support", level="l2"))
    assert connector.agent_id == "55430000000064777"


def test_a_long_note_is_cut_to_desks_limit_keeping_the_marker(rsps, connector):
    raw = ticket_json()
    rsps.get(TICKET, json=raw)
    rsps.post(COMMENTS, json=comment_reply("x"))
    rsps.patch(TICKET, json=raw)
    connector.apply(connector.parse_ticket(raw), TO_L2.model_copy(update={"note": "x" * 40000}))
    content = bodies(rsps, "POST", COMMENTS)[0]["content"]
    assert len(content) <= 32000 and "[escbridge l2 ref:" in content
