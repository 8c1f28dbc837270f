"""`escbridge report`: the figures a support manager reads, checked on a history small enough to
count by hand.

The history: one week (Mon 9 – Sun 15 March 2026, UTC) against the week before, a three-level
ladder with a billing team, calendar time so every duration below is plain arithmetic.

    ticket  escalations (day hour, created → escalated → resolved)        at the level
    T1      l1→l2 vip 09 10:00 (created 08:00), resolved 09 14:00         4h at l2: within 8h
    T2      l1→l2 vip 09 12:00 (created 09 09:00); l2→l3 legal 10 12:00;  moved on from l2;
            resolved 10 18:00                                             6h at l3: late (4h)
    T3      l1→billing 11 09:00 (08:30), resolved 11 10:00                 1h: within 2h
    T4      l1→billing 11 15:00 (11:00), resolved 11 18:00                 3h: late
    T5      l1→l2 vip 12 10:00 (09:00), never resolved                     open, late
    T6      l1→l3 legal 13 10:00 (10:00), resolved 13 12:00                2h: within 4h
    T7      l1→l2 vip 15 22:00 (21:00), never resolved                     open, 2h old: in time
    T8      l1→l2 vip 14 10:00 (no creation time), resolved 20 March       open at the end, late
    T9      l1→billing 10 09:00 (08:00); billing→l3 vip 10 13:00;          moved on from billing;
            resolved 10 15:00                                             2h at l3: within
    previous week: P1 l1→l2 vip 02 10:00, l2→l3 vip 02 20:00; P2 l1→l2 03 10:00;
                   P3 l1→l3 legal 05 10:00; P4 l1→billing 08 23:00
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from html_checks import assert_valid_page

from escbridge.cli.report import configure_report_parser, parse_since, run_report
from escbridge.matrix import Matrix, parse_matrix
from escbridge.reports import (
    CHARTS_NEED_MATPLOTLIB,
    WITHIN_TARGET_MIN_RESOLVED,
    Applied,
    EscalationRow,
    Report,
    Window,
    build_report,
    human,
    reason_key,
    render_csv,
    render_html,
    render_json,
    render_text,
)
from escbridge.reports.causes import role_of, rule_leaves
from escbridge.store import Store, escalation_counts
from escbridge.store.reports import load_history
from escbridge.store.schema import escalations, ticket_state

H = timedelta(hours=1)
UNTIL = datetime(2026, 3, 16, tzinfo=UTC)
WEEK = Window(UNTIL - timedelta(days=7), UNTIL)

MATRIX_YAML = """\
version: 1
name: Test support
defaults: {time: calendar}
levels:
  - {id: l1, name: Frontline, groups: {zendesk: Support, freshdesk: Frontline}, resolution: 1d}
  - {id: l2, name: Senior, groups: {zendesk: Senior Support, freshdesk: Team Leads}, resolution: 8h}
  - {id: l3, name: Manager, groups: {zendesk: Managers, freshdesk: Managers}, resolution: 4h}
teams:
  billing:
    {name: Billing, groups: {zendesk: Billing, freshdesk: Billing}, level: l2, resolution: 2h}
rules:
  - {id: vip, kind: hierarchical, when: {all: [{tags: [vip]}, {idle: {over: 2h}}]}, to: next}
  - {id: legal, kind: hierarchical, when: {keywords: [lawyer]}, to: l3}
  - {id: billing, kind: functional, when: {tags: [billing]}, to: billing}
  - {id: never, kind: hierarchical, when: {tags: [never]}, to: l2}
"""

REASONS = {
    "vip": (
        "tags [vip, x] have any of [vip]",
        "time since the ticket was last updated is {d} of calendar time, over 2h",
    ),
    "legal": ('"lawyer" appears in the latest comment',),
    "billing": ("tags [billing] have any of [billing]",),
}


def at(day: int, hour: float) -> datetime:
    return datetime(2026, 3, day, tzinfo=UTC) + hour * H


def row(
    ticket: str,
    from_level: str,
    to: str,
    rule: str,
    decided: datetime,
    created: datetime | None,
    resolved: datetime | None = None,
    instance: str = "support-eu",
    channel: str = "email",
) -> EscalationRow:
    kind = "functional" if rule == "billing" else "hierarchical"
    reasons = tuple(r.format(d=f"{decided.hour}h {decided.day}m") for r in REASONS[rule])
    return EscalationRow(
        instance=instance,
        ticket_id=ticket,
        from_level=from_level,
        to_level=to,
        rule_id=rule,
        kind=kind,
        decided_at=decided,
        reasons=reasons,
        ticket_created_at=created,
        helpdesk={"support-eu": "zendesk", "support-us": "freshdesk"}[instance],
        channel=channel,
        resolved_at=resolved,
    )


def history() -> list[EscalationRow]:
    t2_done, t9_done = at(10, 18), at(10, 15)
    return [
        # previous week
        row("P1", "l1", "l2", "vip", at(2, 10), at(2, 9)),
        row("P1", "l2", "l3", "vip", at(2, 20), at(2, 9)),
        row("P2", "l1", "l2", "vip", at(3, 10), at(3, 9)),
        row("P3", "l1", "l3", "legal", at(5, 10), at(5, 9)),
        row("P4", "l1", "billing", "billing", at(8, 23), at(8, 22)),
        # this week
        row("T1", "l1", "l2", "vip", at(9, 10), at(9, 8), at(9, 14)),
        row("T2", "l1", "l2", "vip", at(9, 12), at(9, 9), t2_done, channel="chat"),
        row("T2", "l2", "l3", "legal", at(10, 12), at(9, 9), t2_done, channel="chat"),
        row("T3", "l1", "billing", "billing", at(11, 9), at(11, 8.5), at(11, 10), "support-us"),
        row("T4", "l1", "billing", "billing", at(11, 15), at(11, 11), at(11, 18), "support-us"),
        row("T5", "l1", "l2", "vip", at(12, 10), at(12, 9), channel="phone"),
        row("T6", "l1", "l3", "legal", at(13, 10), at(13, 10), at(13, 12)),
        row("T7", "l1", "l2", "vip", at(15, 22), at(15, 21), channel="web"),
        row("T8", "l1", "l2", "vip", at(14, 10), None, at(20, 9)),
        row("T9", "l1", "billing", "billing", at(10, 9), at(10, 8), t9_done),
        row("T9", "billing", "l3", "vip", at(10, 13), at(10, 8), t9_done),
        # outside both weeks: ignored
        row("X1", "l1", "l2", "vip", at(1, 10), at(1, 9)),
        row("X2", "l1", "l2", "vip", at(16, 0), at(15, 9)),
    ]


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return parse_matrix(MATRIX_YAML, "matrix.yaml")


@pytest.fixture(scope="module")
def report(matrix: Matrix) -> Report:
    return build_report(history(), WEEK, matrix=matrix, generated_at=UNTIL)


def shares(report: Report, name: str) -> list[tuple[str | None, int, float, int]]:
    return [
        (s.key, s.count, round(s.share * 100, 1), s.previous) for s in report.breakdown(name).items
    ]


# --- the figures ------------------------------------------------------------------------------


class TestTotals:
    def test_escalations_and_tickets_against_the_previous_week(self, report: Report) -> None:
        assert (report.escalations.count, report.escalations.previous) == (11, 5)
        assert report.escalations.delta == 6
        assert report.escalations.ratio == pytest.approx(1.2)
        assert (report.tickets.count, report.tickets.previous) == (9, 4)
        assert report.tickets.ratio == pytest.approx(1.25)

    def test_time_to_escalation_over_every_escalation_that_knows_its_ticket_age(
        self, report: Report
    ) -> None:
        # 0, 30m, 1h, 1h, 1h, 2h, 3h, 4h, 5h, 27h (T8 has no creation time)
        d = report.time_to_escalate
        assert (d.n, d.median, d.p90) == (10, 1.5 * H, 5 * H)

    def test_the_share_resolved_within_target(self, report: Report) -> None:
        assert report.within_target == (4, 6)
        assert not report.within_target_headline  # 6 resolutions: too few to lead with


def many_resolved(n: int) -> list[EscalationRow]:
    """``n`` tickets escalated to l2 and resolved 2h later (within its 8h), one an hour."""
    return [
        row(f"R{i}", "l1", "l2", "vip", at(9, 1 + i * 0.25), at(9, 0), at(9, 3 + i * 0.25))
        for i in range(n)
    ]


class TestWithinTargetNeedsItsN:
    def test_below_the_minimum_it_is_no_key_figure_and_says_its_n(self, matrix: Matrix) -> None:
        report = build_report(many_resolved(2), WEEK, matrix=matrix, generated_at=UNTIL)
        page = assert_valid_page(render_html(report))
        kpis = render_html(report).split('<section class="kpis"')[1].split("</section>")[0]
        assert "within target" not in kpis
        assert (
            "Resolved within target: 100.0% (2 of 2 resolved); too few to judge (fewer than 20 "
            "resolved: one ticket moves it by 50.0%)."
        ) in page.visible_text
        assert json.loads(render_json(report))["within_target"]["headline"] is False

    def test_from_the_minimum_on_it_is_a_key_figure_with_its_n(self, matrix: Matrix) -> None:
        report = build_report(many_resolved(20), WEEK, matrix=matrix, generated_at=UNTIL)
        assert report.within_target == (20, 20) and report.within_target_headline
        text = assert_valid_page(render_html(report)).visible_text
        assert "Resolved within target 100.0% 20 of 20 resolved" in text  # the key figure
        assert "Resolved within target: 100.0% (20 of 20 resolved)." in text
        assert "too few" not in text and "too few" not in render_text(report)


class TestBreakdowns:
    def test_by_destination_in_ladder_order(self, report: Report) -> None:
        assert shares(report, "level") == [
            ("l1", 0, 0.0, 0),
            ("l2", 5, 45.5, 2),
            ("l3", 3, 27.3, 2),
            ("billing", 3, 27.3, 1),
        ]
        level = report.breakdown("level")
        assert [s.label for s in level.items] == [
            "L1 · Frontline",
            "L2 · Senior",
            "L3 · Manager",
            "team · Billing",
        ]
        l2 = level.items[1].change
        assert (l2.delta, l2.ratio) == (3, 1.5)

    def test_by_rule_with_rules_that_never_fired_last(self, report: Report) -> None:
        assert shares(report, "rule") == [
            ("vip", 6, 54.5, 3),
            ("billing", 3, 27.3, 1),
            ("legal", 2, 18.2, 1),
            ("never", 0, 0.0, 0),
        ]

    def test_by_kind(self, report: Report) -> None:
        assert shares(report, "kind") == [
            ("hierarchical", 8, 72.7, 4),
            ("functional", 3, 27.3, 1),
        ]

    def test_by_helpdesk_with_its_type(self, report: Report) -> None:
        assert shares(report, "helpdesk") == [
            ("support-eu", 9, 81.8, 5),
            ("support-us", 2, 18.2, 0),
        ]
        labels = [s.label for s in report.breakdown("helpdesk").items]
        assert labels == ["support-eu (zendesk)", "support-us (freshdesk)"]
        assert report.breakdown("helpdesk").items[1].change.ratio is None  # new: nothing before

    def test_an_instance_named_after_its_helpdesk_is_named_once(self, matrix: Matrix) -> None:
        rows = [dataclasses.replace(r, instance="zendesk", helpdesk="zendesk") for r in history()]
        report = build_report(rows, WEEK, matrix=matrix, generated_at=UNTIL)
        assert [s.label for s in report.breakdown("helpdesk").items] == ["zendesk"]
        text = assert_valid_page(render_html(report)).visible_text
        assert "zendesk 11" in text and "(zendesk)" not in text

    def test_by_channel(self, report: Report) -> None:
        assert shares(report, "channel") == [
            ("email", 7, 63.6, 5),
            ("chat", 2, 18.2, 0),
            ("phone", 1, 9.1, 0),
            ("web", 1, 9.1, 0),
        ]

    def test_by_source_group_falls_back_to_the_group_of_the_level_left(
        self, report: Report
    ) -> None:
        # No group recorded: l1 is Support on zendesk, Frontline on freshdesk; T2 left l2,
        # T9 left billing.
        assert shares(report, "source_group") == [
            ("Support", 7, 63.6, 4),
            ("Frontline", 2, 18.2, 0),
            ("Senior Support", 1, 9.1, 1),
            ("Billing", 1, 9.1, 0),
        ]


class TestFilledIn:
    def test_helpdesk_and_source_group_follow_from_the_groups_assigned(
        self, matrix: Matrix
    ) -> None:
        # What an older store hands over: no helpdesk type, no source group, but the group set.
        rows = [
            dataclasses.replace(row("A", "l1", "l2", "vip", at(9, 10), None), helpdesk=None,
                                to_group="Team Leads"),
            dataclasses.replace(row("A", "l2", "l3", "vip", at(9, 20), None), helpdesk=None,
                                to_group="Managers"),
            dataclasses.replace(row("B", "l1", "billing", "billing", at(10, 9), None),
                                helpdesk=None, to_group="Billing"),
        ]  # fmt: skip
        report = build_report(rows, WEEK, matrix=matrix)
        # "Team Leads" is freshdesk's alone; "Managers" and "Billing" are shared, so the
        # instance's other escalations decide.
        assert [s.label for s in report.breakdown("helpdesk").items] == ["support-eu (freshdesk)"]
        assert shares(report, "source_group") == [
            ("Frontline", 2, 66.7, 0),  # l1 on freshdesk, for A and B
            ("Team Leads", 1, 33.3, 0),  # A's second escalation left the group its first set
        ]
        assert not any("helpdesk type" in n for n in report.notes)


class TestTimesPerLevel:
    def test_senior_level(self, report: Report) -> None:
        l2 = report.timing("l2")
        assert (l2.escalations, l2.expected) == (5, 8 * H)
        assert (l2.to_escalate.n, l2.to_escalate.median, l2.to_escalate.p90) == (4, 1.5 * H, 3 * H)
        assert (l2.resolved, l2.within_target, l2.within_share) == (1, 1, 1.0)
        assert (l2.to_resolve.median, l2.moved_on) == (4 * H, 1)
        assert (l2.open, l2.open_past_target) == (3, 2)  # T5 and T8 late, T7 still in time

    def test_manager_level(self, report: Report) -> None:
        l3 = report.timing("l3")
        assert (l3.escalations, l3.resolved, l3.within_target) == (3, 3, 2)
        assert l3.within_share == pytest.approx(2 / 3)
        assert (l3.to_resolve.median, l3.to_resolve.p90) == (2 * H, 6 * H)
        assert (l3.to_escalate.median, l3.to_escalate.p90) == (5 * H, 27 * H)

    def test_billing_team(self, report: Report) -> None:
        billing = report.timing("billing")
        assert (billing.escalations, billing.resolved, billing.within_target) == (3, 2, 1)
        assert billing.within_share == 0.5
        assert (billing.moved_on, billing.open) == (1, 0)

    def test_a_level_nobody_reached(self, report: Report) -> None:
        l1 = report.timing("l1")
        assert (l1.escalations, l1.resolved, l1.within_share, l1.to_escalate.median) == (
            0,
            0,
            None,
            None,
        )

    def test_business_time_levels_measure_resolution_in_business_time(self) -> None:
        office = MATRIX_YAML.replace(
            "defaults: {time: calendar}",
            "defaults: {time: business}\ncalendars:\n  office:\n    timezone: UTC\n"
            '    hours: {mon-fri: "09:00-17:00"}',
        )
        m = parse_matrix(office, "matrix.yaml")
        # Friday 16:00 to Monday 11:00 is 67 hours of clock but 3 business hours: within 8h.
        rows = [row("B1", "l1", "l2", "vip", at(13, 16), at(13, 15), at(16, 11))]
        late = build_report(rows, Window(at(9, 0), at(17, 0)), matrix=m).timing("l2")
        assert (late.resolved, late.within_target, late.to_resolve.median) == (1, 1, 3 * H)


class TestTrend:
    def test_per_day_with_the_same_day_of_the_previous_week(self, report: Report) -> None:
        assert report.trend.unit == "day"
        assert [(p.start.day, p.count, p.previous) for p in report.trend.points] == [
            (9, 2, 2),
            (10, 3, 1),
            (11, 2, 0),
            (12, 1, 1),
            (13, 1, 0),
            (14, 1, 0),
            (15, 1, 1),
        ]
        assert sum(p.count for p in report.trend.points) == report.escalations.count

    def test_per_week_for_longer_periods(self, matrix: Matrix) -> None:
        window = Window(UNTIL - timedelta(days=14), UNTIL)
        weekly = build_report(history(), window, matrix=matrix)
        assert weekly.trend.unit == "day"  # a fortnight still reads best per day
        weekly = build_report(history(), window, matrix=matrix, unit="week")
        assert [(p.label, p.count, p.previous) for p in weekly.trend.points] == [
            ("week of 2026-03-02", 5, 0),
            ("week of 2026-03-09", 11, 1),  # X1 (1 March) was two weeks before the 9th
        ]

    def test_days_follow_the_report_time_zone(self, matrix: Matrix) -> None:
        from zoneinfo import ZoneInfo

        # In Berlin (UTC+1) the week runs from Monday 01:00 to the next Monday 01:00: eight
        # local days, the last one holding only that first hour.
        berlin = build_report(history(), WEEK, matrix=matrix, tz=ZoneInfo("Europe/Berlin"))
        days = [(p.start.day, p.count, p.previous) for p in berlin.trend.points]
        assert days == [
            (9, 2, 2),
            (10, 3, 1),
            (11, 2, 0),
            (12, 1, 1),
            (13, 1, 0),
            (14, 1, 0),
            (15, 1, 0),
            (16, 0, 1),  # P4 at 23:00 UTC on 8 March is Monday 00:00 in Berlin
        ]


class TestRepeats:
    def test_tickets_escalated_more_than_once(self, report: Report) -> None:
        r = report.repeats
        assert (r.tickets, r.repeated, r.escalations_on_repeated) == (9, 2, 4)
        assert r.share == pytest.approx(2 / 9)
        assert r.distribution == ((1, 7), (2, 2))
        assert r.previous_repeated == 1
        # Most escalations first; among equals, the most recently escalated.
        assert [(t.ticket_id, t.count, t.path) for t in r.top] == [
            ("T9", 2, ("l1", "billing", "l3")),
            ("T2", 2, ("l1", "l2", "l3")),
        ]


class TestReasons:
    def test_like_reasons_count_together_without_the_tickets_own_values(
        self, report: Report
    ) -> None:
        """The vip rule is ``tags: [vip]`` and ``idle over 2h``: the idle time is why its
        tickets went up, the tag only which tickets it looks at."""
        got = [(r.text, r.count, round(r.share * 100, 1), r.rules, r.role) for r in report.reasons]
        assert got == [
            (
                "time since the ticket was last updated over 2h (calendar time)",
                6,
                54.5,
                ("vip",),
                "trigger",
            ),
            ("tags have any of [billing]", 3, 27.3, ("billing",), "attribute"),
            ('"lawyer" appears in the latest comment', 2, 18.2, ("legal",), "trigger"),
        ]
        assert report.reasons_by_rule
        assert [(s.rule_id, s.escalations, s.conditions) for s in report.scopes] == [
            ("vip", 6, (Applied("tags have any of [vip]", 6),))
        ]

    def test_without_the_matrix_every_recorded_condition_counts(self) -> None:
        report = build_report(history(), WEEK, generated_at=UNTIL)
        assert [(r.text, r.count, r.role) for r in report.reasons] == [
            ("tags have any of [vip]", 6, None),
            ("time since the ticket was last updated over 2h (calendar time)", 6, None),
            ("tags have any of [billing]", 3, None),
            ('"lawyer" appears in the latest comment', 2, None),
        ]
        assert (report.reasons_by_rule, report.scopes) == (False, ())
        assert "Reasons are the conditions recorded with each escalation" in render_text(report)
        data = json.loads(render_json(report))
        assert (data["reasons_by_rule"], data["applied_to"]) == (False, [])

    def test_a_condition_true_of_almost_every_escalation_is_listed_last(self) -> None:
        """Without the matrix that says what a rule is scoped to: a rule's ``channel: [chat,
        email, phone, web]`` is in the reasons of that rule only, but the recorded channels
        show it held for every escalation: it tells none apart."""
        broad = 'channel is one of ["chat", "email", "phone", "web"] ("email")'
        rows = [
            dataclasses.replace(r, reasons=(*r.reasons, broad)) if r.rule_id == "vip" else r
            for r in history()
        ]
        report = build_report(rows, WEEK, generated_at=UNTIL)
        texts = [(r.text, r.count, r.background) for r in report.reasons]
        assert texts == [
            ("tags have any of [vip]", 6, False),
            ("time since the ticket was last updated over 2h (calendar time)", 6, False),
            ("tags have any of [billing]", 3, False),
            ('"lawyer" appears in the latest comment', 2, False),
            ('channel is one of ["chat", "email", "phone", "web"]', 6, True),
        ]
        assert report.reasons[-1].holds == 1.0 and report.reasons[0].holds == pytest.approx(6 / 11)
        data = json.loads(render_json(report))["reasons"][-1]
        assert (data["holds_for"], data["background"]) == (1.0, True)
        assert "(background)" in render_text(report)
        html = render_html(report)
        assert '<tr class="background">' in html
        text = assert_valid_page(html).visible_text
        assert "Listed last: conditions that held for at least 90% of all escalations" in text

    @pytest.mark.parametrize(
        ("condition", "ticket", "holds"),
        [
            ('channel is one of ["chat", "email", "phone", "web"]', "T1", 1.0),
            ('channel is not one of ["phone"]', "T1", 10 / 11),
            ('channel is "email"', "T1", 7 / 11),
            ('channel is not "email"', "T2", 4 / 11),  # T2 is a chat
        ],
    )
    def test_a_channel_condition_is_judged_by_every_escalations_recorded_channel(
        self, matrix: Matrix, condition: str, ticket: str, holds: float
    ) -> None:
        rows = history()
        first = next(i for i, r in enumerate(rows) if r.ticket_id == ticket)
        rows[first] = dataclasses.replace(rows[first], reasons=(f"{condition} (x)",))
        report = build_report(rows, WEEK, matrix=matrix, generated_at=UNTIL)
        reason = next(r for r in report.reasons if r.text == condition)
        assert reason.count == 1 and reason.holds == pytest.approx(holds)
        assert reason.background is (holds >= 0.9)

    def test_a_channel_condition_that_tells_tickets_apart_is_not_background(
        self, matrix: Matrix
    ) -> None:
        narrow = 'channel is "chat" ("chat")'
        rows = [
            dataclasses.replace(r, reasons=(*r.reasons, narrow)) if r.channel == "chat" else r
            for r in history()
        ]
        report = build_report(rows, WEEK, matrix=matrix, generated_at=UNTIL)
        chat = next(r for r in report.reasons if r.text == 'channel is "chat"')
        assert (chat.count, chat.background) == (2, False)

    @pytest.mark.parametrize(
        ("reason", "key"),
        [
            (
                'not: tags ["x"] do not have any of ["refund_approved"]',
                'not: tags do not have any of ["refund_approved"]',
            ),
            ("priority is at least high (urgent)", "priority is at least high"),
            (
                "custom_fields.refund_amount is above 500 (750)",
                "custom_fields.refund_amount is above 500",
            ),
            (
                "not: tags [a] have any of [refund_approved]",
                "not: tags have any of [refund_approved]",
            ),
            (
                "time at the current level beyond its expected resolution is 1h 5m of business time"
                " (office), over 0m",
                "the current level's expected resolution time has run out",
            ),
            (
                "time left until the ticket is due is 40m of calendar time, under 1h",
                "time left until the ticket is due under 1h (calendar time)",
            ),
            ('"manager" appears in the description', '"manager" appears in the description'),
        ],
    )
    def test_reason_keys(self, reason: str, key: str) -> None:
        assert reason_key(reason) == key


CAUSES_YAML = """\
version: 1
name: Causes
defaults: {time: calendar}
levels:
  - {id: l1, name: Frontline, groups: {zendesk: Support}, resolution: 1d}
  - {id: l2, name: Senior, groups: {zendesk: Senior}, resolution: 8h}
rules:
  - {id: supervisor, kind: hierarchical, when: {keywords: [supervisor]}, to: l2}
  - id: open-idle
    kind: hierarchical
    when: {all: [{status: [new, open]}, {idle: {over: 2h}}]}
    to: l2
  - {id: policy, kind: hierarchical, when: {tags: [policy_exception]}, to: l2}
  - {id: outage, kind: hierarchical, when: {all: [{tags: [outage]}, {status: [new, open]}]}, to: l2}
  - id: refund
    kind: hierarchical
    when:
      all:
        - {field: custom_fields.refund_amount, gt: 500}
        - not: {tags: [refund_approved]}
    to: l2
  - id: vip-waiting
    kind: hierarchical
    when:
      all:
        - any: [{tags: [vip]}, {organization: [Globex]}]
        - priority: {at_least: high}
        - since_customer_reply: {over: 1h}
    to: l2
"""


@pytest.fixture(scope="module")
def causes() -> Report:
    """Nine tickets, each escalated by the engine under CAUSES_YAML with its own reasons."""
    from escbridge.model import Person, Priority, Status, Ticket
    from escbridge.policy import Engine

    matrix = parse_matrix(CAUSES_YAML, "causes.yaml")
    engine = Engine(matrix, {"support-eu": "zendesk"})
    now = at(12, 12)

    def ticket(id: str, **facts: Any) -> Ticket:
        base = {"created_at": at(12, 8), "updated_at": now, "status": Status.OPEN}
        return Ticket(id=id, instance="support-eu", **{**base, **facts})

    vip = {"priority": Priority.HIGH, "last_customer_reply_at": now - 2 * H}
    tickets = [
        ticket("S1", latest_comment="May I speak to your supervisor?"),
        *(ticket(f"I{i}", updated_at=now - 3 * H) for i in range(3)),
        ticket("P1", tags=["policy_exception"], status=Status.PENDING),
        ticket("O1", tags=["outage"], status=Status.NEW),
        ticket("R1", custom_fields={"refund_amount": 750}, tags=["refund"]),
        ticket("V1", tags=["vip"], **vip),
        ticket("V2", organization=Person(name="Globex"), **vip),
    ]
    rows = []
    for t in tickets:
        decision = engine.decide(t, [], now)
        assert decision.escalate and decision.rule_id, decision.summary
        rows.append(
            EscalationRow(
                instance=t.instance,
                ticket_id=t.id,
                from_level="l1",
                to_level="l2",
                rule_id=decision.rule_id,
                kind=decision.kind,
                decided_at=now,
                reasons=decision.reasons,
                ticket_created_at=t.created_at,
            )
        )
    return build_report(rows, WEEK, matrix=matrix, generated_at=UNTIL)


class TestReasonsAsTheEngineRecordsThem:
    """Reasons written by the engine itself (``explain``), mapped back to each rule's
    conditions: what made each ticket go up leads, what a rule applies to is listed apart."""

    def test_the_top_reasons_are_what_made_tickets_go_up(self, causes: Report) -> None:
        assert [(r.text, r.count, r.rules, r.role) for r in causes.reasons] == [
            (
                "time since the ticket was last updated over 2h (calendar time)",
                3,
                ("open-idle",),
                "trigger",
            ),
            (
                "time since the customer's last reply over 1h (calendar time)",
                2,
                ("vip-waiting",),
                "trigger",
            ),
            ('"supervisor" appears in the latest comment', 1, ("supervisor",), "trigger"),
            ("custom_fields.refund_amount is above 500", 1, ("refund",), "trigger"),
            # A rule without a time, text or count condition is fired by its tags.
            ('tags have any of ["outage"]', 1, ("outage",), "attribute"),
            ('tags have any of ["policy_exception"]', 1, ("policy",), "attribute"),
        ]
        assert not any(r.background for r in causes.reasons)

    def test_what_each_rule_applies_to_is_listed_apart(self, causes: Report) -> None:
        got = [(s.rule_id, s.escalations, s.conditions) for s in causes.scopes]
        assert got == [
            ("open-idle", 3, (Applied('status is one of ["new", "open"]', 3),)),
            (
                "vip-waiting",
                2,
                (
                    Applied("priority is at least high", 2),
                    Applied('organization.name is "globex"', 1),
                    Applied('tags have any of ["vip"]', 1),
                ),
            ),
            ("outage", 1, (Applied('status is one of ["new", "open"]', 1),)),
            ("refund", 1, (Applied('not: tags do not have any of ["refund_approved"]', 1),)),
        ]

    def test_every_form_says_the_same(self, causes: Report) -> None:
        text = render_text(causes)
        top = text.split("Top reasons\n", 1)[1]
        assert top.index("time since the ticket was last updated") < top.index("Applied to")
        assert "Reasons are what fired each rule" in top
        assert re.search(
            r'^vip-waiting +2 +priority is at least high; organization.name is "globex" \(1 of 2\);'
            r' tags have any of \["vip"\] \(1 of 2\)$',
            top,
            flags=re.M,
        ), top

        data = json.loads(render_json(causes))
        assert data["reasons_by_rule"] is True
        assert data["reasons_method"].startswith("Reasons are what fired each rule")
        assert [(r["reason"], r["role"]) for r in data["reasons"]][:2] == [
            ("time since the ticket was last updated over 2h (calendar time)", "trigger"),
            ("time since the customer's last reply over 1h (calendar time)", "trigger"),
        ]
        assert data["applied_to"][0] == {
            "rule": "open-idle",
            "name": "open-idle",
            "escalations": 3,
            "conditions": [{"condition": 'status is one of ["new", "open"]', "count": 3}],
        }

        lines = list(csv.reader(io.StringIO(render_csv(causes))))
        assert [
            "applied_to",
            "open-idle",
            'status is one of ["new", "open"]',
            "count",
            "3",
        ] in lines
        assert ["reason", "1", data["reasons"][0]["reason"], "role", "trigger"] in lines
        assert not any(line[0] == "reason" and "status is" in line[2] for line in lines)

        page = assert_valid_page(render_html(causes)).visible_text
        assert "Applied to" in page and "Reasons are what fired each rule" in page
        reasons = page.split("Top reasons", 1)[1].split("Applied to", 1)[0]
        assert "status is one of" not in reasons and "priority is at least high" not in reasons


def roles(when: str) -> list[tuple[str, bool, str]]:
    """(leaf kind, under a not, role) of each leaf of a one-rule matrix's condition."""
    one = f"{{id: r, kind: hierarchical, when: {when}, to: l2}}"
    yaml = MATRIX_YAML.split("rules:")[0] + f"rules:\n  - {one}\n"
    [rule] = parse_matrix(yaml, "m.yaml").rules
    return [
        (getattr(x.condition, "field", None) or getattr(x.condition, "measure", None) or "tags",
         x.negated, x.role)
        for x in rule_leaves(rule.condition)
    ]  # fmt: skip


class TestRolesOfConditions:
    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            # An alternative to a time condition fired the rule as much as the time did.
            (
                "{all: [{status: [open]}, {any: [{idle: {over: 2h}}, {priority: urgent}]}]}",
                [("status", False, "scope"), ("idle", False, "trigger"),
                 ("priority", False, "attribute")],
            ),
            # No time, text or count: what the ticket is beats where it is in the workflow.
            (
                "{all: [{channel: [phone]}, {tags: [vip]}]}",
                [("channel", False, "scope"), ("tags", False, "attribute")],
            ),
            ("{channel: [phone]}", [("channel", False, "attribute")]),
            (
                "{all: [{reopens: 3}, {not: {tags: [spam]}}]}",
                [("reopen_count", False, "trigger"), ("tags", True, "scope")],
            ),
        ],
    )  # fmt: skip
    def test_a_leaf_is_scope_beside_a_stronger_condition(
        self, when: str, expected: list[tuple[str, bool, str]]
    ) -> None:
        assert roles(when) == expected

    def test_a_reason_two_leaves_of_different_roles_could_have_written_is_not_claimed(
        self, matrix: Matrix
    ) -> None:
        yaml = MATRIX_YAML.split("rules:")[0] + (
            "rules:\n  - {id: r, kind: hierarchical, to: l2, when: {any: [{priority: urgent},"
            " {all: [{priority: {at_least: high}}, {idle: {over: 2h}}]}]}}\n"
        )
        [rule] = parse_matrix(yaml, "m.yaml").rules
        leaves = rule_leaves(rule.condition)
        assert role_of(leaves, "priority is urgent (urgent)") is None
        idle = "time since the ticket was last updated is 3h of calendar time, over 2h"
        assert role_of(leaves, idle) == "trigger"
        assert role_of(leaves, "not: priority is urgent (urgent)") is None  # no negated leaf

    def test_reasons_of_a_rule_the_matrix_no_longer_has_count_as_recorded(
        self, matrix: Matrix
    ) -> None:
        rows = [
            dataclasses.replace(r, rule_id="retired") if r.rule_id == "legal" else r
            for r in history()
        ]
        report = build_report(rows, WEEK, matrix=matrix, generated_at=UNTIL)
        lawyer = next(r for r in report.reasons if "lawyer" in r.text)
        assert (lawyer.count, lawyer.rules, lawyer.role) == (2, ("retired",), None)
        assert report.reasons_by_rule  # the others were mapped


class TestWithoutMatrixOrOptionalFacts:
    def test_ids_stand_in_for_names_and_the_report_says_what_is_missing(self) -> None:
        bare = [dataclasses.replace(r, helpdesk=None, channel=None) for r in history()]
        report = build_report(bare, WEEK, recorded=(), generated_at=UNTIL)
        assert [s.label for s in report.breakdown("level").items] == ["l2", "l3", "billing"]
        assert report.timing("l2").expected is None and report.within_target == (0, 0)
        assert not report.breakdown("channel").recorded
        notes = " ".join(report.notes)
        for missing in ("channel", "resolved", "group a ticket was in", "No matrix"):
            assert missing in notes
        assert "helpdesk type of support-eu, support-us is unknown" in notes
        assert report.timing("l2").resolution_recorded is False
        assert "time to resolution" in notes and report.timing("l2").within_share is None
        assert "Escalations without a ticket creation time are left out of" in notes

    def test_an_empty_period(self, matrix: Matrix) -> None:
        empty = build_report([], WEEK, matrix=matrix, generated_at=UNTIL)
        assert (empty.escalations.count, empty.repeats.share, empty.reasons) == (0, None, ())
        assert [p.count for p in empty.trend.points] == [0] * 7
        assert "Escalations           0  no change" in render_text(empty)
        page = assert_valid_page(render_html(empty))
        assert page.tags["svg"] == 0
        assert "No escalations in this period or the one before." in page.visible_text


# --- the renderers -----------------------------------------------------------------------------


class TestRenderers:
    def test_json_carries_every_figure(self, report: Report) -> None:
        data = json.loads(render_json(report))
        assert data["escalations"] == {"count": 11, "previous": 5, "change": 6, "change_ratio": 1.2}
        assert data["within_target"] == {
            "within": 4,
            "resolved": 6,
            "share": 0.666667,
            "headline": False,  # 6 resolutions: too few to lead the page
        }
        assert data["breakdowns"]["rule"]["items"][0] == {
            "key": "vip",
            "label": "vip",
            "count": 6,
            "share": 0.545455,
            "previous": 3,
            "change": 3,
            "change_ratio": 1.0,
        }
        l3 = next(lv for lv in data["levels"] if lv["id"] == "l3")
        assert l3["expected_resolution_seconds"] == 4 * 3600
        assert l3["time_to_resolution"] == {
            "n": 3,
            "median_seconds": 7200.0,
            "p90_seconds": 21600.0,
        }
        assert data["trend"]["points"][1] == {"start": "2026-03-10", "count": 3, "previous": 1}
        assert data["repeats"]["distribution"] == {"1": 7, "2": 2}
        assert data["period"]["previous_start"] == "2026-03-02T00:00:00+00:00"

    def test_csv_is_one_figure_per_line(self, report: Report) -> None:
        lines = list(csv.reader(io.StringIO(render_csv(report))))
        assert lines[0] == ["section", "key", "label", "metric", "value"]
        figures = {(s, k, m): v for s, k, _, m, v in lines[1:]}
        assert figures["total", "escalations", "count"] == "11"
        assert figures["level", "l2", "share"] == "0.454545"
        assert figures["level_timing", "billing", "within_target_share"] == "0.5"
        assert figures["trend_day", "2026-03-10", "previous"] == "1"
        assert figures["repeats", "repeated", "count"] == "2"
        assert all(len(line) == 5 for line in lines)

    def test_text_for_a_terminal(self, report: Report) -> None:
        text = render_text(report)
        assert "Escalations           11  +6 (+120.0%)" in text
        assert "Resolved within target  66.7% (4 of 6 resolved); too few to judge" in text
        assert "Repeat escalations    2 of 9 tickets (22.2%)" in text
        assert "L3 · Manager" in text and "66.7%" in text

    @pytest.mark.parametrize(
        ("delta", "text"),
        [
            (timedelta(0), "0m"),
            (timedelta(seconds=20), "<1m"),
            (90 * timedelta(minutes=1), "1h 30m"),
            (timedelta(days=1, hours=4, minutes=30), "1d 4h"),
            (None, "—"),
        ],
    )
    def test_durations_read_to_the_minute(self, delta: timedelta | None, text: str) -> None:
        assert human(delta) == text


@pytest.fixture(scope="module")
def html(report: Report) -> str:
    return render_html(report)


class TestHtml:
    def test_a_valid_self_contained_page(self, html: str) -> None:
        page = assert_valid_page(html)
        assert page.title == "Escalation report — Test support"
        assert page.tags["svg"] == 4  # trend, destinations, rules, targets
        assert html.count('<div class="table-wrap">') == page.tags["table"]
        css = "\n".join(page.styles)
        assert re.search(r"figure svg \{[^}]*width: 100%[^}]*height: auto", css)  # charts shrink
        assert "overflow-x: auto" in css  # tables scroll sideways on a phone

    def test_charts_take_the_page_width_and_scroll_below_a_legible_width(self, html: str) -> None:
        css = "\n".join(assert_valid_page(html).styles)
        rule = re.search(r"figure svg \{([^}]*)\}", css)
        assert rule is not None
        assert "width: 100%" in rule[1] and "max-width" not in rule[1]  # no third of the page
        assert "min-width: 40rem" in rule[1]  # text stays legible: below that it scrolls
        assert html.count('<div class="chart"><svg') == 4
        assert re.search(r"\.table-wrap, \.chart \{[^}]*overflow-x: auto", css)
        widths = [float(w) for w in re.findall(r'<svg[^>]*\bwidth="([\d.]+)pt"', html)]
        assert min(widths) > 600  # drawn near the page's width (pt), not at 5.6 inches

    def test_a_cut_table_shows_that_it_scrolls(self, html: str) -> None:
        css = "\n".join(assert_valid_page(html).styles)
        wrap = re.search(r"\.table-wrap, \.chart \{([^}]*)\}", css)
        assert wrap is not None
        # Covers that travel with the content, shadows that stay with the box: the hidden edge
        # casts a shadow, and only while something is hidden there.
        assert wrap[1].count("no-repeat local") == 2 and wrap[1].count("no-repeat scroll") == 2
        assert ".scroll-hint { display: none; }" in css
        phone = css.split("@media (max-width: 40rem)")[1].split("@media")[0]
        assert ".scroll-hint { display: block;" in phone
        assert "Cut off? Scroll the table sideways." in html

    def test_charts_are_inline_svg_that_scale(self, html: str) -> None:
        svgs = re.findall(r"<svg[^>]*>", html)
        assert all('viewBox="' in s and 'role="img"' in s and "aria-label=" in s for s in svgs)
        assert "font-family: system-ui" in html  # the page's font, no web font
        assert "<metadata>" not in html

    def test_the_figures_are_on_the_page(self, html: str) -> None:
        text = assert_valid_page(html).visible_text
        assert "Escalations 11 +6 (+120.0%) vs previous" in text
        assert "Resolved within target: 66.7% (4 of 6 resolved); too few to judge" in text
        assert "L3 · Manager 3 5h 1d 3h 4h calendar 3 2h 66.7% (2/3) 0 0" in text
        assert "2 of 9 escalated tickets (22.2%) were escalated more than once" in text

    def test_ticket_ids_link_to_the_helpdesk(self, matrix: Matrix) -> None:
        def url(instance: str, ticket_id: str) -> str | None:
            return f"https://acme.zendesk.com/agent/tickets/{ticket_id}"

        report = build_report(history(), WEEK, matrix=matrix, generated_at=UNTIL, ticket_url=url)
        page = assert_valid_page(render_html(report), links=True)
        assert page.links == [
            "https://acme.zendesk.com/agent/tickets/T9",  # the latest escalated first
            "https://acme.zendesk.com/agent/tickets/T2",
        ]
        top = json.loads(render_json(report))["repeats"]["top"]
        assert [t["url"] for t in top] == page.links

    def test_without_a_link_the_id_is_plain_text(self, html: str) -> None:
        assert "<a href" not in html.replace('<a href="#', "")
        assert "support-eu/T2" in assert_valid_page(html).visible_text

    def test_rendering_is_deterministic(self, report: Report, html: str) -> None:
        assert render_html(report) == html

    def test_without_matplotlib_the_page_renders_and_says_how_to_get_the_charts(
        self, report: Report, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
        page = assert_valid_page(render_html(report))
        assert page.tags["svg"] == 0
        assert CHARTS_NEED_MATPLOTLIB in page.visible_text
        assert "pip install 'escbridge[charts]'" in CHARTS_NEED_MATPLOTLIB
        assert "Escalations 11 +6 (+120.0%) vs previous" in page.visible_text
        assert "No escalations in this period" not in page.visible_text

    def test_the_command_and_the_package_import_without_matplotlib(self) -> None:
        code = (
            "import sys, escbridge, escbridge.cli, escbridge.cli.report, escbridge.reports;"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


# --- the store and the command -----------------------------------------------------------------


def seed(url: str, rows: Sequence[EscalationRow]) -> None:
    """Write rows into the store's history table, as the processing path records them."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for r in rows:
            values: dict[str, Any] = {
                "instance": r.instance,
                "ticket_id": r.ticket_id,
                "from_level": r.from_level,
                "to_level": r.to_level,
                "destination_kind": "team" if r.to_level == "billing" else "level",
                "to_group": None,
                "rule_id": r.rule_id,
                "kind": r.kind,
                "actions": {"level": r.to_level},
                "reasons": list(r.reasons),
                "summary": f"escalate {r.from_level} → {r.to_level}",
                "ticket_created_at": r.ticket_created_at,
                "decided_at": r.decided_at,
                "recorded_at": r.decided_at,
                "outcome": "applied",
            }
            if "channel" in escalations.c:
                values["channel"] = r.channel
            if "resolved_at" in escalations.c:
                values["resolved_at"] = r.resolved_at
            connection.execute(sa.insert(escalations).values(**values))
    engine.dispose()


@pytest.fixture
def seeded(store_url: str) -> str:
    seed(store_url, history())
    return store_url


class TestStore:
    def test_the_history_read_from_the_store_gives_the_same_figures(
        self, seeded: str, matrix: Matrix
    ) -> None:
        with Store(seeded) as store:
            loaded = load_history(
                store, WEEK.previous.start, WEEK.end, helpdesks={"support-eu": "zendesk"}
            )
        assert len(loaded.rows) == 16  # X1 and X2 are outside both weeks
        assert loaded.instances == {"support-eu", "support-us"}
        report = build_report(loaded.rows, WEEK, matrix=matrix, recorded=loaded.recorded)
        assert (report.escalations.count, report.escalations.previous) == (11, 5)
        assert shares(report, "rule")[:3] == [
            ("vip", 6, 54.5, 3),
            ("billing", 3, 27.3, 1),
            ("legal", 2, 18.2, 1),
        ]
        assert [(p.count, p.previous) for p in report.trend.points] == [
            (2, 2),
            (3, 1),
            (2, 0),
            (1, 1),
            (1, 0),
            (1, 0),
            (1, 1),
        ]
        assert (report.repeats.repeated, report.repeats.tickets) == (2, 9)
        assert report.time_to_escalate.median == 1.5 * H
        assert report.reasons[0].text == (
            "time since the ticket was last updated over 2h (calendar time)"
        )
        if "resolved_at" not in loaded.recorded:
            assert any("when tickets were resolved" in n for n in report.notes)

    def test_filtering_by_instance(self, seeded: str) -> None:
        with Store(seeded) as store:
            loaded = load_history(store, WEEK.start, WEEK.end, instances=["support-us"])
        assert {(r.ticket_id, r.instance) for r in loaded.rows} == {
            ("T3", "support-us"),
            ("T4", "support-us"),
        }

    def test_escalations_counted_by_instance_and_destination(self, seeded: str) -> None:
        """What /metrics shows as escbridge_escalations_total, read in one query."""
        with Store(seeded) as store:
            counts = escalation_counts(store)
        assert counts == Counter((r.instance, r.to_level) for r in history())
        assert counts["support-us", "billing"] == 2


def test_facts_the_store_records_are_read(store_url: str) -> None:
    """The ticket's channel, source group, helpdesk type and resolution time (revision 0003)
    are reported from the store's own columns."""
    engine = sa.create_engine(store_url)
    t1 = row("T1", "l1", "l2", "vip", at(9, 10), at(9, 8))
    with engine.begin() as connection:
        connection.execute(
            sa.insert(escalations).values(
                instance="support-eu", ticket_id="T1", from_level="l1", to_level="l2",
                destination_kind="level", rule_id="vip", kind="hierarchical", actions={},
                reasons=list(t1.reasons), summary="", ticket_created_at=t1.ticket_created_at,
                decided_at=t1.decided_at, recorded_at=t1.decided_at, outcome="applied",
                channel="chat", from_group="Support EU", helpdesk="zendesk",
            )
        )  # fmt: skip
        connection.execute(
            sa.insert(ticket_state).values(
                instance="support-eu", ticket_id="T1", day_count=1, escalation_count=1,
                updated_at=at(9, 14), resolved_at=at(9, 14),
            )
        )  # fmt: skip
    engine.dispose()
    with Store(store_url) as store:
        loaded = load_history(store, WEEK.start, WEEK.end)
    assert loaded.recorded == {"channel", "source_group", "helpdesk", "resolved_at"}
    [got] = loaded.rows
    assert (got.channel, got.source_group, got.helpdesk, got.resolved_at) == (
        "chat",
        "Support EU",
        "zendesk",
        at(9, 14),
    )


def test_resolution_figures_from_escalations_recorded_and_resolved_by_processing(
    tmp_path: Path, matrix: Matrix
) -> None:
    """An escalation recorded through the store, then the ticket seen solved by processing:
    the report's time to resolution and within-target share are numbers."""
    from escbridge.model import Actions, Channel, Decision, Destination, Status, Ticket
    from escbridge.processing import Processor
    from escbridge.store import Intent, Store, upgrade

    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    decided = at(9, 10)
    solved = at(9, 14)
    ticket = Ticket(
        id="T1", instance="support-eu", created_at=at(9, 0), updated_at=decided,
        group="Support EU", channel=Channel.CHAT, level="l1", tags=frozenset({"vip"}),
    )  # fmt: skip

    class Helpdesk:
        class info:
            name = "zendesk"
            capabilities: frozenset[str] = frozenset()

        def __init__(self) -> None:
            self.ticket = ticket

        def fetch_ticket(self, ticket_id: str) -> Ticket:
            return self.ticket

        def is_own_change(self, _event: object) -> bool:
            return False

    class Engine:
        def decide(self, ticket: Ticket, history: object, now: datetime) -> Decision:
            return Decision(
                ticket_id=ticket.id, instance=ticket.instance, at=now, escalate=False, summary="-"
            )

    helpdesk = Helpdesk()
    with Store(url) as store:
        lock = store.lock_ticket("support-eu", "T1", "test", decided, timedelta(minutes=5))
        assert lock is not None
        decision = Decision(
            ticket_id="T1", instance="support-eu", at=decided, escalate=True, from_level="l1",
            destination=Destination(
                kind="level", id="l2", name="Senior", rank=2, group="Senior Support"
            ),
            rule_id="vip", kind="hierarchical", actions=Actions(level="l2", group="Senior Support"),
            reasons=("tags have any of [vip]",), summary="l1 -> l2",
        )  # fmt: skip
        intent = Intent(decision, ticket.created_at, from_group="Support EU", channel="chat")
        store.write_intent(lock, intent, decided)
        store.record_escalation(lock, intent, outcome="applied", now=decided, helpdesk="zendesk")

        helpdesk.ticket = ticket.model_copy(update={"status": Status.SOLVED, "updated_at": solved})
        processor = Processor(store, Engine(), {"support-eu": helpdesk}, clock=lambda: solved)  # type: ignore[dict-item]
        assert processor.process_ticket("support-eu", "T1", solved).status == "unchanged"
        state = store.ticket_state("support-eu", "T1")
        assert state is not None and state.resolved_at == solved

        loaded = load_history(store, WEEK.start, WEEK.end)
    [got] = loaded.rows
    assert (got.channel, got.source_group, got.helpdesk) == ("chat", "Support EU", "zendesk")
    report = build_report(loaded.rows, WEEK, matrix=matrix, recorded=loaded.recorded)
    [timing] = [t for t in report.timings if t.escalations]
    assert timing.resolved == 1
    assert timing.to_resolve.median is not None
    assert timing.within_target == 1


def cli(*argv: str) -> tuple[int, str, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="escbridge report")
    configure_report_parser(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # an argument refused while parsing: usage on stderr, exit 2
        return int(exc.code or 0), "", argparse.Namespace()
    out = io.StringIO()
    return run_report(args, out), out.getvalue(), args


@pytest.fixture
def sqlite_store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    template: Path = request.getfixturevalue("_sqlite_template")
    path = tmp_path / "escbridge.db"
    path.write_bytes(template.read_bytes())
    url = f"sqlite:///{path}"
    seed(url, history())
    yield url


@pytest.fixture
def config_dir(tmp_path: Path, sqlite_store: str) -> Path:
    (tmp_path / "matrix.yaml").write_text(MATRIX_YAML, encoding="utf-8")
    (tmp_path / "escbridge.yaml").write_text(
        f"store: {sqlite_store}\nmatrix: matrix.yaml\ninstances:\n"
        "  support-eu: {type: zendesk, subdomain: acme, api_token: '${REPORT_TEST_UNSET_TOKEN}'}\n"
        "  support-us: {type: freshdesk, domain: acme}\n",
        encoding="utf-8",
    )
    return tmp_path


UNTIL_ARG = ("--until", "2026-03-16T00:00:00Z", "--since", "7d")


class TestCommand:
    def test_json_from_a_store_url(self, sqlite_store: str) -> None:
        code, out, _ = cli("--store", sqlite_store, *UNTIL_ARG, "--format", "json")
        assert code == 0
        data = json.loads(out)
        assert data["escalations"]["count"] == 11 and data["tickets"]["count"] == 9
        assert data["breakdowns"]["level"]["items"][0]["label"] == "l2"  # no matrix: ids

    def test_the_config_brings_the_matrix_and_helpdesk_types_but_needs_no_api_tokens(
        self, config_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("REPORT_TEST_UNSET_TOKEN", raising=False)
        config = str(config_dir / "escbridge.yaml")
        code, out, _ = cli(
            "--config", config, *UNTIL_ARG, "--instance", "support-us", "--format", "json"
        )
        assert code == 0
        data = json.loads(out)
        assert data["escalations"]["count"] == 2 and data["instances"] == ["support-us"]
        helpdesks = data["breakdowns"]["helpdesk"]["items"]
        assert [h["label"] for h in helpdesks] == ["support-us (freshdesk)"]
        levels = {lv["id"]: lv["label"] for lv in data["levels"]}
        assert levels["billing"] == "team · Billing"

    def test_html_to_a_file(self, config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        target = config_dir / "report.html"
        code, out, _ = cli(
            "--config",
            str(config_dir / "escbridge.yaml"),
            *UNTIL_ARG,
            "--format",
            "html",
            "-o",
            str(target),
        )
        assert (code, out) == (0, "")
        assert f"wrote {target}" in capsys.readouterr().err
        page = assert_valid_page(target.read_text(encoding="utf-8"))
        assert "Escalations 11" in page.visible_text

    def test_html_links_tickets_through_the_configured_connectors_without_api_tokens(
        self, config_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("REPORT_TEST_UNSET_TOKEN", raising=False)
        config = config_dir / "escbridge.yaml"
        config.write_text(
            config.read_text(encoding="utf-8").replace(
                "subdomain: acme,", "subdomain: acme, email: bot@acme.example,"
            ),
            encoding="utf-8",
        )
        code, out, _ = cli("--config", str(config), *UNTIL_ARG, "--format", "html")
        assert code == 0
        page = assert_valid_page(out, links=True)
        assert page.links == [
            "https://acme.zendesk.com/agent/tickets/T9",  # the latest escalated first
            "https://acme.zendesk.com/agent/tickets/T2",
        ]

    def test_csv_to_stdout(self, sqlite_store: str) -> None:
        code, out, _ = cli("--store", sqlite_store, *UNTIL_ARG, "--format", "csv", "--by", "week")
        assert code == 0
        assert "trend_week,2026-03-09,week of 2026-03-09,count,11" in out.splitlines()

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (("--since", "30dd"), '--since "30dd" is not a duration back from --until'),
            (("--since", "0d"), '--since "0d" must be longer than nothing'),
            (("--since", "2026-04-01"), "is not before the end of the period"),
            (("--until", "yesterday"), '"yesterday" is not a date'),
            (("--instance", "nowhere"), "unknown instance nowhere (known: support-eu, support-us)"),
            (("--timezone", "Mars/Olympus"), '--timezone "Mars/Olympus" is not a time zone'),
            (("--store", "not a url"), '--store: "not a url" is not a URL'),
        ],
    )
    def test_invalid_input_exits_2_with_a_clear_message(
        self,
        sqlite_store: str,
        argv: tuple[str, ...],
        message: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        args = ["--store", sqlite_store, "--until", "2026-03-16T00:00:00Z", *argv]
        code, out, _ = cli(*args)
        assert (code, out) == (2, "")
        assert message in capsys.readouterr().err

    def test_a_store_without_tables_exits_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, _ = cli("--store", f"sqlite:///{tmp_path / 'empty.db'}")
        assert code == 1
        assert "escbridge report:" in capsys.readouterr().err

    def test_a_broken_config_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "escbridge.yaml").write_text("store: sqlite:///x.db\nstores: 1\n", "utf-8")
        code, _, _ = cli("--config", str(tmp_path / "escbridge.yaml"))
        assert code == 2
        assert "escbridge.yaml:2 stores" in capsys.readouterr().err


def test_since_accepts_durations_and_local_dates() -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    assert parse_since("30d", UNTIL, UTC) == UNTIL - timedelta(days=30)
    assert parse_since("12w", UNTIL, UTC) == UNTIL - timedelta(weeks=12)
    assert parse_since("2026-03-01", UNTIL, berlin) == datetime(2026, 3, 1, tzinfo=berlin)
    with pytest.raises(ValueError, match="30dd"):
        parse_since("30dd", UNTIL, UTC)


@pytest.mark.parametrize(
    ("resolved", "headline"),
    [(WITHIN_TARGET_MIN_RESOLVED - 1, False), (WITHIN_TARGET_MIN_RESOLVED, True)],
)
def test_within_target_becomes_a_key_figure_at_the_minimum(
    resolved: int, headline: bool, matrix: Matrix
) -> None:
    report = build_report(many_resolved(resolved), WEEK, matrix=matrix, generated_at=UNTIL)
    kpis = render_html(report).split('<section class="kpis"')[1].split("</section>")[0]
    assert ("Resolved within target" in kpis) is headline
    assert json.loads(render_json(report))["within_target"]["headline"] is headline
