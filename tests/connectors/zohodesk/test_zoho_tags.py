"""Ticket tags on Zoho Desk: the level marker as a real tag, rule tags through associateTag and
dissociateTag, exactly once after lost answers — against the emulator, which answers like
zohodesk-oas v1.0/TicketTag.json and Search.json (the ``tag`` filter)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
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

from escbridge.errors import AuthError, ValidationError
from escbridge.model import Actions, Priority, Ticket
from escbridge.sandbox import ServerThread, serve
from escbridge.testing.wsgi import WebhookCatcher

TAG_CALLS = "/api/v1/tickets/*/{}"


class Desk:
    """The emulator on 127.0.0.1 and connectors configured for it."""

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
            "max_attempts": 2,
            **settings,
        }
        return ZohoDeskConnector(
            ZohoDeskConfig.model_validate(config), instance="zoho-tags", sleep=self.sleeps.append
        )

    def calls(self, method: str, suffix: str) -> list[tuple[str, Any]]:
        """(path, body) of the requests with this method whose path ends with ``suffix``."""
        return [(p, b) for m, p, b in self.state.requests_log if m == method and p.endswith(suffix)]

    def tags(self, ticket_id: str) -> list[str]:
        stored = self.state.tickets.get(ticket_id)
        assert stored is not None
        return list(stored["tags"])


def start(**options: Any) -> Iterator[Desk]:
    app = ZohoDeskConnector.sandbox(**options)
    server = serve(app)
    try:
        yield Desk(server, emulator(app))
    finally:
        emulator(app).dispatcher.close()
        emulator(app).faults.close()
        server.stop()


@pytest.fixture
def desk() -> Iterator[Desk]:
    """A fresh emulator per test: the tests count requests and script faults."""
    yield from start()


TO_L2 = Actions(
    group="L2 Support",
    priority=Priority.HIGH,
    note="Overdue 2h: second line takes over",
    tags_add=("escbridge_l2", "sla_breach"),
    tags_remove=("escbridge_l1", "waiting_l1"),
    level="l2",
)


# --------------------------------------------------------------------------- the endpoints


def test_tags_are_read_added_and_removed_as_the_spec_says(desk):
    client = desk.connector().client
    raw = desk.state.add_ticket(tags=["VIP"])
    ticket_id = raw["id"]

    assert client.tags(ticket_id) == ["VIP"]
    client.associate_tags(ticket_id, ["escbridge_l2", "vip"])  # a tag it has: not doubled
    assert client.tags(ticket_id) == ["VIP", "escbridge_l2"]
    client.dissociate_tags(ticket_id, ["vip", "not_there"])  # names compare without case
    assert client.tags(ticket_id) == ["escbridge_l2"]

    # the ticket itself shows only the count (Ticket.json has tagCount, no tags)
    shown = client.ticket(ticket_id)
    assert shown["tagCount"] == "1" and "tags" not in shown


def test_a_tag_change_is_a_ticket_update_whose_payload_counts_tags(desk):
    """Desk's webhook payload is the ticket JSON: ``tagCount``, never a tag list."""
    catcher = WebhookCatcher(validate=lambda query: 200)
    with serve(catcher) as hooks:
        desk.state.register_webhook(f"{hooks.url}/hook", webhook_id="1892000000777001")
        ticket_id = desk.state.add_ticket()["id"]
        desk.connector().client.associate_tags(ticket_id, ["escbridge_l2"])
        assert desk.state.dispatcher.flush(5)
    [delivery] = catcher.take()
    [event] = json.loads(delivery.body)
    assert event["eventType"] == "Ticket_Update"
    assert event["payload"]["tagCount"] == "1" and "tags" not in event["payload"]
    assert event["prevState"]["tagCount"] == "0" and "tags" not in event["prevState"]
    assert event["payload"]["modifiedBy"] == ESCBRIDGE_AGENT  # the tag call is escbridge's


def test_the_emulator_refuses_what_the_spec_refuses(desk):
    client = desk.connector().client
    ticket_id = desk.state.add_ticket()["id"]
    tags = f"/tickets/{ticket_id}/associateTag"
    for body, field in (
        ({"tags": ["ok"]}, "tags.0"),  # under 3 characters
        ({"tags": ["x" * 51]}, "tags.0"),  # over 50
        ({"tags": ["null"]}, "tags.0"),
        ({"tags": ["a/b"]}, "tags.0"),
        ({"tags": []}, "tags"),  # 1..51 names
        ({"tags": [f"tag{i:03d}" for i in range(52)]}, "tags"),
        ({"tags": ["vip"], "ids": ["1"]}, "ids"),  # additionalProperties: false
    ):
        with pytest.raises(ValidationError) as refused:
            client.call("POST", tags, json=body)
        assert refused.value.status == 422 and refused.value.code == "INVALID_DATA"
        assert field in [f.field for f in refused.value.fields], body
    with pytest.raises(ValidationError) as extra:
        client.call("GET", f"/tickets/{ticket_id}/tags", params={"include": "all"})
    assert extra.value.status == 422 and extra.value.code == "UNPROCESSABLE_ENTITY"
    assert desk.tags(ticket_id) == []
    with pytest.raises(ValueError, match="valid tag names"):
        client.associate_tags(ticket_id, ["ok"])  # the client never sends what Desk refuses


def test_adding_tags_needs_desk_tickets_create():
    for desk in start(token_scopes="Desk.tickets.READ Desk.tickets.UPDATE Desk.basic.READ"):
        client = desk.connector().client
        ticket_id = desk.state.add_ticket()["id"]
        assert client.tags(ticket_id) == []  # reading is Desk.tickets.READ
        with pytest.raises(AuthError) as refused:
            client.associate_tags(ticket_id, ["escbridge_l2"])
        assert refused.value.code == "SCOPE_MISMATCH"
        report = desk.connector().check([])
        assert any(p.startswith("scope Desk.tickets.CREATE is missing") for p in report.problems)


def test_the_search_tag_filter(desk):
    client = desk.connector().client
    plain = desk.state.add_ticket()["id"]
    vip = desk.state.add_ticket(tags=["VIP"])["id"]
    marked = desk.state.add_ticket(tags=["escbridge_l2", "vip_gold"])["id"]

    def found(tag: str, **more: str) -> set[str]:
        items, _ = client.search({"tag": tag, "limit": 100, **more})
        return {str(i["id"]) for i in items}

    assert found("vip") == {vip}  # exact, without case
    assert found("vip*") == {vip, marked}  # Search.json: wildcard search
    assert found("escbridge_*") == {marked}
    assert found("${NotEmpty}") == {vip, marked}
    assert found("${Empty}") >= {plain} and not found("${Empty}") & {vip, marked}
    assert found("vip,escbridge_l2") == {vip, marked}  # several values: any
    assert found("${NotEmpty}", id=f"{plain},{vip}") == {vip}  # with the id filter
    with pytest.raises(ValidationError) as refused:
        found("ab")  # 3..100 characters
    assert refused.value.status == 422


# --------------------------------------------------------------------------- escalations


def test_an_escalation_moves_the_marker_and_keeps_the_humans_tags(desk):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket(tags=["VIP", "escbridge_l1", "waiting_l1"])["id"]
    ticket = connector.fetch_ticket(ticket_id)
    assert ticket.level == "l1" and "vip" in ticket.tags

    result = connector.apply(ticket, TO_L2)

    assert result.ok, result.error
    assert desk.tags(ticket_id) == ["VIP", "sla_breach", "escbridge_l2"]
    # the marker last: in the one associateTag after the PATCH, then the old tags go
    writes = [
        (m, p.rsplit("/", 1)[-1], b)
        for m, p, b in desk.state.requests_log
        if m in ("POST", "PATCH") and "/tickets/" in p
    ]
    assert writes == [
        ("POST", "comments", writes[0][2]),
        ("PATCH", ticket_id, {"teamId": desk.state.team_id("L2 Support"), "priority": "High"}),
        ("POST", "associateTag", {"tags": ["sla_breach", "escbridge_l2"]}),
        ("POST", "dissociateTag", {"tags": ["escbridge_l1", "waiting_l1"]}),
    ]
    assert connector.fetch_ticket(ticket_id).level == "l2"
    assert desk.state.tickets.get(ticket_id)["cf"]["cf_escalation_level"] is None


def test_a_tag_desk_would_refuse_is_left_out_not_the_escalation(desk, caplog):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket()["id"]
    actions = TO_L2.model_copy(update={"tags_add": ("escbridge_l2", "ok", "sla_breach")})

    assert connector.apply(connector.fetch_ticket(ticket_id), actions).ok

    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]
    assert "tags ['ok'] not written" in caplog.text


def test_a_level_id_too_long_for_a_tag_fails_before_anything_is_written(desk):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket()["id"]
    level = "x" * 41  # escbridge_ + 41 = 51 characters: Desk takes 50
    actions = Actions(group="L2 Support", note="n", tags_add=(f"escbridge_{level}",), level=level)

    result = connector.apply(connector.fetch_ticket(ticket_id), actions)

    assert not result.ok and not result.retryable
    assert "level_marker: field" in (result.error or "")
    assert desk.state.comments[ticket_id] == [] and desk.tags(ticket_id) == []


def test_a_marker_tag_changed_without_moving_modified_time_is_a_conflict():
    """Whether a tag change moves ``modifiedTime`` is undocumented: the level is compared too."""
    for desk in start(tags_bump_modified=False):
        connector = desk.connector()
        ticket_id = desk.state.add_ticket(tags=["escbridge_l1"])["id"]
        stale = connector.fetch_ticket(ticket_id)
        desk.state.change_tags(ticket_id, ["escbridge_l1"], HUMAN_AGENT, add=False)
        desk.state.change_tags(ticket_id, ["escbridge_l3"], HUMAN_AGENT, add=True)
        seen: list[Ticket] = []
        result = connector.apply(stale, TO_L2, on_conflict=seen.append)
        assert result.ok and result.skipped and result.conflicts == 1
        assert [t.level for t in seen] == ["l3"]
        assert desk.state.comments[ticket_id] == [] and desk.tags(ticket_id) == ["escbridge_l3"]


def test_levels_an_older_setup_kept_in_the_field_are_still_read(desk):
    connector = desk.connector()  # level_marker: tag, level_field: the default
    ticket_id = desk.state.add_ticket(cf={"cf_escalation_level": "escbridge_l1"})["id"]
    assert connector.fetch_ticket(ticket_id).level == "l1"

    assert connector.apply(connector.fetch_ticket(ticket_id), TO_L2).ok

    assert connector.fetch_ticket(ticket_id).level == "l2"  # the tag wins over the old field
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]


def test_tags_are_read_only_when_the_ticket_has_some(desk):
    connector = desk.connector()
    bare = desk.state.add_ticket()["id"]
    tagged = desk.state.add_ticket(tags=["VIP"])["id"]
    assert connector.fetch_ticket(bare).tags == frozenset()
    assert connector.fetch_ticket(tagged).tags == {"vip"}
    assert [p for p, _ in desk.calls("GET", "/tags")] == [f"/api/v1/tickets/{tagged}/tags"]


# --------------------------------------------------------------------------- exactly once


def test_a_lost_associate_answer_is_settled_by_reading_the_tags_not_by_sending_it_again(desk):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket(tags=["escbridge_l1"])["id"]
    desk.state.faults.add("POST", TAG_CALLS.format("associateTag"), "lost_answer", answer="reset")

    result = connector.apply(connector.fetch_ticket(ticket_id), TO_L2)

    assert result.ok and result.recovered, result
    assert len(desk.calls("POST", "/associateTag")) == 1  # landed; read back, never repeated
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]  # the old marker removed after
    assert len(desk.state.comments[ticket_id]) == 1
    assert desk.sleeps  # it waited for the write to settle before reading


def test_an_associate_that_had_not_landed_is_written_once_after_the_re_read(desk):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket()["id"]
    desk.state.faults.add(
        "POST", TAG_CALLS.format("associateTag"), "late", answer="reset", delay=None
    )

    result = connector.apply(connector.fetch_ticket(ticket_id), TO_L2)

    assert result.ok and result.conflicts == 0, result
    assert desk.state.faults.fired("late") == 1
    # the re-read found no marker: sent again, once; the PATCH, which had landed, not again
    assert len(desk.calls("POST", "/associateTag")) == 1
    assert len(desk.calls("PATCH", ticket_id)) == 1
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]
    assert len(desk.state.comments[ticket_id]) == 1
    desk.state.faults.release_late()  # the first one arrives after all: nothing doubles
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]


def test_a_lost_dissociate_answer_leaves_no_old_marker(desk):
    connector = desk.connector()
    ticket_id = desk.state.add_ticket(tags=["escbridge_l1", "waiting_l1"])["id"]
    desk.state.faults.add(
        "POST", TAG_CALLS.format("dissociateTag"), "late", answer="reset", delay=None
    )

    result = connector.apply(connector.fetch_ticket(ticket_id), TO_L2)

    # the removal had not happened when escbridge looked again: it was sent once more
    assert result.ok and result.recovered, result
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]
    assert len(desk.calls("POST", "/associateTag")) == 1
    desk.state.faults.release_late()  # the first removal arrives late: nothing left to remove
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]


def test_a_lost_patch_answer_is_not_taken_for_a_persons_edit(desk):
    """The PATCH landed but its answer was lost: the re-read ticket moved (the note, the PATCH)
    only as this escalation moves it, so it goes on to the tags — no conflict, no second note."""
    connector = desk.connector()
    ticket_id = desk.state.add_ticket(tags=["escbridge_l1"])["id"]
    desk.state.faults.add("PATCH", f"/api/v1/tickets/{ticket_id}", "lost_answer", answer="reset")
    decided_again = []

    result = connector.apply(
        connector.fetch_ticket(ticket_id), TO_L2, on_conflict=lambda t: decided_again.append(t)
    )

    assert result.ok and result.conflicts == 0 and decided_again == [], result
    assert len(desk.calls("PATCH", ticket_id)) == 1
    assert len(desk.state.comments[ticket_id]) == 1
    assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]


def test_bulk_tags_go_per_ticket_after_update_many_and_a_lost_answer_costs_no_other(desk):
    connector = desk.connector()
    ids = [desk.state.add_ticket(tags=["escbridge_l1"])["id"] for _ in range(4)]
    tickets = [connector.fetch_ticket(t) for t in ids]
    desk.state.faults.add(
        "POST", f"/api/v1/tickets/{ids[1]}/associateTag", "lost_answer", answer="reset"
    )

    results = connector.apply_many([(t, TO_L2) for t in tickets])

    assert [r.ok for r in results] == [True] * 4, results
    assert results[1].recovered
    for ticket_id in ids:
        assert desk.tags(ticket_id) == ["sla_breach", "escbridge_l2"]
        assert len(desk.state.comments[ticket_id]) == 1
    assert [b["fieldName"] for _, b in desk.calls("POST", "/updateMany")] == ["teamId", "priority"]
    assert len(desk.calls("POST", "/associateTag")) == 4


# --------------------------------------------------------------------------- the field option


def test_with_a_field_marker_rule_tags_go_before_the_patch_that_writes_the_level(desk):
    connector = desk.connector(level_marker="field")
    ticket_id = desk.state.add_ticket(tags=["escbridge_l1", "waiting_l1"])["id"]

    assert connector.apply(connector.fetch_ticket(ticket_id), TO_L2).ok

    stored = desk.state.tickets.get(ticket_id)
    assert stored["cf"]["cf_escalation_level"] == "escbridge_l2"
    assert desk.tags(ticket_id) == ["sla_breach"]  # no marker tag: the field carries the level
    kinds = [
        p.rsplit("/", 1)[-1]
        for m, p, _ in desk.state.requests_log
        if m in ("POST", "PATCH") and "/tickets/" in p
    ]
    assert kinds == ["comments", "associateTag", "dissociateTag", ticket_id]
