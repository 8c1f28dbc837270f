"""iter_tickets: /tickets/search in modifiedTime windows that never hit the result cap."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from escbridge_zohodesk.parse import format_time, parse_time
from zohodesk_support import DESK, Clock, load, make_connector, ticket_json, token_reply

from escbridge.errors import RateLimited
from escbridge.model import Priority

START = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
SEARCH = f"{DESK}/tickets/search"


class SearchDesk:
    """Search over in-memory tickets, with Desk's cap, 204 for nothing and an optional count."""

    def __init__(self, tickets, *, cap=2000, with_count=True, full_items=False, credits_after=None):
        self.tickets = tickets
        self.cap = cap
        self.with_count = with_count
        self.full_items = full_items
        self.credits_after = credits_after
        self.ranges: list[tuple[str, int]] = []

    def __call__(self, request):
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        start, limit = int(q["from"]), int(q["limit"])
        self.ranges.append((q["modifiedTimeRange"], start))
        if self.credits_after is not None and len(self.ranges) > self.credits_after:
            return 429, {}, '{"errorCode":"THRESHOLD_EXCEEDED","message":"credits"}'
        if start > 999 or start + limit > self.cap:  # Desk: from 0..999 (v1.0/Search.json)
            return 422, {}, '{"errorCode":"UNPROCESSABLE_ENTITY","message":"from is invalid"}'
        lo, hi = (parse_time(x) for x in q["modifiedTimeRange"].split(","))
        hits = sorted(
            (t for t in self.tickets if lo <= parse_time(t["modifiedTime"]) <= hi),
            key=lambda t: (t["modifiedTime"], t["id"]),
        )
        page = hits[start : start + limit]
        if not page:
            return 204, {}, ""
        keep = (
            "id",
            "subject",
            "status",
            "statusType",
            "priority",
            "departmentId",
            "teamId",
            "assigneeId",
            "createdTime",
            "modifiedTime",
            "channel",
        )
        items = page if self.full_items else [{k: t.get(k) for k in keep} for t in page]
        body = {"data": items}
        if self.with_count:
            body["count"] = len(hits)
        return 200, {}, json.dumps(body)


def tickets(n, *, every=timedelta(minutes=1), closed=()):
    out = []
    for i in range(n):
        at = format_time(START + every * i)
        status = ("Closed", "Closed") if i in closed else ("Open", "Open")
        out.append(
            ticket_json(
                id=str(100000 + i),
                modifiedTime=at,
                createdTime=at,
                status=status[0],
                statusType=status[1],
            )
        )
    return out


def install(rsps, desk: SearchDesk):
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    rsps.add_callback(responses.GET, SEARCH, callback=desk)
    by_id = {t["id"]: t for t in desk.tickets}
    rsps.add_callback(
        responses.GET,
        re.compile(rf"{re.escape(DESK)}/tickets/(\d+)(\?.*)?$"),
        callback=lambda r: (200, {}, json.dumps(by_id[urlsplit(r.url).path.rsplit("/", 1)[1]])),
    )


@pytest.fixture
def clock():
    return Clock(START + timedelta(days=1))


def scan(connector, since=None, cursor=None):
    pages = list(connector.iter_tickets(since, cursor))
    return pages, [t.id for p in pages for t in p.tickets]


def test_nothing_changed_is_a_204_and_one_final_page(rsps, clock):
    install(rsps, SearchDesk([]))
    pages, ids = scan(make_connector(clock), since=START)
    assert ids == []
    assert len(pages) == 1 and pages[0].done
    assert pages[0].cursor == format_time(clock.now)


def test_pages_within_a_window_and_cursors_that_only_move_past_complete_windows(rsps, clock):
    data = tickets(250)
    install(rsps, SearchDesk(data, full_items=True))
    pages, ids = scan(make_connector(clock), since=START)
    assert ids == [t["id"] for t in data]
    assert [p.done for p in pages] == [False, False, True]
    start = format_time(START)
    assert [p.cursor for p in pages] == [start, start, format_time(clock.now)]


def test_a_window_over_the_cap_is_halved_until_none_reaches_it(rsps, clock):
    data = tickets(450, every=timedelta(seconds=30))
    desk = SearchDesk(data, cap=200, full_items=True)
    install(rsps, desk)
    pages, ids = scan(make_connector(clock, search_result_cap=200), since=START)
    assert sorted(ids) == sorted(t["id"] for t in data) and len(ids) == len(set(ids))
    assert all(start + 100 <= 200 for _, start in desk.ranges)  # never asked past the cap
    assert len({r for r, _ in desk.ranges}) > 3  # it split
    assert pages[-1].done and pages[-1].cursor == format_time(clock.now)
    cursors = [parse_time(p.cursor) for p in pages]
    assert cursors == sorted(cursors)  # the cursor never moves backwards


def test_a_window_of_1500_is_read_whole_without_asking_past_from_999(rsps, clock):
    """Desk's search takes ``from`` 0..999 (zohodesk-oas v1.0/Search.json, api-audit.md #1)."""
    data = tickets(1500, every=timedelta(seconds=2))
    desk = SearchDesk(data, cap=100_000, full_items=True)
    install(rsps, desk)
    pages, ids = scan(make_connector(clock), since=START)
    assert sorted(ids) == sorted(t["id"] for t in data) and len(ids) == len(set(ids))
    assert max(start for _, start in desk.ranges) <= 999
    assert pages[-1].done


def test_without_a_count_the_cap_or_desks_refusal_splits_the_window(rsps, clock):
    data = tickets(300, every=timedelta(seconds=30))
    desk = SearchDesk(data, cap=200, with_count=False, full_items=True)
    install(rsps, desk)
    _, ids = scan(make_connector(clock, search_result_cap=1000), since=START)
    assert set(ids) == {t["id"] for t in data}


def test_closed_tickets_are_left_out(rsps, clock):
    install(rsps, SearchDesk(tickets(5, closed={1, 3}), full_items=True))
    _, ids = scan(make_connector(clock), since=START)
    assert ids == ["100000", "100002", "100004"]


def test_search_items_without_the_level_field_are_read_in_full(rsps, clock):
    data = tickets(3)
    data[1]["cf"]["cf_escalation_level"] = "escbridge_l2"
    install(rsps, SearchDesk(data, full_items=False))
    pages, _ = scan(make_connector(clock), since=START)
    levels = [t.level for p in pages for t in p.tickets]
    assert levels == [None, "l2", None]  # the list item alone would have said None for all
    fetched = [c for c in rsps.calls if re.search(r"/tickets/\d+\?", c.request.url)]
    assert len(fetched) == 3


def test_full_search_items_are_not_read_again(rsps, clock):
    install(rsps, SearchDesk(tickets(3), full_items=True))
    scan(make_connector(clock), since=START)
    assert not [c for c in rsps.calls if re.search(r"/tickets/\d+\?", c.request.url)]


def test_a_cursor_resumes_with_a_small_overlap(rsps, clock):
    desk = SearchDesk(tickets(3), full_items=True)
    install(rsps, desk)
    cursor = format_time(START + timedelta(hours=3))
    scan(make_connector(clock, sync_overlap_seconds=60), cursor=cursor)
    assert desk.ranges[0][0].startswith(
        format_time(START + timedelta(hours=3) - timedelta(seconds=60))
    )


def test_no_cursor_and_no_since_looks_back_sync_start_days(rsps, clock):
    desk = SearchDesk([])
    install(rsps, desk)
    scan(make_connector(clock, sync_start_days=7))
    assert desk.ranges[0][0].startswith(format_time(clock.now - timedelta(days=7)))


def test_credits_running_out_stops_the_scan_and_the_next_day_loses_nothing(rsps, clock):
    data = tickets(450, every=timedelta(seconds=30))
    desk = SearchDesk(data, cap=200, full_items=True, credits_after=7)
    install(rsps, desk)
    connector = make_connector(clock, search_result_cap=200)
    seen, last_cursor = [], None
    with pytest.raises(RateLimited):
        for page in connector.iter_tickets(START, None):
            seen.extend(t.id for t in page.tickets)
            last_cursor = page.cursor
    assert last_cursor is not None and len(seen) < len(data)

    clock.advance(seconds=86400)  # the next day, from the saved cursor
    desk.credits_after = None
    for page in connector.iter_tickets(None, last_cursor):
        seen.extend(t.id for t in page.tickets)
    assert set(seen) == {t["id"] for t in data}


def test_the_marker_tag_is_read_for_search_items_that_have_tags(rsps, clock):
    """Desk's ticket JSON counts tags (``tagCount``) but does not list them: a ticket with some
    costs one ``GET /tickets/{id}/tags``, one without none."""
    data = tickets(3)
    data[1]["tagCount"] = "2"
    install(rsps, SearchDesk(data, full_items=True))
    rsps.get(
        f"{DESK}/tickets/100001/tags",
        json={"tags": [
            {"id": "5543000009000001", "name": "escbridge_l2", "tagType": "MANUAL"},
            {"id": "5543000009000002", "name": "VIP", "tagType": "MANUAL"},
        ]},
    )  # fmt: skip
    pages, _ = scan(make_connector(clock), since=START)
    read = [(t.level, t.tags) for p in pages for t in p.tickets]
    assert read == [(None, frozenset()), ("l2", {"escbridge_l2", "vip"}), (None, frozenset())]
    assert [c.request.url for c in rsps.calls if c.request.url.endswith("/tags")] == [
        f"{DESK}/tickets/100001/tags"
    ]


class TagSearch(SearchDesk):
    """Search items that carry ``cf`` but not ``tagCount``; ``tag=${NotEmpty}&id=…`` answers
    which of them have tags (or is refused with Desk's 422, ``refuse=True``)."""

    def __init__(self, tickets, tagged, *, refuse=False):
        super().__init__(tickets, full_items=True)
        self.tagged = tagged
        self.refuse = refuse
        self.tag_queries: list[dict[str, str]] = []

    def __call__(self, request):
        q = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        if "tag" not in q:
            status, headers, body = super().__call__(request)
            if status == 200:
                data = json.loads(body)
                for item in data["data"]:
                    item.pop("tagCount", None)
                body = json.dumps(data)
            return status, headers, body
        self.tag_queries.append(q)
        if self.refuse:
            return 422, {}, '{"errorCode":"UNPROCESSABLE_ENTITY","message":"id is invalid"}'
        hits = [{"id": i} for i in q["id"].split(",") if i in self.tagged]
        return (200, {}, json.dumps({"data": hits, "count": len(hits)})) if hits else (204, {}, "")


def tag_reply(rsps, ticket_id):
    rsps.get(
        f"{DESK}/tickets/{ticket_id}/tags",
        json={"tags": [{"id": "5543000009000001", "name": "escbridge_l2", "tagType": "MANUAL"}]},
    )


def tag_reads(rsps):
    return [c.request.url.split("/")[-2] for c in rsps.calls if c.request.url.endswith("/tags")]


def test_one_tag_search_tells_which_items_have_tags(rsps, clock):
    """Search.json's ``tag`` filter (``${NotEmpty}``) and ``id`` list: one search for the page
    instead of a tag read per item."""
    desk = TagSearch(tickets(4), tagged={"100002"})
    install(rsps, desk)
    tag_reply(rsps, "100002")
    pages, _ = scan(make_connector(clock), since=START)
    assert [t.level for p in pages for t in p.tickets] == [None, None, "l2", None]
    assert [(q["tag"], q["id"]) for q in desk.tag_queries] == [
        ("${NotEmpty}", "100000,100001,100002,100003")
    ]
    assert tag_reads(rsps) == ["100002"]


def test_a_refused_tag_search_reads_each_items_tags(rsps, clock):
    desk = TagSearch(tickets(3), tagged={"100001"}, refuse=True)
    install(rsps, desk)
    for i in ("100000", "100002"):
        rsps.get(f"{DESK}/tickets/{i}/tags", json={"tags": []})
    tag_reply(rsps, "100001")
    pages, _ = scan(make_connector(clock), since=START)
    assert [t.level for p in pages for t in p.tickets] == [None, "l2", None]
    assert sorted(tag_reads(rsps)) == ["100000", "100001", "100002"]


def test_the_recorded_search_item_is_decided_on_without_reading_the_ticket(rsps, clock):
    """An item in Search.json's ``searchTicketResponseFields`` shape (``search_page.json``)
    has ``cf`` and every field a decision needs: only its tags are read (search items carry
    none), never the ticket."""
    page = load("search_page.json")
    (item,) = page["data"]
    token_reply(rsps)
    rsps.get(f"{DESK}/teams", json=load("teams.json"))
    rsps.get(f"{DESK}/departments", json=load("departments.json"))
    rsps.get(SEARCH, json=page)
    rsps.get(f"{DESK}/tickets/{item['id']}/tags", json=load("ticket_tags.json"))
    since = parse_time(item["modifiedTime"]) - timedelta(minutes=1)
    clock.now = since + timedelta(minutes=2)

    pages, ids = scan(make_connector(clock), since=since)

    assert ids == [item["id"]]
    (ticket,) = pages[-1].tickets
    assert (ticket.level, ticket.group, ticket.version) == ("l2", "Support", item["modifiedTime"])
    assert ticket.tags == {"escbridge_l2", "battery"}
    assert ticket.description.startswith("The battery stopped charging")
    assert not [c for c in rsps.calls if re.search(r"/tickets/\d+\?", c.request.url)]


class Lacking(SearchDesk):
    """Full search items, but the one of ``ticket_id`` lacks ``key``."""

    def __init__(self, tickets, ticket_id, key):
        super().__init__(tickets, full_items=True)
        self.ticket_id, self.key = ticket_id, key

    def __call__(self, request):
        status, headers, body = super().__call__(request)
        if status == 200:
            answer = json.loads(body)
            for item in answer["data"]:
                if item["id"] == self.ticket_id:
                    del item[self.key]
            body = json.dumps(answer)
        return status, headers, body


@pytest.mark.parametrize("missing", ["description", "priority", "teamId", "cf"])
def test_a_search_item_lacking_a_field_a_decision_needs_is_read_in_full(rsps, clock, missing):
    """Handled both ways: should Desk's items lack a field Search.json promises, the ticket is
    read in full rather than decided on without it."""
    data = tickets(3)
    data[1].update(description="<div>Refund please</div>", priority="High")
    install(rsps, Lacking(data, "100001", missing))
    for t in data:
        rsps.get(f"{DESK}/tickets/{t['id']}/tags", json={"tags": []})
    pages, _ = scan(make_connector(clock), since=START)
    (read,) = [t for p in pages for t in p.tickets if t.id == "100001"]
    assert (read.description, read.priority) == ("Refund please", Priority.HIGH)
    fetched = [c.request.url for c in rsps.calls if re.search(r"/tickets/\d+\?", c.request.url)]
    assert len(fetched) == 1 and "/tickets/100001?" in fetched[0]
