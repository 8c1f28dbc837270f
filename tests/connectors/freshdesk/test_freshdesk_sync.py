"""iter_tickets(): updated_since + ascending updated_at, Link paging, the 300-page restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from freshdesk_payloads import API_KEY, BASE, GROUPS, TICKET_FIELDS, open_ticket

from escbridge.model import Status

NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)


class TicketList:
    """``GET /tickets`` as Freshdesk serves it: filter, sort, pages with a Link, a page cap."""

    def __init__(self, rsps: responses.RequestsMock, page_size: int = 100, cap: int = 300) -> None:
        self.tickets: list[dict[str, Any]] = []
        self.page_size = page_size
        self.cap = cap
        self.queries: list[dict[str, str]] = []
        self.rsps = rsps
        rsps.add_callback("GET", f"{BASE}/tickets", callback=self._serve)
        rsps.get(f"{BASE}/groups", json=GROUPS)
        rsps.get(f"{BASE}/ticket_fields", json=TICKET_FIELDS)

    def _serve(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.queries.append(query)
        page = int(query.get("page", 1))
        if page > self.cap:
            error = {
                "description": "Validation failed",
                "errors": [
                    {
                        "field": "page",
                        "message": "You cannot access tickets beyond the 300th page",
                        "code": "invalid_value",
                    }
                ],
            }
            return 400, {}, json.dumps(error)
        since = query["updated_since"]
        rows = sorted(
            (t for t in self.tickets if t["updated_at"] >= since),
            key=lambda t: (t["updated_at"], t["id"]),
        )
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        headers = {"Content-Type": "application/json"}
        if page * self.page_size < len(rows):
            nxt = urlencode({**query, "page": page + 1})
            headers["Link"] = f'<{BASE}/tickets?{nxt}>; rel="next"'
        return 200, headers, json.dumps(chunk)


@pytest.fixture
def listing() -> Iterator[TicketList]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield TicketList(rsps)


def connector() -> FreshdeskConnector:
    cfg = FreshdeskConfig.model_validate({"domain": "acme", "api_key": API_KEY})
    return FreshdeskConnector(cfg, instance="fd", sleep=lambda s: None, utcnow=lambda: NOW)


def at(minutes: int) -> str:
    return (NOW - timedelta(hours=5) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_scan_asks_for_changes_in_ascending_order_and_keeps_open_tickets(
    listing: TicketList,
) -> None:
    listing.page_size = 2
    listing.tickets = [
        open_ticket(1, status=2, updated_at=at(1)),
        open_ticket(2, status=5, updated_at=at(2)),  # closed
        open_ticket(3, status=6, updated_at=at(3)),  # custom "Waiting on Customer"
        open_ticket(4, status=4, updated_at=at(4)),  # resolved
        open_ticket(5, status=3, updated_at=at(5)),
    ]
    pages = list(connector().iter_tickets(None, at(0)))
    assert [[t.id for t in p.tickets] for p in pages] == [["1"], ["3"], ["5"]]
    assert [t.status for p in pages for t in p.tickets] == [
        Status.OPEN,
        Status.PENDING,
        Status.PENDING,
    ]
    assert [p.cursor for p in pages] == [at(2), at(4), at(5)]
    assert [p.done for p in pages] == [False, False, True]
    first = listing.queries[0]
    assert first == {
        "updated_since": at(0),
        "order_by": "updated_at",
        "order_type": "asc",
        "per_page": "100",
        "include": "stats,requester",
    }
    assert listing.queries[1]["page"] == "2"


def test_since_without_cursor_and_the_default_lookback(listing: TicketList) -> None:
    conn = connector()
    list(conn.iter_tickets(datetime(2026, 3, 1, tzinfo=UTC), None))
    list(conn.iter_tickets(None, None))
    assert listing.queries[0]["updated_since"] == "2026-03-01T00:00:00Z"
    assert listing.queries[1]["updated_since"] == "2026-02-10T12:00:00Z"  # 30 days back


def test_an_empty_scan_is_done_and_keeps_the_cursor(listing: TicketList) -> None:
    (page,) = connector().iter_tickets(None, at(0))
    assert page.tickets == [] and page.done and page.cursor == at(0)


def test_a_bad_cursor_is_refused_clearly(listing: TicketList) -> None:
    with pytest.raises(ValueError, match="not a Freshdesk sync cursor"):
        list(connector().iter_tickets(None, "page-7"))


def test_after_300_pages_the_scan_restarts_from_the_last_updated_at(listing: TicketList) -> None:
    listing.page_size = 1
    # 302 tickets; the 300th and 301st share one second, so the restart sees #300 again.
    listing.tickets = [open_ticket(i, updated_at=at(i)) for i in range(1, 300)]
    listing.tickets += [open_ticket(300, updated_at=at(300)), open_ticket(301, updated_at=at(300))]
    listing.tickets += [open_ticket(302, updated_at=at(302))]
    pages = list(connector().iter_tickets(None, at(0)))
    ids = [t.id for p in pages for t in p.tickets]
    assert ids == [str(i) for i in range(1, 303)]  # every ticket once, none skipped
    assert max(int(q.get("page", 1)) for q in listing.queries) == 300  # never asked for 301
    restart = listing.queries[300]
    assert restart["updated_since"] == at(300) and "page" not in restart
    assert pages[-1].done and pages[-1].cursor == at(302)
    assert not any(p.done for p in pages[:-1])


def test_more_tickets_in_one_second_than_the_cap_cannot_loop_forever(listing: TicketList) -> None:
    listing.page_size = 1
    listing.cap = 2
    listing.tickets = [open_ticket(i, updated_at=at(10)) for i in range(1, 5)]
    listing.tickets.append(open_ticket(9, updated_at=at(11)))
    conn = connector()
    conn.max_pages = 2
    pages = list(conn.iter_tickets(None, at(10)))
    assert pages[-1].done and "9" in [t.id for t in pages[-1].tickets]
    assert len(listing.queries) < 10


def test_status_names_come_from_ticket_fields_once(listing: TicketList) -> None:
    listing.tickets = [open_ticket(i, status=7, updated_at=at(i)) for i in range(1, 4)]
    conn = connector()
    list(conn.iter_tickets(None, at(0)))
    list(conn.iter_tickets(None, at(0)))
    (page,) = conn.iter_tickets(None, at(0))
    assert {t.custom_fields["freshdesk.status_name"] for t in page.tickets} == {
        "Escalated to vendor"
    }
    fields_calls = [c for c in listing.rsps.calls if c.request.url.endswith("/ticket_fields")]
    assert len(fields_calls) == 1
