"""Freshdesk bulk ``properties.tags``: replaced like a PUT, or appended? (api-audit #16)

Unconfirmed, so both are tested against the emulator's ``bulk_tags_mode`` switch. After a
bulk write that takes tags off (the old level marker), escbridge looks at the ticket: the old
marker must be gone and the humans' tags kept; an account that appended gets one PUT per
ticket to remove what stayed, and later escalations that remove tags skip bulk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.sandbox import Fault, FreshdeskSandbox, serve_sandbox

from escbridge.model import Actions
from escbridge.sandbox import quiet_werkzeug
from escbridge.testing import FakeClock

API_KEY = "sandbox-api-key-bulk-tags-01"

TO_L3 = Actions(
    group="Escalations",
    note="Up to L3.",
    tags_add=("escbridge_l3",),
    tags_remove=("escbridge_l2",),
    level="l3",
)


@pytest.fixture
def account(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[FreshdeskSandbox, FreshdeskConnector]]:
    quiet_werkzeug()
    clock = FakeClock()
    options: dict[str, Any] = request.param
    sandbox, api = serve_sandbox(api_key=API_KEY, monotonic=clock.monotonic, **options)
    config = FreshdeskConfig.model_validate(
        {"domain": "sandbox", "api_key": API_KEY, "api_url": api.url}
    )
    try:
        yield sandbox, FreshdeskConnector(config, instance="fd", sleep=clock.sleep)
    finally:
        sandbox.webhooks.close()
        api.stop()


def calls(sandbox: FreshdeskSandbox, method: str, suffix: str = "") -> list[str]:
    return [p for m, p in sandbox.requests_log if m == method and p.endswith(suffix)]


def at_l2(sandbox: FreshdeskSandbox, connector: FreshdeskConnector, n: int) -> list[Any]:
    """``n`` tickets at level 2 with a tag a human put there (the same tags: bulk takes
    tickets whose whole update, tag list included, is the same)."""
    raws = [sandbox.create_ticket(tags=["escbridge_l2", "vip"], notify=False) for _ in range(n)]
    return [connector.fetch_ticket(str(r["id"])) for r in raws]


def escalate(connector: FreshdeskConnector, tickets: list[Any]) -> None:
    results = connector.apply_many([(t, TO_L3) for t in tickets])
    assert all(r.ok for r in results), results


@pytest.mark.parametrize(
    "account",
    [{"bulk_tags_mode": "append"}, {"bulk_tags_mode": "append", "bulk_mode": "job"}],
    indirect=True,
)
def test_bulk_that_appends_leaves_no_old_level_tag_and_keeps_the_humans_tags(
    account: tuple[FreshdeskSandbox, FreshdeskConnector],
) -> None:
    sandbox, connector = account
    tickets = at_l2(sandbox, connector, 3)
    escalate(connector, tickets)
    assert len(calls(sandbox, "POST", "/bulk_update")) == 1
    for ticket in tickets:
        tags = sandbox.ticket(int(ticket.id))["tags"]
        assert "escbridge_l2" not in tags, tags
        assert set(tags) == {"escbridge_l3", "vip"}
        assert connector.fetch_ticket(ticket.id).level == "l3"
    # one fixing PUT per ticket, each taking off only the tag that stayed
    assert sorted(calls(sandbox, "PUT")) == sorted(f"/api/v2/tickets/{t.id}" for t in tickets)

    # Now known: the next escalation that removes a tag is one PUT per ticket, no bulk.
    again = at_l2(sandbox, connector, 2)
    before = len(sandbox.requests_log)
    escalate(connector, again)
    later = sandbox.requests_log[before:]
    assert not [p for m, p in later if p.endswith("/bulk_update")]
    assert [m for m, p in later if m == "PUT"] == ["PUT", "PUT"]
    for ticket in again:
        assert "escbridge_l2" not in sandbox.ticket(int(ticket.id))["tags"]


@pytest.mark.parametrize("account", [{"bulk_tags_mode": "replace"}], indirect=True)
def test_bulk_that_replaces_is_checked_on_one_ticket_then_trusted(
    account: tuple[FreshdeskSandbox, FreshdeskConnector],
) -> None:
    sandbox, connector = account
    tickets = at_l2(sandbox, connector, 3)
    reads_before = len(calls(sandbox, "GET"))
    escalate(connector, tickets)
    assert len(calls(sandbox, "POST", "/bulk_update")) == 1 and calls(sandbox, "PUT") == []
    for ticket in tickets:
        assert set(sandbox.ticket(int(ticket.id))["tags"]) == {"escbridge_l3", "vip"}
    reads_after_first = len(calls(sandbox, "GET"))

    more = at_l2(sandbox, connector, 3)
    reads_before_second = len(calls(sandbox, "GET"))
    escalate(connector, more)
    assert len(calls(sandbox, "POST", "/bulk_update")) == 2 and calls(sandbox, "PUT") == []
    # the first bulk read one ticket more than the second: replacing was seen once, then trusted
    second = len(calls(sandbox, "GET")) - reads_before_second
    assert reads_after_first - reads_before == second + 1


@pytest.mark.parametrize("account", [{"bulk_tags_mode": "append"}], indirect=True)
def test_a_bulk_write_that_removes_no_tag_is_not_rechecked(
    account: tuple[FreshdeskSandbox, FreshdeskConnector],
) -> None:
    sandbox, connector = account
    raws = [sandbox.create_ticket(tags=["vip"], notify=False) for _ in range(2)]
    tickets = [connector.fetch_ticket(str(r["id"])) for r in raws]
    first = Actions(group="Senior Support", note="Up.", tags_add=("escbridge_l2",), level="l2")
    reads_before = len(calls(sandbox, "GET"))
    results = connector.apply_many([(t, first) for t in tickets])
    assert all(r.ok for r in results)
    assert calls(sandbox, "PUT") == []
    assert len(calls(sandbox, "GET")) - reads_before == 2  # the reads before writing, no more
    for raw in raws:
        assert set(sandbox.ticket(raw["id"])["tags"]) == {"vip", "escbridge_l2"}


@pytest.mark.parametrize("account", [{"bulk_tags_mode": "append"}], indirect=True)
def test_a_refused_fix_is_logged_and_the_escalation_still_counts(
    account: tuple[FreshdeskSandbox, FreshdeskConnector], caplog: pytest.LogCaptureFixture
) -> None:
    sandbox, connector = account
    tickets = at_l2(sandbox, connector, 2)
    sandbox.faults.append(Fault("PUT", rf"/tickets/{tickets[0].id}", status=400))
    escalate(connector, tickets)
    first, second = (sandbox.ticket(int(t.id)) for t in tickets)
    assert set(first["tags"]) == {"escbridge_l2", "vip", "escbridge_l3"}  # left as bulk put it
    assert set(second["tags"]) == {"vip", "escbridge_l3"}
    assert connector.fetch_ticket(tickets[0].id).level == "l3"  # the newest level tag wins
    assert all(len(sandbox.notes(int(t.id))) == 1 for t in tickets)
    assert f"ticket {tickets[0].id}: could not remove escbridge_l2" in caplog.text
