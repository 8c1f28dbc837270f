"""apply_many: shared changes go through updateMany (one field, at most 50 ids per call); the
level marker, a tag, goes per ticket after them (the field marker: test_zoho_level_field.py)."""

from __future__ import annotations

import json
import re

import pytest
import responses
from zohodesk_support import DESK, load, make_connector, ticket_json, token_reply

from escbridge.model import Actions, Priority

L2 = "55430000000120011"
TO_L2 = Actions(group="L2 Support", priority=Priority.HIGH, note="Escalated: SLA risk", level="l2")
TICKET_URL = re.compile(rf"{re.escape(DESK)}/tickets/(\d+)(\?.*)?$")
COMMENT_URL = re.compile(rf"{re.escape(DESK)}/tickets/(\d+)/comments$")
ASSOCIATE_URL = re.compile(rf"{re.escape(DESK)}/tickets/(\d+)/associateTag$")


@pytest.fixture
def desk(rsps):
    """A tiny Desk: tickets by id; comments, PATCH and associateTag echo; updateMany: 204."""
    tickets = {str(9000 + i): ticket_json(id=str(9000 + i)) for i in range(130)}
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))

    def get(request):
        ticket_id = TICKET_URL.match(request.url.split("?")[0]).group(1)
        if ticket_id not in tickets:
            return (
                404,
                {},
                '{"errorCode":"URL_NOT_FOUND","message":"The URL could not be found."}',
            )
        return 200, {}, json.dumps(tickets[ticket_id])

    rsps.add_callback(responses.GET, TICKET_URL, callback=get)
    rsps.add_callback(responses.PATCH, TICKET_URL, callback=get)
    rsps.add_callback(
        responses.POST, COMMENT_URL, callback=lambda r: (200, {}, json.dumps(load("comment.json")))
    )
    rsps.post(f"{DESK}/tickets/updateMany", status=204)
    rsps.add_callback(
        responses.POST,
        ASSOCIATE_URL,
        callback=lambda r: (200, {}, json.dumps({"data": [
            {"id": "5543000009000001", "name": n, "tagType": "MANUAL"}
            for n in json.loads(r.body)["tags"]
        ]})),
    )  # fmt: skip
    return tickets


def calls(rsps, method, pattern):
    return [
        c for c in rsps.calls if c.request.method == method and re.search(pattern, c.request.url)
    ]


def update_many_bodies(rsps):
    return [json.loads(c.request.body) for c in calls(rsps, "POST", r"/updateMany$")]


def test_tickets_with_the_same_changes_share_update_many_calls(rsps, desk, clock):
    connector = make_connector(clock)
    items = [(connector.parse_ticket(desk[str(9000 + i)]), TO_L2) for i in range(5)]
    results = connector.apply_many(items)

    assert [r.ticket_id for r in results] == [str(9000 + i) for i in range(5)]
    assert all(r.ok for r in results)
    ids = [str(9000 + i) for i in range(5)]
    assert update_many_bodies(rsps) == [
        {"fieldName": "teamId", "isCustomField": False, "ids": ids, "fieldValue": L2},
        {"fieldName": "priority", "isCustomField": False, "ids": ids, "fieldValue": "High"},
    ]
    assert calls(rsps, "PATCH", r"/tickets/\d+$") == []
    assert len(calls(rsps, "POST", r"/comments$")) == 5  # one private note per ticket
    # notes first, then the bulk updates, then each ticket's marker: it says "done" only once
    # everything else is
    kinds = [
        c.request.url.rsplit("/", 1)[-1]
        for c in rsps.calls
        if c.request.method == "POST" and c.request.url.startswith(DESK)
    ]
    assert kinds == ["comments"] * 5 + ["updateMany"] * 2 + ["associateTag"] * 5
    marked = [
        (ASSOCIATE_URL.match(c.request.url).group(1), json.loads(c.request.body))
        for c in calls(rsps, "POST", r"/associateTag$")
    ]
    assert marked == [(i, {"tags": ["escbridge_l2"]}) for i in ids]


def test_at_most_fifty_ids_per_call(rsps, desk, clock):
    connector = make_connector(clock)
    items = [(connector.parse_ticket(desk[str(9000 + i)]), TO_L2) for i in range(120)]
    assert all(r.ok for r in connector.apply_many(items))
    sizes = [len(b["ids"]) for b in update_many_bodies(rsps)]
    assert sizes == [50, 50, 50, 50, 20, 20]  # team and priority of each chunk of 50
    assert len(calls(rsps, "POST", r"/associateTag$")) == 120


def test_small_groups_and_department_moves_go_one_by_one(rsps, desk, clock):
    connector = make_connector(clock)
    billing = Actions(group="Billing Specialists", note="billing", level="billing")
    items = [
        (connector.parse_ticket(desk["9000"]), TO_L2),
        (connector.parse_ticket(desk["9001"]), TO_L2),
        (connector.parse_ticket(desk["9002"]), billing),
        (connector.parse_ticket(desk["9003"]), billing),
        (connector.parse_ticket(desk["9004"]), billing),
    ]
    results = connector.apply_many(items)
    assert all(r.ok for r in results)
    assert update_many_bodies(rsps) == []  # 2 alike is below bulk_min_batch; moves are per ticket
    assert len(calls(rsps, "PATCH", r"/tickets/\d+$")) == 5


def test_a_failed_update_many_falls_back_to_one_patch_per_ticket(rsps, desk, clock):
    rsps.replace(
        responses.POST,
        f"{DESK}/tickets/updateMany",
        status=422,
        json={"errorCode": "INVALID_DATA", "message": "The data does not comply"},
    )
    connector = make_connector(clock)
    items = [(connector.parse_ticket(desk[str(9000 + i)]), TO_L2) for i in range(4)]
    results = connector.apply_many(items)
    assert all(r.ok for r in results)
    assert len(calls(rsps, "PATCH", r"/tickets/\d+$")) == 4
    assert len(calls(rsps, "POST", r"/comments$")) == 4  # the fallback did not post again


def test_one_missing_ticket_does_not_stop_the_others(rsps, desk, clock):
    connector = make_connector(clock)
    gone = connector.parse_ticket(ticket_json(id="777"))
    items = [(gone, TO_L2)] + [
        (connector.parse_ticket(desk[str(9000 + i)]), TO_L2) for i in range(3)
    ]
    results = connector.apply_many(items)
    assert [r.ok for r in results] == [False, True, True, True]
    assert results[0].error is not None and "not found" in results[0].error
    assert [len(b["ids"]) for b in update_many_bodies(rsps)] == [3, 3]
