"""A write whose outcome is unknown is never repeated blindly — every connector, every write call.

Each connector runs against its helpdesk emulator over real HTTP; between them a
``FlakyNetwork`` loses answers (the write was carried out; the client saw a read timeout, a reset
or a 504) or completes a write late (after the client gave up, while escbridge waits before
reading again). What a support lead would check is asserted: exactly one note, at most one
customer reply, the escalation on the ticket and reported as written (``recovered`` when it
was found there rather than answered). The settle wait runs on a FakeClock: it costs no time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.sandbox import FreshdeskSandbox
from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from escbridge_zendesk.sandbox import ZendeskSandbox
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ORG_ID,
    SANDBOX_REFRESH_TOKEN,
    DeskEmulator,
    emulator,
)
from flaky_network import FlakyNetwork

from escbridge.connector import Runtime
from escbridge.matrix import parse_matrix
from escbridge.model import Actions, LevelMarker, Priority, Ticket
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.sandbox import ServerThread, quiet_werkzeug, serve
from escbridge.sandbox.faults import FaultPlan, install
from escbridge.store import Store, upgrade
from escbridge.testing import FakeClock

LOST = ["timeout", "reset", "504"]  # the write was carried out, its answer lost
ALL = [*LOST, "late"]  # …or carried out after the client gave up
PAST = datetime.now(UTC) - timedelta(hours=3)
NOTE = "Escalated to L2: no first reply within 4 business hours."
REPLY = "We have passed your request to our senior team."


def settling_runtime(clock: FakeClock, net: FlakyNetwork, *also: Any) -> Runtime:
    """A simulated runtime whose sleeps (the settle wait among them) let late writes land."""

    def sleep(seconds: float) -> None:
        net.deliver()
        for hook in also:
            hook()
        clock.sleep(seconds)

    return Runtime.simulated(clock, session=net.session(), sleep=sleep)


# =========================================================================== Zendesk

ZD_AUTH = ("escbridge@sandbox.example/token", "sandbox-admin-token")
ZD_L2 = Actions(
    group="Tier 2", priority=Priority.HIGH, note=NOTE, tags_add=("escbridge_l2",), level="l2"
)
ZD_TICKET = r"/api/v2/tickets/\d+\.json"


def _zendesk_jobs_done() -> None:
    """The emulator runs update_many jobs on threads: wait for them (deterministic)."""
    for thread in threading.enumerate():
        if thread.name.startswith("V3-sandbox"):
            thread.join()


class Zendesk:
    def __init__(self, sb: ZendeskSandbox, server: ServerThread) -> None:
        self.sb, self.server = sb, server
        self.net = FlakyNetwork()
        self.clock = FakeClock()
        values = {
            "base_url": server.url,
            "sandbox": True,
            "email": ZD_AUTH[0].split("/")[0],
            **_zd_token(),
        }
        self.connector = ZendeskConnector(
            ZendeskConfig.model_validate(values),
            instance="zd",
            runtime=settling_runtime(self.clock, self.net, _zendesk_jobs_done),
        )

    def ticket(self, **kw: Any) -> Ticket:
        created = self.sb.create_ticket(tags=["vip"], at=PAST, notify=False, **kw)
        return self.connector.fetch_ticket(str(created["id"]))

    def comments(self, ticket_id: str) -> list[dict[str, Any]]:
        url = f"{self.server.url}/api/v2/tickets/{ticket_id}/comments.json"
        data = requests.get(url, auth=ZD_AUTH, params={"per_page": 100}, timeout=5).json()
        return list(data["comments"])

    def notes(self, ticket_id: str) -> list[str]:
        return [c["body"] for c in self.comments(ticket_id) if not c["public"]]

    def replies(self, ticket_id: str) -> list[str]:
        return [c["body"] for c in self.comments(ticket_id) if c["public"] and c["body"] == REPLY]


def _zd_token() -> dict[str, str]:
    return {"api_token": ZD_AUTH[1]}


@pytest.fixture
def zendesk() -> Iterator[Zendesk]:
    quiet_werkzeug()
    sb = ZendeskSandbox()
    with serve(sb.app) as server:
        rig = Zendesk(sb, server)
        yield rig
        rig.net.assert_played()
    sb.webhooks.close()


@pytest.mark.parametrize("how", LOST)
def test_zendesk_a_put_whose_answer_was_lost_is_recovered_not_repeated(
    zendesk: Zendesk, how: str
) -> None:
    ticket = zendesk.ticket()
    zendesk.net.lose("PUT", ZD_TICKET, how)
    result = zendesk.connector.apply(ticket, ZD_L2, on_conflict=lambda fresh: None)
    assert result.ok and result.recovered and not result.skipped
    assert zendesk.net.count("PUT", ZD_TICKET) == 1
    assert zendesk.notes(ticket.id) == [NOTE]
    assert zendesk.connector.fetch_ticket(ticket.id).level == "l2"
    assert zendesk.clock.sleeps == [30.0]  # one settle wait, then one read


def test_zendesk_a_put_that_completes_late_is_not_sent_again(zendesk: Zendesk) -> None:
    ticket = zendesk.ticket()
    zendesk.net.late("PUT", ZD_TICKET)  # lands while escbridge waits to read again
    result = zendesk.connector.apply(ticket, ZD_L2, on_conflict=lambda fresh: None)
    assert result.ok and result.recovered
    assert zendesk.net.count("PUT", ZD_TICKET) == 1
    assert zendesk.notes(ticket.id) == [NOTE]


def test_zendesk_a_put_landing_after_the_re_read_meets_409_and_is_recorded_not_redecided(
    zendesk: Zendesk,
) -> None:
    """The issue's sequence: the re-read finds nothing yet, the new PUT (same stamp) gets 409
    because the first one has landed meanwhile — that 409 is our own write, not a person's."""
    ticket = zendesk.ticket()
    zendesk.net.late("PUT", ZD_TICKET, deliver_on=("GET", ZD_TICKET))  # lands after the re-read
    decided: list[Ticket] = []

    def on_conflict(fresh: Ticket) -> Actions | None:
        decided.append(fresh)
        return None  # the engine, on the escalated ticket: nothing to do

    result = zendesk.connector.apply(ticket, ZD_L2, on_conflict=on_conflict)
    assert result.ok and result.recovered and not result.skipped
    assert decided == []  # compared with the pending write first: never re-decided
    assert result.conflicts == 1  # the second PUT (same stamp) was refused: 409
    assert zendesk.notes(ticket.id) == [NOTE]


def test_zendesk_a_write_that_never_arrived_is_made_once_after_the_settle_wait(
    zendesk: Zendesk,
) -> None:
    ticket = zendesk.ticket()
    zendesk.net.drop("PUT", ZD_TICKET)
    result = zendesk.connector.apply(ticket, ZD_L2)
    assert result.ok and not result.recovered
    assert zendesk.net.count("PUT", ZD_TICKET) == 1
    assert zendesk.notes(ticket.id) == [NOTE]


@pytest.mark.parametrize("how", ALL)
def test_zendesk_the_customer_update_put_lost_is_sent_exactly_once(
    zendesk: Zendesk, how: str
) -> None:
    ticket = zendesk.ticket()
    actions = ZD_L2.model_copy(update={"customer_update": REPLY})
    zendesk.net.fault("PUT", ZD_TICKET, how, skip=1)  # the second PUT: the public reply
    result = zendesk.connector.apply(ticket, actions)
    assert result.ok
    assert zendesk.notes(ticket.id) == [NOTE]
    assert zendesk.replies(ticket.id) == [REPLY]


@pytest.mark.parametrize("how", ALL)
def test_zendesk_update_many_lost_each_ticket_escalated_once(zendesk: Zendesk, how: str) -> None:
    tickets = [zendesk.ticket(subject=f"t{i}") for i in range(3)]
    zendesk.net.fault("PUT", r"/api/v2/tickets/update_many\.json", how)
    results = zendesk.connector.apply_many([(t, ZD_L2) for t in tickets])
    assert [r.ok for r in results] == [True, True, True]
    assert all(r.recovered for r in results)
    assert zendesk.net.count("PUT", r"/api/v2/tickets/update_many\.json") == 1
    assert zendesk.net.count("PUT", ZD_TICKET) == 0  # nothing written again one by one
    for t in tickets:
        assert zendesk.notes(t.id) == [NOTE]
    assert zendesk.clock.sleeps.count(30.0) == 1  # one settle wait for the whole batch


# =========================================================================== Freshdesk

FD_KEY = "sandbox-api-key-lost-0123"
FD_L2 = Actions(
    group="Escalations",
    priority=Priority.URGENT,
    note=NOTE,
    tags_add=("escbridge_l2",),
    level="l2",
)
FD_TICKET = r"/api/v2/tickets/\d+"
FD_NOTES = r"/api/v2/tickets/\d+/notes"
FD_REPLY = r"/api/v2/tickets/\d+/reply"


class Freshdesk:
    def __init__(self, sb: FreshdeskSandbox, server: ServerThread, *hooks: Any) -> None:
        self.sb, self.server = sb, server
        self.net = FlakyNetwork()
        self.clock = FakeClock()
        config = FreshdeskConfig.model_validate(
            {"domain": "sandbox", "api_key": FD_KEY, "api_url": server.url}
        )
        self.connector = FreshdeskConnector(
            config, instance="fd", runtime=settling_runtime(self.clock, self.net, *hooks)
        )

    def ticket(self) -> Ticket:
        raw = self.sb.create_ticket(tags=["vip"], notify=False)
        return self.connector.fetch_ticket(str(raw["id"]))

    def notes(self, ticket_id: str) -> int:
        return len(self.sb.notes(int(ticket_id)))

    def replies(self, ticket_id: str) -> int:
        return sum(1 for c in self.sb.conversations(int(ticket_id)) if not c.get("private"))


@pytest.fixture
def freshdesk() -> Iterator[Freshdesk]:
    quiet_werkzeug()
    sb = FreshdeskSandbox(api_key=FD_KEY)
    with serve(sb.app) as server:
        rig = Freshdesk(sb, server)
        yield rig
        rig.net.assert_played()
    sb.webhooks.close()


@pytest.mark.parametrize("how", ALL)
@pytest.mark.parametrize("call", ["PUT ticket", "POST note", "POST reply"])
def test_freshdesk_every_write_lost_or_late_one_note_one_reply(
    freshdesk: Freshdesk, call: str, how: str
) -> None:
    method, path = {
        "PUT ticket": ("PUT", FD_TICKET),
        "POST note": ("POST", FD_NOTES),
        "POST reply": ("POST", FD_REPLY),
    }[call]
    ticket = freshdesk.ticket()
    actions = FD_L2.model_copy(update={"customer_update": REPLY})
    freshdesk.net.fault(method, path, how)
    result = freshdesk.connector.apply(ticket, actions)
    assert result.ok and result.recovered
    assert freshdesk.net.count(method, path) == 1  # never sent a second time
    assert (freshdesk.notes(ticket.id), freshdesk.replies(ticket.id)) == (1, 1)
    assert freshdesk.connector.fetch_ticket(ticket.id).level == "l2"


@pytest.mark.parametrize("how", ["timeout", "504"])
def test_freshdesk_bulk_update_lost_each_ticket_escalated_once(
    freshdesk: Freshdesk, how: str
) -> None:
    tickets = [freshdesk.ticket() for _ in range(3)]
    freshdesk.net.lose("POST", r"/api/v2/tickets/bulk_update", how)
    results = freshdesk.connector.apply_many([(t, FD_L2) for t in tickets])
    assert all(r.ok for r in results)
    for t in tickets:
        assert freshdesk.notes(t.id) == 1
        assert freshdesk.connector.fetch_ticket(t.id).level == "l2"


def test_freshdesk_a_note_lost_in_a_bulk_write_is_settled_not_reposted(
    freshdesk: Freshdesk,
) -> None:
    tickets = [freshdesk.ticket() for _ in range(3)]
    freshdesk.net.late("POST", FD_NOTES)
    results = freshdesk.connector.apply_many([(t, FD_L2) for t in tickets])
    assert all(r.ok for r in results)
    assert [freshdesk.notes(t.id) for t in tickets] == [1, 1, 1]
    assert freshdesk.net.count("POST", FD_NOTES) == 3


def test_freshdesk_an_outcome_that_stays_unknown_is_a_retryable_failure(
    freshdesk: Freshdesk,
) -> None:
    ticket = freshdesk.ticket()
    for _ in range(4):
        freshdesk.net.drop("POST", FD_NOTES)  # never arrives, never answers
    result = freshdesk.connector.apply(ticket, FD_L2)
    assert not result.ok and result.retryable and result.unknown
    assert freshdesk.clock.sleeps.count(30.0) == 3  # three settle rounds, then give up
    assert freshdesk.notes(ticket.id) == 0


# =========================================================================== Zoho Desk

ZOHO_L2 = Actions(group="L2 Support", priority=Priority.HIGH, note=NOTE, level="l2")
ZOHO_TICKET = r"/api/v1/tickets/\d+"
ZOHO_COMMENTS = r"/api/v1/tickets/\d+/comments"


class Zoho:
    def __init__(self, state: DeskEmulator, server: ServerThread, *hooks: Any) -> None:
        self.state, self.server = state, server
        self.net = FlakyNetwork()
        self.clock = FakeClock(datetime.now(UTC))
        config = ZohoDeskConfig.model_validate(
            {
                "data_centre": "com",
                "org_id": SANDBOX_ORG_ID,
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "refresh_token": SANDBOX_REFRESH_TOKEN,
                "sandbox": True,
                "desk_url": server.url,
                "token_cache": "",
            }
        )
        self.connector = ZohoDeskConnector(
            config, instance="zoho", runtime=settling_runtime(self.clock, self.net, *hooks)
        )

    def ticket(self) -> Ticket:
        raw = self.state.add_ticket()
        return self.connector.fetch_ticket(str(raw["id"]))

    def comments(self, ticket_id: str, *, public: bool) -> int:
        return sum(1 for c in self.state.comments[ticket_id] if bool(c.get("isPublic")) == public)

    def level(self, ticket_id: str) -> Any:
        """The level marker tag on the ticket (Zoho keeps it as a real tag by default)."""
        tags = self.state.tickets.get(ticket_id).get("tags") or []
        return next((t for t in tags if LevelMarker.is_marker(t)), None)


@pytest.fixture
def zoho() -> Iterator[Zoho]:
    quiet_werkzeug()
    app = ZohoDeskConnector.sandbox()
    server = serve(app)
    try:
        rig = Zoho(emulator(app), server)
        yield rig
        rig.net.assert_played()
    finally:
        emulator(app).dispatcher.close()
        server.stop()


@pytest.mark.parametrize("how", ALL)
@pytest.mark.parametrize("call", ["POST note", "POST reply", "PATCH ticket"])
def test_zoho_every_write_lost_or_late_one_note_one_reply(zoho: Zoho, call: str, how: str) -> None:
    ticket = zoho.ticket()
    actions = ZOHO_L2.model_copy(update={"customer_update": REPLY})
    method, path = ("PATCH", ZOHO_TICKET) if call == "PATCH ticket" else ("POST", ZOHO_COMMENTS)
    # the note is the first comment POST, the reply the second
    zoho.net.fault(method, path, how, skip=1 if call == "POST reply" else 0)
    result = zoho.connector.apply(ticket, actions)
    assert result.ok
    assert (zoho.comments(ticket.id, public=False), zoho.comments(ticket.id, public=True)) == (
        1,
        1,
    )
    assert zoho.level(ticket.id) == "escbridge_l2"
    if call == "PATCH ticket":  # settled by re-reading, never sent twice
        assert zoho.net.count("PATCH", ZOHO_TICKET) == 1


@pytest.mark.parametrize("how", ["timeout", "504"])
def test_zoho_update_many_lost_each_ticket_escalated_once(zoho: Zoho, how: str) -> None:
    tickets = [zoho.ticket() for _ in range(3)]
    zoho.net.lose("POST", r"/api/v1/tickets/updateMany", how)
    results = zoho.connector.apply_many([(t, ZOHO_L2) for t in tickets])
    assert all(r.ok for r in results)
    for t in tickets:
        assert zoho.comments(t.id, public=False) == 1
        assert zoho.level(t.id) == "escbridge_l2"


def test_zoho_a_note_lost_in_a_bulk_write_is_settled_not_reposted(zoho: Zoho) -> None:
    tickets = [zoho.ticket() for _ in range(3)]
    zoho.net.late("POST", ZOHO_COMMENTS)
    results = zoho.connector.apply_many([(t, ZOHO_L2) for t in tickets])
    assert all(r.ok for r in results)
    assert [zoho.comments(t.id, public=False) for t in tickets] == [1, 1, 1]
    assert zoho.net.count("POST", ZOHO_COMMENTS) == 3


# =========================================================================== processing

MATRIX = """\
version: 1
name: lost answers
levels:
  - id: l1
    name: Frontline
    groups: {"*": Support}
  - id: l2
    name: Senior
    groups: {"*": Tier 2}
  - id: l3
    name: Managers
    groups: {"*": Managers}
limits:
  cooldown: 30m
  daily_cap: 5
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
  - id: angry
    name: Angry customer
    kind: hierarchical
    when: {tags: [angry]}
    to: l3
"""


def test_processing_records_a_zendesk_escalation_whose_answer_was_lost_and_409d(
    zendesk: Zendesk, tmp_path: Path
) -> None:
    """The issue's case end to end: the PUT's answer lost, the repeat answered 409. The
    escalation is recorded (an audit row, seen by the cooldown): a second rule may not push
    the ticket further up inside the cooldown."""
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    store = Store(url)
    try:
        engine = Engine(parse_matrix(MATRIX, "matrix.yaml"), helpdesks={"zd": "zendesk"})
        processor = Processor(store, engine, {"zd": zendesk.connector}, clock=zendesk.clock)
        created = zendesk.sb.create_ticket(tags=["vip"], at=PAST, notify=False)
        ticket_id = str(created["id"])
        zendesk.net.late("PUT", ZD_TICKET, deliver_on=("GET", ZD_TICKET))

        outcome = processor.process_ticket("zd", ticket_id)
        assert outcome.status == "recovered"
        [record] = store.escalations(ticket_id=ticket_id)
        assert (record.outcome, record.rule_id, record.to_level) == ("recovered", "vip", "l2")
        assert len(zendesk.notes(ticket_id)) == 1

        zendesk.sb.human_update(int(ticket_id), additional_tags=["angry"])
        zendesk.clock.advance(minutes=5)
        second = processor.process_ticket("zd", ticket_id)
        assert second.status == "unchanged"  # the cooldown saw the first escalation
        assert zendesk.connector.fetch_ticket(ticket_id).level == "l2"
    finally:
        store.close()


# =========================================================================== the emulators' faults
# The same findings with the emulators' own network faults (escbridge.sandbox.faults): a real
# TCP reset after the write was applied, and a write applied only when the test releases it —
# here, while escbridge waits before reading again.


@pytest.mark.parametrize(
    ("call", "kind", "answer"),
    [
        ("POST /api/v2/tickets/*/notes", "late", "504"),
        ("POST /api/v2/tickets/*/reply", "late", "reset"),
        ("PUT /api/v2/tickets/*", "lost_answer", "reset"),
    ],
)
def test_freshdesk_emulator_faults_one_note_one_reply(call: str, kind: str, answer: str) -> None:
    quiet_werkzeug()
    sb = FreshdeskSandbox(api_key=FD_KEY)
    plan = install(sb.app, FaultPlan())
    method, path = call.split(" ")
    plan.add(method, path, kind, answer=answer)
    with serve(sb.app) as server:
        rig = Freshdesk(sb, server, plan.release_late)  # late writes land during the wait
        ticket = rig.ticket()
        result = rig.connector.apply(ticket, FD_L2.model_copy(update={"customer_update": REPLY}))
        assert result.ok and result.recovered
        assert plan.fired(kind) == 1 and plan.pending_late == 0
        assert (rig.notes(ticket.id), rig.replies(ticket.id)) == (1, 1)
    plan.close()
    sb.webhooks.close()


def test_zendesk_emulator_lost_answer_to_the_put_is_recovered() -> None:
    quiet_werkzeug()
    sb = ZendeskSandbox()
    plan = install(sb.app, FaultPlan())
    plan.add("PUT", "/api/v2/tickets/*", "lost_answer", answer="reset")
    with serve(sb.app) as server:
        rig = Zendesk(sb, server)
        ticket = rig.ticket()
        result = rig.connector.apply(ticket, ZD_L2, on_conflict=lambda fresh: None)
        assert result.ok and result.recovered
        assert plan.fired("lost_answer") == 1
        assert rig.notes(ticket.id) == [NOTE]
    plan.close()
    sb.webhooks.close()


def test_zoho_emulator_a_late_comment_is_not_posted_twice() -> None:
    quiet_werkzeug()
    app = ZohoDeskConnector.sandbox()
    plan = install(app, FaultPlan())
    plan.add("POST", "/api/v1/tickets/*/comments", "late", answer="504")
    server = serve(app)
    try:
        rig = Zoho(emulator(app), server, plan.release_late)
        ticket = rig.ticket()
        assert rig.connector.apply(ticket, ZOHO_L2).ok
        assert plan.fired("late") == 1 and plan.pending_late == 0
        assert rig.comments(ticket.id, public=False) == 1
        assert rig.level(ticket.id) == "escbridge_l2"
    finally:
        plan.close()
        emulator(app).dispatcher.close()
        server.stop()


def test_zoho_a_half_written_escalation_is_finished_when_an_agent_edits_in_between() -> None:
    """The PATCH (group, priority) lands but its answer is lost; while escbridge waits to read
    the ticket again, an agent adds a tag. The re-read sees a concurrent edit — and the ticket
    already in the target group without its marker. Re-deciding would find nothing to do (the
    engine reads the level off the group) and leave the escalation half written; it is finished
    instead: the marker written, one note, one PATCH, reported as recovered."""
    quiet_werkzeug()
    app = ZohoDeskConnector.sandbox()
    server = serve(app)
    state = emulator(app)
    edited: list[str] = []

    def agent_adds_a_tag() -> None:
        for ticket_id in edited[:1]:
            state.tickets.update(
                ticket_id,
                lambda t: t.update(
                    tags=[*(t.get("tags") or []), "customer_waiting"],
                    modifiedTime="2030-01-01T00:00:00.000Z",
                ),
            )
            edited.clear()

    try:
        rig = Zoho(state, server, agent_adds_a_tag)
        ticket = rig.ticket()
        edited.append(ticket.id)
        rig.net.lose("PATCH", ZOHO_TICKET, "timeout")
        redecided: list[Ticket] = []

        def redecide(fresh: Ticket) -> Actions | None:
            redecided.append(fresh)  # as the engine would: already in L2's group, nothing to do
            return None

        result = rig.connector.apply(ticket, ZOHO_L2, on_conflict=redecide)
        assert result.ok and result.recovered and not result.skipped
        assert redecided == []
        assert rig.level(ticket.id) == "escbridge_l2"
        assert "customer_waiting" in (state.tickets.get(ticket.id).get("tags") or [])
        assert rig.comments(ticket.id, public=False) == 1
        assert rig.net.count("PATCH", ZOHO_TICKET) == 1
        rig.net.assert_played()
    finally:
        state.dispatcher.close()
        server.stop()
