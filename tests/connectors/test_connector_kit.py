"""The connector toolkit: BaseConnector's one apply loop and the kit every connector shares."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from escbridge.connector import (
    ApplyResult,
    BaseConnector,
    CheckReport,
    ConnectorInfo,
    ConnectorSettings,
    Group,
    GroupDirectory,
    Runtime,
    SlidingWindow,
    TicketPage,
    WebhookRequest,
    check_identity,
    poll_job,
)
from escbridge.connector.base import DEFAULT_WRITE_SETTLE_ROUNDS, DEFAULT_WRITE_SETTLE_SECONDS
from escbridge.errors import (
    AuthError,
    Conflict,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    TicketChanged,
    TransientError,
    UnknownGroupError,
)
from escbridge.model import Actions, Priority, Ticket, TicketEvent
from escbridge.testing import FakeClock

T0 = datetime(2026, 3, 2, 12, 0).astimezone()


def ticket(ticket_id: str = "7", version: str = "v1") -> Ticket:
    return Ticket(id=ticket_id, instance="t", created_at=T0, updated_at=T0, version=version)


ESCALATE = Actions(group="Tier 2", priority=Priority.HIGH, level="l2")


# --------------------------------------------------------------------------- a tiny helpdesk


class PlainConfig(ConnectorSettings):
    conflict_retries: int = 2
    token: str = "tok-123456"

    def secret_values(self) -> list[str]:
        return [self.token]


@dataclass
class Desk:
    """A helpdesk in memory: versions move when someone else edits."""

    versions: dict[str, str] = field(default_factory=dict)
    edits_before_write: int = 0  # concurrent edits that happen before each write
    writes: list[str] = field(default_factory=list)
    bulk_calls: list[list[str]] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)


@dataclass(frozen=True)
class Write:
    ticket: Ticket
    actions: Actions


class DeskConnector(BaseConnector[PlainConfig, Write]):
    info = ConnectorInfo(name="desk", version="1", display_name="Desk")

    def __init__(self, desk: Desk, *, bulk: bool = False, **kw: Any) -> None:
        super().__init__(PlainConfig(), instance="t", **kw)
        self.desk = desk
        self.bulk = bulk

    def check(self, groups: Collection[str]) -> CheckReport:
        return CheckReport.of("desk")

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        return ticket(ticket_id, self.desk.versions.setdefault(ticket_id, "v1"))

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        yield TicketPage([], None, True)

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        return ticket(str(raw["id"]))

    def verify_request(self, request: WebhookRequest) -> None:
        return None

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        return []

    def is_own_change(self, event: TicketEvent) -> bool:
        return False

    def _prepare(self, ticket: Ticket, actions: Actions) -> Write:
        if ticket.id in self.desk.fail:
            raise self.desk.fail[ticket.id]
        current = self.desk.versions.setdefault(ticket.id, "v1")
        if self.desk.edits_before_write:
            self.desk.edits_before_write -= 1
            current = self.desk.versions[ticket.id] = current + "+"
        if ticket.version != current:
            raise TicketChanged("changed", current=self.fetch_ticket(ticket.id))
        return Write(ticket, actions)

    def _write_one(self, prepared: Write) -> ApplyResult:
        self.desk.writes.append(prepared.ticket.id)
        return ApplyResult(prepared.ticket.id, ok=True, actions=prepared.actions)

    def _bulk_key(self, prepared: Write) -> str | None:
        return "all" if self.bulk else None

    def _write_bulk(self, batch: Sequence[Write]) -> list[ApplyResult]:
        self.desk.bulk_calls.append([w.ticket.id for w in batch])
        return [ApplyResult(w.ticket.id, ok=True, actions=w.actions) for w in batch]


def test_without_a_handler_a_conflict_is_raised_and_nothing_written() -> None:
    desk = Desk(edits_before_write=1)
    with pytest.raises(Conflict):
        DeskConnector(desk).apply(ticket(), ESCALATE)
    assert desk.writes == []


def test_with_a_handler_the_fresh_ticket_is_decided_again_and_written() -> None:
    desk = Desk(edits_before_write=1)
    seen: list[str | None] = []

    def redecide(fresh: Ticket) -> Actions:
        seen.append(fresh.version)
        return ESCALATE

    result = DeskConnector(desk).apply(ticket(), ESCALATE, on_conflict=redecide)
    assert result.ok and result.conflicts == 1 and seen == ["v1+"]
    assert desk.writes == ["7"]


def test_a_redecision_with_nothing_left_to_do_is_skipped() -> None:
    result = DeskConnector(Desk(edits_before_write=1)).apply(
        ticket(), ESCALATE, on_conflict=lambda fresh: None
    )
    assert result.ok and result.skipped and result.conflicts == 1


def test_a_ticket_that_keeps_changing_is_a_retryable_conflict_not_an_exception() -> None:
    desk = Desk(edits_before_write=99)
    result = DeskConnector(desk).apply(ticket(), ESCALATE, on_conflict=lambda t: ESCALATE)
    assert not result.ok and result.conflict and result.retryable
    assert result.conflicts == 3  # conflict_retries=2 retries after the first conflict
    assert desk.writes == []


def test_apply_many_reports_a_conflict_without_a_handler_and_writes_the_rest() -> None:
    desk = Desk(versions={"1": "v2"})
    results = DeskConnector(desk).apply_many([(ticket("1"), ESCALATE), (ticket("2"), ESCALATE)])
    assert [r.ticket_id for r in results] == ["1", "2"]
    assert results[0].conflict and results[0].retryable and not results[0].ok
    assert results[1].ok and desk.writes == ["2"]


def test_apply_many_groups_bulk_writes_and_keeps_the_order() -> None:
    desk = Desk(fail={"2": NotFound("gone", status=404)})
    items = [(ticket(str(i)), ESCALATE) for i in range(1, 5)]
    results = DeskConnector(desk, bulk=True).apply_many(items)
    assert [r.ticket_id for r in results] == ["1", "2", "3", "4"]
    assert not results[1].ok and "ticket not found" in (results[1].error or "")
    assert desk.bulk_calls == [["1", "3", "4"]]


def test_apply_many_turns_one_items_outage_into_a_retryable_result_but_raises_auth() -> None:
    outage = Desk(fail={"1": TransientError("down", status=503)})
    results = DeskConnector(outage).apply_many([(ticket("1"), ESCALATE), (ticket("2"), ESCALATE)])
    assert results[0].retryable and not results[0].ok and results[1].ok
    with pytest.raises(AuthError):
        DeskConnector(Desk(fail={"1": AuthError("no", status=401)})).apply_many(
            [(ticket("1"), ESCALATE)]
        )


def test_apply_refuses_per_ticket_and_raises_what_concerns_every_call() -> None:
    refused = DeskConnector(Desk(fail={"7": UnknownGroupError("Tier 9", "t", ["Tier 2"])}))
    result = refused.apply(ticket(), ESCALATE)
    assert not result.ok and not result.retryable and "Tier 9" in (result.error or "")
    with pytest.raises(RateLimited):
        DeskConnector(Desk(fail={"7": RateLimited("slow", retry_after=5)})).apply(
            ticket(), ESCALATE
        )


def test_the_constructor_takes_a_runtime_and_single_overrides() -> None:
    clock = FakeClock()
    connector = DeskConnector(Desk(), runtime=Runtime.simulated(clock), sleep=print)
    assert connector.runtime.utcnow() == clock() and connector.runtime.sleep is print
    assert connector.secret_values() == ["tok-123456"] and connector.conflict_retries == 2
    with pytest.raises(TypeError, match="Runtime has no colour"):
        DeskConnector(Desk(), colour="red")


# --------------------------------------------------------------------------- the kit


def test_webhook_headers_are_found_in_any_case() -> None:
    request = WebhookRequest.of({"X-Zendesk-Webhook-Id": "01", "content-type": "json"}, b"{}")
    assert request.header("x-zendesk-webhook-id") == "01"
    assert request.headers["Content-Type"] == "json" and "CONTENT-TYPE" in request.headers
    assert list(request.headers) == ["X-Zendesk-Webhook-Id", "content-type"]
    assert request.header("missing") is None and request.query == {}


def test_group_directory_reloads_on_a_miss_at_most_every_min_reload() -> None:
    clock = FakeClock()
    loads: list[int] = []
    groups = [Group(1, "Support")]

    def load() -> list[Group[int]]:
        loads.append(1)
        return list(groups)

    directory = GroupDirectory(load, instance="eu", min_reload=60, clock=clock.monotonic)
    assert directory.id_of("support") == 1 and len(loads) == 1
    groups.append(Group(2, "Tier 2"))
    with pytest.raises(UnknownGroupError) as err:
        directory.id_of("Tier 2")  # loaded a moment ago: no second call yet
    assert err.value.known == ("Support",) and len(loads) == 1
    clock.advance(seconds=61)
    assert directory.id_of("TIER 2") == 2 and len(loads) == 2
    directory.note_tickets([{"group_id": "2"}, {"group_id": None}], "group_id")
    assert len(loads) == 2  # every id known (read as is: no parse_id)
    assert directory.missing(["Support", "Nope"]) == ["Nope"] and len(loads) == 3


def test_an_inactive_group_keeps_its_name_but_is_not_routed_to() -> None:
    directory = GroupDirectory(lambda: [Group(3, "Old", active=False)], instance="eu")
    with pytest.raises(UnknownGroupError):
        directory.id_of("Old")
    assert directory.names() == {3: "Old"}


def test_poll_job_backs_off_and_gives_up_at_the_timeout() -> None:
    clock = FakeClock()
    statuses = iter(["queued", "working", "completed"])
    done = poll_job(
        lambda: {"status": next(statuses)},
        lambda job: job["status"] == "completed",
        timeout=60,
        clock=clock.monotonic,
        sleep=clock.sleep,
        delay=0.1,
        max_delay=0.15,
    )
    assert done.finished and done.job == {"status": "completed"}
    assert clock.sleeps == [0.1, 0.15]
    stuck = poll_job(
        lambda: None,
        lambda job: False,
        first={"status": "queued"},
        timeout=2,
        clock=clock.monotonic,
        sleep=clock.sleep,
    )
    assert not stuck.finished and stuck.job == {"status": "queued"}


def test_check_identity_turns_api_errors_into_the_problem_an_admin_reads() -> None:
    def refused() -> dict[str, str]:
        raise AuthError("Couldn't authenticate you", status=401)

    report = check_identity(refused, product="Acme", where="acme.example", credentials="api_key")
    assert isinstance(report, CheckReport) and not report.ok
    assert report.problems == (
        "Acme rejected the credentials (HTTP 401: Couldn't authenticate you); "
        "check api_key for acme.example",
    )
    assert check_identity(lambda: {"id": 1}, product="Acme", where="acme.example") == {"id": 1}


def test_sliding_window_refuses_or_waits_until_a_unit_expires() -> None:
    clock = FakeClock()
    window = SlidingWindow(2, 60.0, clock.monotonic)
    assert window.acquire().allowed and window.acquire().allowed
    refused = window.acquire()
    assert not refused.allowed and refused.retry_after == 60.0 and refused.remaining == 0
    clock.advance(seconds=30)
    assert window.wait(clock.sleep) == 30.0 and clock.sleeps == [30.0]
    assert window.peek().remaining == 1  # the first two expired together; the wait spent one
    with pytest.raises(ValueError):
        window.wait(clock.sleep, cost=3)


def test_a_job_whose_first_wait_has_passed_is_read_at_once() -> None:
    """Jobs submitted together are polled together: the second is not waited for again."""
    clock = FakeClock()
    submitted = clock.monotonic()
    clock.sleep(0.3)  # the first job's poll took this long
    reads = []

    def fetch() -> dict[str, str]:
        reads.append(clock.monotonic())
        return {"status": "completed"}

    poll = poll_job(
        fetch,
        lambda j: j.get("status") == "completed",
        first={"status": "queued"},
        submitted_at=submitted,
        timeout=60,
        clock=clock.monotonic,
        sleep=clock.sleep,
        delay=0.1,
    )
    assert poll.finished and clock.sleeps == [0.3] and len(reads) == 1


def test_polling_waits_the_rest_of_the_first_delay_then_doubles() -> None:
    clock = FakeClock()
    submitted = clock.monotonic()
    clock.sleep(0.04)
    answers = iter([{"status": "working"}, {"status": "working"}, {"status": "completed"}])
    poll = poll_job(
        lambda: next(answers),
        lambda j: j.get("status") == "completed",
        first={"status": "queued"},
        submitted_at=submitted,
        timeout=60,
        clock=clock.monotonic,
        sleep=clock.sleep,
        delay=0.1,
    )
    assert poll.finished
    assert [round(s, 3) for s in clock.sleeps] == [0.04, 0.06, 0.2, 0.4]


# --------------------------------------------------------------------------- lost answers


@dataclass
class LossyDesk:
    """A helpdesk whose writes may be carried out without the answer arriving.

    ``faults`` are taken one per write: ``lost`` (carried out, then OutcomeUnknown), ``late``
    (OutcomeUnknown now, carried out when the caller next sleeps), ``dropped`` (never carried
    out), ``conflict-landed`` (carried out by a late twin, so this write meets a 409).
    """

    levels: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)

    def land(self, ticket_id: str) -> None:
        self.levels[ticket_id] = "l2"
        self.versions[ticket_id] = self.versions.get(ticket_id, 1) + 1
        self.arrived.append(ticket_id)

    def sleep(self, clock: FakeClock) -> Any:
        def sleep(seconds: float) -> None:
            for ticket_id in self.late:
                self.land(ticket_id)
            self.late.clear()
            clock.sleep(seconds)

        return sleep


class LossyConnector(DeskConnector):
    """DeskConnector on a LossyDesk: the marker is the level; ``_prepare`` reads the ticket."""

    def __init__(
        self,
        lossy: LossyDesk,
        clock: FakeClock,
        *,
        bulk: bool = False,
        config: PlainConfig | None = None,
    ) -> None:
        runtime = Runtime.simulated(clock, sleep=lossy.sleep(clock))
        BaseConnector.__init__(self, config or PlainConfig(), instance="t", runtime=runtime)
        self.desk, self.bulk, self.lossy = Desk(), bulk, lossy

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        version = f"v{self.lossy.versions.setdefault(ticket_id, 1)}"
        return ticket(ticket_id, version).model_copy(
            update={"level": self.lossy.levels.get(ticket_id)}
        )

    def _prepare(self, ticket: Ticket, actions: Actions) -> Write | ApplyResult:  # type: ignore[override]
        fresh = self.fetch_ticket(ticket.id)
        if fresh.level == actions.level:
            return ApplyResult(ticket.id, ok=True, actions=actions, recovered=True)
        if fresh.version != ticket.version:
            raise TicketChanged("changed", current=fresh)
        return Write(ticket, actions)

    def _write_one(self, prepared: Write) -> ApplyResult:
        ticket_id = prepared.ticket.id
        fault = self.lossy.faults.pop(0) if self.lossy.faults else None
        if fault == "conflict-landed":
            self.lossy.land(ticket_id)
            raise Conflict("409: stale updated_stamp", status=409)
        if fault in (None, "lost"):
            self.lossy.land(ticket_id)
        if fault == "late":
            self.lossy.late.append(ticket_id)
        if fault is not None:
            raise OutcomeUnknown("no answer within 30s (ReadTimeout)", method="PUT", url="/t")
        return ApplyResult(ticket_id, ok=True, actions=prepared.actions)

    def _write_bulk(self, batch: Sequence[Write]) -> list[ApplyResult]:
        fault = self.lossy.faults.pop(0) if self.lossy.faults else None
        self.desk.bulk_calls.append([w.ticket.id for w in batch])
        for w in batch:
            if fault != "late":
                self.lossy.land(w.ticket.id)
            else:
                self.lossy.late.append(w.ticket.id)
        if fault is not None:
            raise OutcomeUnknown("bulk: no answer", method="PUT", url="/bulk")
        return [ApplyResult(w.ticket.id, ok=True, actions=w.actions) for w in batch]


@pytest.mark.parametrize("fault", ["lost", "late"])
def test_a_write_whose_answer_was_lost_is_settled_read_again_and_not_repeated(
    fault: str,
) -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=[fault])
    result = LossyConnector(lossy, clock).apply(ticket(version="v1"), ESCALATE)
    assert result.ok and result.recovered
    assert lossy.arrived == ["7"]  # carried out once
    assert clock.sleeps == [DEFAULT_WRITE_SETTLE_SECONDS]  # one wait, on the FakeClock


def test_a_write_that_never_arrived_is_made_once_after_the_wait() -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=["dropped"])
    result = LossyConnector(lossy, clock).apply(ticket(version="v1"), ESCALATE)
    assert result.ok and not result.recovered
    assert lossy.arrived == ["7"]


def test_an_outcome_that_stays_unknown_is_a_bounded_retryable_failure() -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=["dropped"] * 10)
    result = LossyConnector(lossy, clock).apply(ticket(version="v1"), ESCALATE)
    assert not result.ok and result.retryable and result.unknown
    assert "outcome unknown after 3 re-reads" in (result.error or "")
    assert clock.sleeps == [DEFAULT_WRITE_SETTLE_SECONDS] * DEFAULT_WRITE_SETTLE_ROUNDS
    assert lossy.arrived == []


def test_the_settle_wait_and_rounds_come_from_the_config() -> None:
    class Settled(PlainConfig):
        write_settle_seconds: float = 45.0
        write_settle_rounds: int = 1

    clock, lossy = FakeClock(), LossyDesk(faults=["dropped"] * 3)
    result = LossyConnector(lossy, clock, config=Settled()).apply(ticket(version="v1"), ESCALATE)
    assert result.unknown and clock.sleeps == [45.0]


def test_a_409_after_a_lost_answer_is_our_own_write_not_a_redecision() -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=["dropped", "conflict-landed"])
    asked: list[Ticket] = []

    def on_conflict(fresh: Ticket) -> Actions | None:
        asked.append(fresh)
        return None

    result = LossyConnector(lossy, clock).apply(
        ticket(version="v1"), ESCALATE, on_conflict=on_conflict
    )
    assert result.ok and result.recovered and not result.skipped and result.conflicts == 1
    assert asked == []  # the escalation was found on the ticket: not decided again


def test_a_409_without_an_ambiguous_write_is_decided_again_even_at_the_same_level() -> None:
    """A person who set the very level escbridge was about to set is a person's edit."""
    clock, lossy = FakeClock(), LossyDesk(faults=["conflict-landed"])
    result = LossyConnector(lossy, clock).apply(
        ticket(version="v1"), ESCALATE, on_conflict=lambda fresh: None
    )
    assert result.ok and result.skipped and not result.recovered


@pytest.mark.parametrize("fault", ["lost", "late"])
def test_a_bulk_write_whose_answer_was_lost_waits_once_for_the_whole_chunk(fault: str) -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=[fault])
    items = [(ticket(str(i), "v1"), ESCALATE) for i in range(1, 5)]
    results = LossyConnector(lossy, clock, bulk=True).apply_many(items)
    assert [r.ok for r in results] == [True] * 4 and all(r.recovered for r in results)
    assert sorted(lossy.arrived) == ["1", "2", "3", "4"]  # each carried out once
    assert clock.sleeps == [DEFAULT_WRITE_SETTLE_SECONDS]


def test_a_bulk_item_whose_write_never_arrived_is_written_alone_after_the_wait() -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=["late"])
    connector = LossyConnector(lossy, clock, bulk=True)
    original = lossy.sleep(clock)
    connector.runtime = connector.runtime.with_(sleep=lambda s: (lossy.late.clear(), original(s)))
    results = connector.apply_many([(ticket(str(i), "v1"), ESCALATE) for i in range(1, 3)])
    assert all(r.ok and not r.recovered for r in results)  # never landed: written after all
    assert sorted(lossy.arrived) == ["1", "2"]


def test_without_a_handler_a_409_after_a_lost_answer_is_still_found_landed() -> None:
    clock, lossy = FakeClock(), LossyDesk(faults=["dropped", "conflict-landed"])
    result = LossyConnector(lossy, clock).apply(ticket(version="v1"), ESCALATE)
    assert result.ok and result.recovered  # not raised as a Conflict: it was our own write


def test_a_config_that_is_not_connector_settings_gets_the_defaults() -> None:
    class Bare(BaseModel):
        token: str = "tok-123456"

        def secret_values(self) -> list[str]:
            return [self.token]

    connector = DeskConnector(Desk())
    BaseConnector.__init__(connector, Bare(), instance="t")  # type: ignore[arg-type]
    assert connector.conflict_retries == ConnectorSettings().conflict_retries
    assert connector.write_settle_seconds == ConnectorSettings().write_settle_seconds
