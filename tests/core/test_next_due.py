"""``Engine.next_due``: when time alone next changes a ticket's decision, exactly.

The due-queue sleeps until that instant instead of sweeping, so it must never be late (a
decision that changed before it would escalate late) and should not be early (each early wake-up
is an API read). The property test checks both on random tickets, histories and matrices with
time conditions in calendar and business time (a UTC office calendar and a Berlin one with a
DST change and Easter holidays inside the sampled range): the decision is the same at every
sampled instant of ``[now, due)`` and differs at ``due``. The examples are the ones an admin
would check by hand.

Deterministic for CI: derandomized, no example database, a bounded number of examples.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matrix_helpers import engine, matrix, record, rule_yaml, ticket

from escbridge.conditions.ast import TimeTest, walk
from escbridge.conditions.due import flips
from escbridge.conditions.evaluate import Context, leaf_test
from escbridge.model import Decision, EscalationRecord, Priority, Status, Ticket
from escbridge.policy import Engine

US = timedelta(microseconds=1)
BERLIN_WINTER = timedelta(hours=1)  # CET: Berlin = UTC + 1h until Sunday 29 March 2026 01:00 UTC
BERLIN_SUMMER = timedelta(hours=2)  # CEST from then on

# The test ladder of matrix_helpers with two more calendars: Berlin office hours with Good Friday
# and Easter Monday 2026 as holidays (the clocks go forward the Sunday before), and 24x7.
HEAD = """\
version: 1
name: Due matrix
defaults:
  time: business
  calendar: office
calendars:
  office:
    timezone: UTC
    hours: {mon-fri: "09:00-17:00"}
  berlin:
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-18:00"}
    holidays: {dates: [2026-04-03, 2026-04-06]}
  always:
    timezone: UTC
    hours: {daily: 24h}
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support}
    response: 4h
    resolution: 1d
  - id: l2
    name: Senior support
    groups: {zendesk: Senior Support}
    calendar: berlin
    response: 2h
    resolution: 8h
  - id: l3
    name: Support manager
    groups: {zendesk: Support Managers}
    time: calendar
    resolution: 4h
teams:
  billing:
    name: Billing specialists
    groups: {zendesk: Billing}
    level: l2
  security:
    name: Security
    groups: {freshdesk: Security}
    level: l3
limits:
  cooldown: 30m
  daily_cap: 3
"""

# --- the property -------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MEASURES = ["age", "idle", "since_customer_reply", "until_due", "overdue", "at_level"]
MEASURES += ["level_overdue", "response_overdue"]
DURATIONS = ["0m", "30m", "90m", "4h", "9h", "1d", "3d", "20d"]
RUNGS = ["l1", "l2", "l3", "billing", "security"]
TARGETS = ["l2", "l3", "next", "billing", "security"]
# Sunday 22 March .. Wednesday 8 April 2026: both sides of the DST change and of Easter.
START = datetime(2026, 3, 22, tzinfo=UTC)
SPAN_MINUTES = 17 * 24 * 60


@st.composite
def time_tests(draw: st.DrawFn) -> dict[str, Any]:
    bounds = draw(
        st.fixed_dictionaries(
            {}, optional={"over": st.sampled_from(DURATIONS), "under": st.sampled_from(DURATIONS)}
        ).filter(bool)
    )
    mode = draw(st.sampled_from([{}, {"time": "calendar"}, {"time": "business"}]))
    calendar = draw(st.sampled_from([{}, {"calendar": "berlin"}, {"calendar": "always"}]))
    return {draw(st.sampled_from(MEASURES)): {**bounds, **mode, **calendar}}


other_tests = st.sampled_from(
    [
        {"priority": {"at_least": "high"}},
        {"tags": ["vip"]},
        {"level": ["l1"]},
        {"level": ["l2", "billing"]},
        {"status": ["new", "open"]},
    ]
)
conditions = st.recursive(
    time_tests() | other_tests,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"all": items}),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: {"any": items}),
        inner.map(lambda item: {"not": item}),
    ),
    max_leaves=4,
)


@st.composite
def matrices(draw: st.DrawFn) -> Engine:
    rules = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        to = draw(st.sampled_from(TARGETS))
        kind = "functional" if to in ("billing", "security") else "hierarchical"
        text = rule_yaml(json.dumps(draw(conditions)), rule_id=f"r{i}", to=to, kind=kind)
        if draw(st.booleans()):
            text += f"    repeat: {json.dumps(draw(st.booleans()))}\n"
        rules.append(text)
    return engine(matrix(*rules, head=HEAD))


def minutes(low: int, high: int) -> st.SearchStrategy[timedelta]:
    """Offsets on the hour (so limits land on opening and closing times), on the minute, and
    at odd microseconds."""
    hours = st.integers(-(-low // 60), high // 60).map(lambda h: timedelta(hours=h))
    whole = st.integers(low, high).map(lambda m: timedelta(minutes=m))
    odd = st.integers(low * 60_000_000, high * 60_000_000).map(lambda u: timedelta(microseconds=u))
    return hours | whole | odd


def ages(days: int) -> st.SearchStrategy[timedelta]:
    """Mostly short (limits ahead), sometimes long (limits passed long ago)."""
    return minutes(0, 3 * 24 * 60) | minutes(0, days * 24 * 60)


@st.composite
def situations(draw: st.DrawFn) -> tuple[Ticket, tuple[EscalationRecord, ...], datetime]:
    now = START + draw(minutes(0, SPAN_MINUTES))
    created = now - draw(ages(30))

    def after_created(optional: bool) -> datetime | None:
        if optional and draw(st.booleans()):
            return None
        return now - min(draw(ages(30)), now - created)

    fields = {
        "id": "t",
        "created_at": created,
        "updated_at": after_created(False),
        "first_response_at": after_created(True),
        "last_customer_reply_at": after_created(True),
        "due_at": None if draw(st.booleans()) else now + draw(minutes(-3 * 24 * 60, 5 * 24 * 60)),
        "status": draw(st.sampled_from([Status.OPEN, Status.OPEN, Status.NEW, Status.SOLVED])),
        "priority": draw(st.sampled_from(list(Priority))),
        "tags": draw(st.sampled_from([[], ["vip"]])),
        "level": draw(st.sampled_from([None, *RUNGS])),
    }
    history = tuple(
        record(
            now - draw(ages(3) | minutes(0, 90)),
            to=draw(st.sampled_from(RUNGS)),
            rule_id=draw(st.sampled_from(["r0", "r1", "r2", "other"])),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=4)))
    )
    return ticket(**fields), tuple(sorted(history, key=lambda r: r.at)), now


def verdict(d: Decision) -> tuple[bool, str | None, str | None]:
    """What an escalation changes: whether, by which rule, to where."""
    return d.escalate, d.rule_id, None if d.destination is None else d.destination.id


def leaf_changes(eng: Engine, t: Ticket, history: tuple[EscalationRecord, ...], now: datetime):
    """Every instant after ``now`` where some input of the decision changes: each flip of each
    time test of each rule (proved to be exactly the flips by the next test) and the instants
    the guard reads (cooldown end, a past escalation leaving the 24h window)."""
    ctx = Context(t, now, eng.current_rung(t), history)
    found = set()
    for rule in eng.matrix.rules:
        for leaf in walk(rule.condition):
            if isinstance(leaf, TimeTest):
                found.update(flips(leaf, ctx))
    for r in history:
        found.update({r.at + eng.matrix.cooldown, r.at + timedelta(days=1)})
    return sorted(at for at in found if at > now)


@PROPERTY
@given(matrices(), situations(), st.randoms(use_true_random=False))
def test_the_decision_holds_until_next_due_and_changes_there(
    eng: Engine,
    situation: tuple[Ticket, tuple[EscalationRecord, ...], datetime],
    rnd: random.Random,
) -> None:
    t, history, now = situation
    due = eng.next_due(t, history, now)
    first = verdict(eng.decide(t, history, now))
    end = now + timedelta(days=3650) if due is None else due
    if due is not None:
        assert due > now
        # Exact, not merely early: at the instant itself the decision is different.
        assert verdict(eng.decide(t, history, due)) != first, (due, first)
    # The decision can only change where an input changes: check both sides of each such
    # instant before ``due`` (all of them, not only those next_due kept), then random points.
    changes = [at for at in leaf_changes(eng, t, history, now) if at < end]
    samples = [now + US, end - US, *(at - US for at in changes), *changes]
    samples += [min(now + (end - now) * rnd.random(), end - US) for _ in range(3)]
    # Only instants before ``due``: a due time 1 µs after ``now`` makes ``now + US`` the due
    # time itself, where the decision differs by design (checked above).
    for at in (at for at in samples if now <= at < end):
        assert verdict(eng.decide(t, history, at)) == first, (at, due, first)


@PROPERTY
@given(time_tests(), situations(), st.randoms(use_true_random=False))
def test_a_time_test_changes_exactly_at_its_flips(
    when: dict[str, Any],
    situation: tuple[Ticket, tuple[EscalationRecord, ...], datetime],
    rnd: random.Random,
) -> None:
    # The evaluator's own verdict (``leaf_test``, what the engine runs) is the oracle: it
    # differs on the two sides of each flip, and anywhere else equals the verdict at ``now``
    # toggled once per flip passed.
    t, history, now = situation
    eng = engine(matrix(rule_yaml(json.dumps(when)), head=HEAD))
    test = eng.matrix.rules[0].condition
    assert isinstance(test, TimeTest)
    rung = eng.current_rung(t)

    def holds(at: datetime) -> bool:
        return leaf_test(test)(Context(t, at, rung, history))

    found = flips(test, Context(t, now, rung, history))
    assert all(at > now for at in found) and len(found) <= 2
    for at in found:
        assert holds(at - US) != holds(at), (at, when)
    base = holds(now)
    spans = [timedelta(days=d) for d in (1, 7, 40)]
    samples = [now + US, *(now + rnd.choice(spans) * rnd.random() for _ in range(30))]
    samples += [at + delta for at in found for delta in (-2 * US, US, timedelta(hours=1))]
    for at in samples:
        passed = sum(1 for f in found if f <= at)
        assert holds(at) == (base != (passed % 2 == 1)), (at, found, when)


# --- what an admin would check by hand ------------------------------------------------------


def due_of(when: dict[str, Any] | str, t: Ticket, now: datetime, **rule: Any) -> datetime | None:
    m = matrix(rule_yaml(when if isinstance(when, str) else json.dumps(when), **rule), head=HEAD)
    return engine(m).next_due(t, (), now)


def test_idle_over_20_days_is_due_when_the_20_days_are_up() -> None:
    # The forgotten ticket: idle 19 days, so it escalates in one day ("over" is strict: from the
    # first microsecond after the 20 days).
    now = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(days=40), updated_at=now - timedelta(days=19))
    due = due_of({"idle": {"over": "20d", "time": "calendar"}}, t, now)
    assert due == now + timedelta(days=1) + US
    assert (
        not engine(matrix(rule_yaml("{idle: {over: 20d, time: calendar}}"), head=HEAD))
        .decide(t, (), due - US)
        .escalate
    )


def test_business_hours_run_out_after_the_weekend_and_the_clock_change() -> None:
    # Berlin office hours Mon-Fri 08:00-18:00. Last touched Friday 27 March 16:00 (CET): 2h of the
    # 4h are used up on Friday; the clocks go forward on Sunday; the other 2h run from Monday
    # 08:00 CEST, so the ticket escalates just after 10:00 Berlin time, 08:00 UTC.
    friday_4pm = datetime(2026, 3, 27, 16, 0, tzinfo=UTC) - BERLIN_WINTER
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    t = ticket(created_at=friday_4pm - timedelta(days=1), updated_at=friday_4pm)
    due = due_of({"idle": {"over": "4h", "calendar": "berlin"}}, t, saturday)
    assert due == datetime(2026, 3, 30, 10, 0, tzinfo=UTC) - BERLIN_SUMMER + US


def test_a_holiday_weekend_does_not_count() -> None:
    # Thursday 2 April 17:00: one business hour left that day; Good Friday, the weekend and Easter
    # Monday are closed; the remaining 3h run out Tuesday 7 April at 11:00 Berlin time.
    thursday_5pm = datetime(2026, 4, 2, 17, 0, tzinfo=UTC) - BERLIN_SUMMER
    t = ticket(created_at=thursday_5pm, updated_at=thursday_5pm)
    due = due_of({"idle": {"over": "4h", "calendar": "berlin"}}, t, thursday_5pm)
    assert due == datetime(2026, 4, 7, 11, 0, tzinfo=UTC) - BERLIN_SUMMER + US


def test_a_limit_running_out_at_closing_time_is_due_next_morning() -> None:
    # UTC office hours 09:00-17:00: idle since Wednesday 13:00, "over 4h" is exactly 4h at 17:00
    # and becomes more than 4h only when the office opens again on Thursday.
    wednesday_1pm = datetime(2026, 3, 11, 13, 0, tzinfo=UTC)
    t = ticket(created_at=wednesday_1pm, updated_at=wednesday_1pm)
    due = due_of({"idle": "4h"}, t, wednesday_1pm + timedelta(hours=1))
    assert due == datetime(2026, 3, 12, 9, 0, tzinfo=UTC) + US


def test_time_left_in_business_hours_runs_out_at_the_last_closing_before_the_due_date() -> None:
    # Due Monday 30 March 10:00 Berlin time: from Friday 18:00 on only Monday's 08:00-10:00 are
    # left, so "more than 2h of business time left" stops holding at Friday's closing time, not
    # on Monday morning.
    friday_noon = datetime(2026, 3, 27, 12, 0, tzinfo=UTC) - BERLIN_WINTER
    monday_10am = datetime(2026, 3, 30, 10, 0, tzinfo=UTC) - BERLIN_SUMMER
    t = ticket(created_at=friday_noon, updated_at=friday_noon, due_at=monday_10am)
    due = due_of({"until_due": {"over": "2h", "calendar": "berlin"}}, t, friday_noon)
    assert due == datetime(2026, 3, 27, 18, 0, tzinfo=UTC) - BERLIN_WINTER


def test_due_soon_counts_down_to_the_due_date() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(hours=1), updated_at=now, due_at=now + timedelta(hours=5))
    # "until_due under 2h" holds once less than 2h are left: just after 15:00.
    due = due_of({"until_due": {"under": "2h", "time": "calendar"}}, t, now)
    assert due == now + timedelta(hours=3) + US


def test_time_at_the_level_counts_from_the_escalation_there() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(days=5), updated_at=now, level="l2")
    escalated = now - timedelta(hours=10)
    m = matrix(rule_yaml("{at_level: {over: 1d, time: calendar}}", to="l3"), head=HEAD)
    due = engine(m).next_due(t, (record(escalated, to="l2"),), now)
    assert due == escalated + timedelta(days=1) + US


def test_a_rule_that_cannot_match_makes_nothing_due() -> None:
    # "VIP and idle over 4h" for a ticket without the vip tag: time alone never changes anything.
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(hours=1), updated_at=now)
    assert due_of({"all": [{"tags": ["vip"]}, {"idle": "4h"}]}, t, now) is None
    assert (
        due_of(
            {"all": [{"tags": ["vip"]}, {"idle": "4h"}]},
            t.model_copy(update={"tags": frozenset({"vip"})}),
            now,
        )
        is not None
    )


def test_closed_tickets_and_rules_without_time_are_never_due() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    solved = ticket(status="solved", created_at=now, updated_at=now)
    assert due_of({"idle": "4h"}, solved, now) is None
    assert due_of({"tags": ["vip"]}, ticket(created_at=now, updated_at=now), now) is None


def test_a_rule_that_acted_already_is_not_due_again() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(days=2), updated_at=now - timedelta(hours=1), level="l2")
    m = matrix(rule_yaml("{idle: {over: 20d, time: calendar}}", to="l3"), head=HEAD)
    history = (record(now - timedelta(days=1), to="l2", rule_id="r"),)
    assert engine(m).next_due(t, history, now) is None


def test_the_cooldown_end_is_due_when_it_holds_back_an_escalation() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(days=2), updated_at=now - timedelta(days=1))
    m = matrix(rule_yaml("{idle: {over: 4h, time: calendar}}"), head=HEAD)
    history = (record(now - timedelta(minutes=10), to="l1"),)
    assert not engine(m).decide(t, history, now).escalate
    assert engine(m).next_due(t, history, now) == now + timedelta(minutes=20)


def test_the_daily_cap_is_due_when_the_oldest_escalation_leaves_the_24h_window() -> None:
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(days=2), updated_at=now - timedelta(days=1))
    m = matrix(rule_yaml("{idle: {over: 4h, time: calendar}}"), head=HEAD)
    history = tuple(
        record(now - timedelta(hours=h), to="l1") for h in (20, 5, 1)
    )  # three in 24h: the cap
    assert "daily cap" in engine(m).decide(t, history, now).summary
    assert engine(m).next_due(t, history, now) == now + timedelta(hours=4)


def test_a_flip_that_changes_nothing_does_not_make_the_ticket_due() -> None:
    # Rule "big" already sends the ticket to l3 once idle passes 1h; "small" matching at 2h idle
    # only goes to l2, so it changes no decision while "big" wins: the ticket is due at 1h.
    now = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    t = ticket(created_at=now - timedelta(hours=1), updated_at=now)
    m = matrix(
        rule_yaml("{idle: {over: 2h, time: calendar}}", rule_id="small", to="l2"),
        rule_yaml("{idle: {over: 1h, time: calendar}}", rule_id="big", to="l3"),
        head=HEAD,
    )
    eng = engine(m)
    assert eng.next_due(t, (), now) == now + timedelta(hours=1) + US
    assert eng.next_due(t, (), now + timedelta(hours=1, minutes=30)) is None
