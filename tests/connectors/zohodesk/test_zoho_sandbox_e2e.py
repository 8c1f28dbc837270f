"""End to end against the Zoho Desk emulator served on 127.0.0.1: real HTTP, real JWTs."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.parse import format_time
from escbridge_zohodesk.sandbox import (
    ESCBRIDGE_AGENT,
    HUMAN_AGENT,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ORG_ID,
    SANDBOX_REFRESH_TOKEN,
    DeskEmulator,
    emulator,
)
from flask import Flask, request

from escbridge.errors import AuthError, RateLimited, ValidationError, WebhookAuthError
from escbridge.model import Actions, Priority, TicketEvent
from escbridge.sandbox import ServerThread, serve

URL_TOKEN = "e2e-url-token-0123456789"
HOOK_ID = "1892000000777001"


class Desk:
    """A running emulator and a connector configured for it."""

    def __init__(self, server: ServerThread, state: DeskEmulator) -> None:
        self.server = server
        self.state = state
        self.sleeps: list[float] = []

    def connector(self, **settings: Any) -> ZohoDeskConnector:
        config = {
            "data_centre": "com",
            "org_id": SANDBOX_ORG_ID,
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "refresh_token": SANDBOX_REFRESH_TOKEN,
            "sandbox": True,
            "desk_url": self.server.url,
            "webhook_id": HOOK_ID,
            "webhook_token": URL_TOKEN,
            "max_attempts": 2,
            **settings,
        }
        return ZohoDeskConnector(
            ZohoDeskConfig.model_validate(config), instance="zoho-e2e", sleep=self.sleeps.append
        )


def start(**options: Any) -> Iterator[Desk]:
    app = ZohoDeskConnector.sandbox(**options)
    server = serve(app)
    try:
        yield Desk(server, emulator(app))
    finally:
        emulator(app).dispatcher.close()
        server.stop()


@pytest.fixture(scope="module")
def desk() -> Iterator[Desk]:
    """One emulator for the tests that need no special options (servers take time to stop)."""
    yield from start()


def receiver(
    connector: ZohoDeskConnector, seen: list[tuple[TicketEvent, bool]], codes: list[int]
) -> Flask:
    """The shape of escbridge's webhook route: verify, parse, drop own changes, answer fast."""
    app = Flask("receiver")

    @app.route("/webhooks/zoho-e2e", methods=["GET", "POST"])
    def hook() -> tuple[str, int]:
        query = request.args.to_dict()
        if request.method == "GET":
            codes.append(connector.answer_validation(query))
            return "", codes[-1]
        try:
            connector.verify_webhook(dict(request.headers), request.get_data(), query)
        except WebhookAuthError:
            codes.append(401)
            return "", 401
        for event in connector.parse_webhook(dict(request.headers), request.get_data()):
            seen.append((event, connector.is_own_change(event)))
        codes.append(200)
        return "", 200

    return app


def test_escalation_round_trip_with_signed_webhooks(desk):
    connector = desk.connector()
    seen: list[tuple[TicketEvent, bool]] = []
    codes: list[int] = []
    with serve(receiver(connector, seen, codes)) as hooks:
        url = f"{hooks.url}/webhooks/zoho-e2e?token={URL_TOKEN}"
        desk.state.register_webhook(url, webhook_id=HOOK_ID)
        assert codes == [200]  # Desk's validation GET

        raw = desk.state.add_ticket(subject="Card declined twice")
        # a person changes the ticket: Desk posts a signed event
        desk.state.tickets.update(
            raw["id"],
            lambda t: t.update(status="On Hold", modifiedBy=HUMAN_AGENT),
            actor=HUMAN_AGENT,
        )
        assert desk.state.dispatcher.flush(5)
        assert codes[-1] == 200
        event, own = seen[-1]
        assert (event.ticket_id, event.kind, own) == (raw["id"], "ticket.updated", False)

        # the event is a hint: fetch, then escalate to a team in another department
        ticket = connector.fetch_ticket(event.ticket_id)
        actions = Actions(
            group="Billing Specialists",
            priority=Priority.URGENT,
            level="billing",
            note="Card declined twice: billing specialists take over",
        )
        result = connector.apply(ticket, actions)
        assert result.ok, result.error
        assert desk.state.dispatcher.flush(5)
        desk.state.webhooks.clear()

    stored = desk.state.tickets.get(raw["id"])
    assert stored is not None
    assert stored["departmentId"] == desk.state.department_id("Billing")
    assert stored["teamId"] == desk.state.team_id("Billing Specialists")
    assert stored["priority"] == "High"  # the portal has no Urgent
    assert stored["tags"] == ["escbridge_billing"]  # the level marker, a tag
    assert stored["cf"]["cf_escalation_level"] is None
    [note] = desk.state.comments[raw["id"]]
    assert note["isPublic"] is False and note["contentType"] == "plainText"
    assert note["content"].startswith("Card declined twice: billing specialists take over")
    # our own update came back as a webhook and is recognised as ours
    assert seen[-1][0].actor == ESCBRIDGE_AGENT and seen[-1][1] is True
    assert connector.fetch_ticket(raw["id"]).level == "billing"


def test_forged_expired_and_misaddressed_webhooks_are_refused():
    for options, settings in (
        ({"jwt_ttl": -120}, {}),  # expired
        ({}, {"webhook_id": "1892000000000000"}),  # another webhook's audience
        ({"org_id": "999"}, {"org_id": "999", "webhook_token": "a-different-url-token-123"}),
    ):
        for desk in start(**options):
            connector = desk.connector(**settings)
            seen: list[tuple[TicketEvent, bool]] = []
            codes: list[int] = []
            with serve(receiver(connector, seen, codes)) as hooks:
                url = f"{hooks.url}/webhooks/zoho-e2e?token={URL_TOKEN}"
                if settings.get("webhook_token"):
                    with pytest.raises(ValueError, match="validation GET"):
                        desk.state.register_webhook(url, webhook_id=HOOK_ID)
                    continue
                desk.state.register_webhook(url, webhook_id=HOOK_ID)
                desk.state.add_ticket()
                raw = desk.state.add_ticket()
                desk.state.tickets.update(raw["id"], lambda t: t.update(status="On Hold"))
                assert desk.state.dispatcher.flush(5)
            assert codes[-1] == 401 and seen == []


def test_a_crash_between_note_and_update_against_the_emulator(desk):
    connector = desk.connector()
    raw = desk.state.add_ticket()
    actions = Actions(group="L2 Support", priority=Priority.HIGH, note="Overdue 2h", level="l2")
    desk.state.fail_next("PATCH", count=2)  # both attempts of the first apply fail
    first = connector.apply(connector.fetch_ticket(raw["id"]), actions)
    assert not first.ok and first.retryable
    assert len(desk.state.comments[raw["id"]]) == 1

    retry = connector.apply(connector.fetch_ticket(raw["id"]), actions)
    assert retry.ok
    assert len(desk.state.comments[raw["id"]]) == 1  # not doubled
    assert desk.state.tickets.get(raw["id"])["tags"] == ["escbridge_l2"]
    again = connector.apply(connector.fetch_ticket(raw["id"]), actions)  # a late duplicate
    assert again.ok and len(desk.state.comments[raw["id"]]) == 1


def test_unconfirmed_write_behaviours_both_ways():
    for desk in start(patch_moves_department=False, null_unassigns=False):
        connector = desk.connector()
        raw = desk.state.add_ticket(assigneeId=HUMAN_AGENT)
        actions = Actions(
            group="Billing Specialists", unassign=True, note="to billing", level="billing"
        )
        assert connector.apply(connector.fetch_ticket(raw["id"]), actions).ok
        stored = desk.state.tickets.get(raw["id"])
        assert stored["departmentId"] == desk.state.department_id("Billing")
        assert stored["teamId"] == desk.state.team_id("Billing Specialists")
        assert stored["assigneeId"] is None
        paths = [(m, p) for m, p, _ in desk.state.requests_log]
        assert ("POST", f"/api/v1/tickets/{raw['id']}/move") in paths


def test_bulk_escalation_uses_update_many(desk):
    connector = desk.connector()
    tickets = [connector.fetch_ticket(desk.state.add_ticket()["id"]) for _ in range(6)]
    actions = Actions(
        group="L2 Support", priority=Priority.HIGH, note="Bulk SLA breach", level="l2"
    )
    results = connector.apply_many([(t, actions) for t in tickets])
    assert all(r.ok for r in results)
    ids = {t.id for t in tickets}
    bulk = [
        b
        for m, p, b in desk.state.requests_log
        if p.endswith("/updateMany") and set(b["ids"]) == ids
    ]
    assert [b["fieldName"] for b in bulk] == ["teamId", "priority"]
    tagged = [p.split("/")[-2] for _, p, _ in desk.state.requests_log if "/associateTag" in p]
    assert sorted(t for t in tagged if t in ids) == sorted(ids)  # one marker call per ticket
    assert not [
        p for m, p, _ in desk.state.requests_log if m == "PATCH" and p.rsplit("/", 1)[-1] in ids
    ]
    for t in tickets:
        stored = desk.state.tickets.get(t.id)
        assert (stored["teamId"], stored["priority"]) == (desk.state.team_id("L2 Support"), "High")
        assert stored["tags"] == ["escbridge_l2"]
        assert len(desk.state.comments[t.id]) == 1


def test_sync_over_a_capped_search_with_a_token_expiring_mid_run():
    for desk in start(search_cap=200):
        now = datetime.now(UTC)
        for i in range(450):
            desk.state.add_ticket(modifiedTime=format_time(now - timedelta(seconds=i / 2)))
        connector = desk.connector(search_result_cap=200)
        since = datetime.now(UTC) - timedelta(minutes=5)
        ids: list[str] = []
        for n, page in enumerate(connector.iter_tickets(since, None)):
            ids.extend(t.id for t in page.tickets)
            if n == 1:
                desk.state.revoke_tokens()  # the token dies mid-run
        assert len(ids) == 450 == len(set(ids))
        assert desk.state.token_requests == 2
        empty = list(connector.iter_tickets(datetime.now(UTC) + timedelta(seconds=1), None))
        assert [p.tickets for p in empty] == [[]]  # a 204 from search


def test_both_kinds_of_429(desk):
    connector = desk.connector()
    raw = desk.state.add_ticket()
    connector.fetch_ticket(raw["id"])
    slept = len(desk.sleeps)
    desk.state.throttle_next("TOO_MANY_REQUESTS")
    assert connector.fetch_ticket(raw["id"]).id == raw["id"]
    assert len(desk.sleeps) == slept + 1  # it backed off (without really sleeping)

    desk.state.throttle_next("THRESHOLD_EXCEEDED")
    with pytest.raises(RateLimited) as err:
        list(connector.iter_tickets(None, format_time(datetime.now(UTC))))
    assert err.value.retry_after == 3600
    assert err.value.resume_at > datetime.now(UTC) + timedelta(minutes=59)


def test_credit_headers_and_the_reserve():
    for desk in start(daily_credits=30):
        connector = desk.connector(credit_reserve=10)
        raw = desk.state.add_ticket()
        for _ in range(20):
            connector.fetch_ticket(raw["id"])
        assert connector.client.credits.remaining == 10
        with pytest.raises(RateLimited, match="credit_reserve"):
            list(connector.iter_tickets(None, format_time(datetime.now(UTC))))


def test_check_against_the_emulator(desk):
    report = desk.connector(agent_id=None).check(["L2 Support", "Billing", "Nope"])
    assert report.identity.endswith("org 2389290 — Zylker")
    assert report.missing_groups == ("Nope",)
    assert any(n.startswith(f"escbridge acts as agent {ESCBRIDGE_AGENT}") for n in report.notes)


def test_wrong_data_centre_against_the_emulator(desk):
    with pytest.raises(AuthError, match="set data_centre: 'com'"):
        desk.connector(data_centre="eu").fetch_ticket("1")


def test_missing_scopes_against_the_emulator():
    for desk in start(token_scopes="Desk.tickets.READ Desk.tickets.UPDATE Desk.basic.READ"):
        report = desk.connector().check([])
        assert any(p.startswith("scope Desk.search.READ is missing") for p in report.problems)


def test_the_emulator_refuses_search_from_past_999_like_desk(desk):
    """zohodesk-oas v1.0/Search.json: ``from`` 0..999, ``limit`` 1..100 (api-audit.md #1)."""
    client = desk.connector().client
    window = "2026-01-01T00:00:00.000Z,2026-01-02T00:00:00.000Z"
    params = {"modifiedTimeRange": window, "sortBy": "modifiedTime", "limit": 100}
    client.search({**params, "from": 999})  # the last offset Desk takes
    with pytest.raises(ValidationError) as refused:
        client.search({**params, "from": 1000})
    assert refused.value.status == 422
    with pytest.raises(ValidationError):
        client.search({**params, "from": 0, "limit": 101})


@pytest.mark.parametrize("team_null", ["string", "json"])
def test_a_department_only_destination_clears_the_team_either_way(team_null):
    """zohodesk-oas v1.0/Ticket.json allows teamId "null", not JSON null (api-audit.md #3,
    unconfirmed): the emulator takes one form, the connector gets there with either."""
    for desk in start(team_null=team_null):
        connector = desk.connector()
        raw = desk.state.add_ticket(teamId=desk.state.team_id("L2 Support"))
        actions = Actions(group="Support", note="back to the department", level="l1")
        result = connector.apply(connector.fetch_ticket(raw["id"]), actions)
        assert result.ok, result.error
        stored = desk.state.tickets.get(raw["id"])
        assert stored["teamId"] is None
        assert stored["departmentId"] == desk.state.department_id("Support")
        assert len(desk.state.comments[raw["id"]]) == 1  # the handover note stays
        sent = [b["teamId"] for m, _, b in desk.state.requests_log if m == "PATCH" and b]
        assert sent == (["null"] if team_null == "string" else ["null", None])


def test_the_emulator_validates_team_id_like_the_update_schema(desk):
    connector = desk.connector()
    raw = desk.state.add_ticket()
    l1 = desk.state.team_id("L1 Support")
    for refused in (None, "none", True, [l1]):
        with pytest.raises(ValidationError) as exc:
            connector.client.update_ticket(raw["id"], {"teamId": refused})
        assert exc.value.status == 422 and [f.field for f in exc.value.fields] == ["teamId"]
    assert connector.client.update_ticket(raw["id"], {"teamId": int(l1)})["teamId"] == l1
    assert connector.client.update_ticket(raw["id"], {"teamId": "null"})["teamId"] is None
    assert connector.client.update_ticket(raw["id"], {"teamId": l1})["teamId"] == l1
    assert connector.client.update_ticket(raw["id"], {"teamId": "undefined"})["teamId"] is None


SEARCH_SCHEMA = Path(__file__).parents[2] / "contract" / "schemas" / "zohodesk" / "Search.json"


def get_kind(path: str) -> str:
    if path.endswith("/tickets/search"):
        return "search"
    if path.endswith("/tags"):
        return "tags"
    return "ticket" if re.fullmatch(r"/api/v1/tickets/\d+", path) else path


def test_a_sync_page_reads_only_the_tags_of_tagged_tickets():
    """The emulator's search items are Search.json's ``searchTicketResponseFields``: ``cf`` and
    every field a decision needs, no ``tagCount``. A page of 100 tickets, 10 of them tagged,
    costs the search, one ``tag=${NotEmpty}&id=…`` search and 10 tag reads: 12 GETs, 16
    credits. (As list views without ``cf``, each item was read again: 111 GETs, 113 credits.)
    What the page says about each ticket is what reading it says."""
    for desk in start():
        now = datetime.now(UTC)
        l2 = desk.state.team_id("L2 Support")
        for i in range(100):
            tagged = i < 10
            desk.state.add_ticket(
                modifiedTime=format_time(now - timedelta(seconds=i + 1)),
                tags=["escbridge_l2", "vip"] if tagged else [],
                teamId=l2 if tagged else None,
                assigneeId=HUMAN_AGENT if i % 2 else None,
                priority="High" if i % 3 == 0 else "Medium",
                cf={
                    "cf_escalation_level": None,
                    "cf_overdue_2h_triggered": "true" if i % 5 else "false",
                },
            )
        connector = desk.connector()
        connector.directory.refresh()
        credits = desk.state.credits.peek().remaining
        mark = len(desk.state.requests_log)

        [page] = connector.iter_tickets(now - timedelta(minutes=5), None)

        log = desk.state.requests_log[mark:]
        assert Counter(get_kind(p) for m, p, _ in log if m == "GET") == {"search": 2, "tags": 10}
        assert [m for m, _, _ in log if m != "GET"] == []
        assert credits - desk.state.credits.peek().remaining == 3 + 3 + 10
        assert len(page.tickets) == 100
        levels = Counter((t.level, t.group, frozenset(t.tags)) for t in page.tickets)
        assert levels == {
            ("l2", "L2 Support", frozenset({"escbridge_l2", "vip"})): 10,
            (None, "Support", frozenset()): 90,
        }
        for ticket in page.tickets[::7]:  # the search item says what a full read says
            read = connector.fetch_ticket(ticket.id).model_dump()
            del read["custom_fields"]["is_response_overdue"]  # search items have no such key
            assert ticket.model_dump() == read


def test_the_emulators_search_items_have_exactly_the_published_keys(desk):
    """Search.json's ``searchTicketResponseFields`` is closed: every required key, nothing else
    (the contract checks validate the values too)."""
    schema = json.loads(SEARCH_SCHEMA.read_text())["components"]["schemas"]
    fields = schema["searchTicketResponseFields"]
    raw = desk.state.add_ticket(subject="Exact keys", assigneeId=HUMAN_AGENT)
    items, _ = desk.connector().client.search({"id": raw["id"], "limit": 1})
    [item] = items
    assert set(fields["required"]) <= set(item) <= set(fields["properties"])
    assert "tagCount" not in item and "cf" in item
    assert item["assignee"]["id"] == HUMAN_AGENT and item["department"]["name"] == "Support"
