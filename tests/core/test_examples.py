"""The shipped examples do what their comments say: examples/matrix.yaml on examples/tickets.

Evaluated on Wednesday 11 March 2026, 15:00 UTC (16:00 in Berlin, inside the support hours),
on Zendesk, the way the README runs `escbridge explain`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from escbridge.cli import main
from escbridge.cli.matrix import load_tickets
from escbridge.matrix import Matrix, load_matrix
from escbridge.model import Decision, Priority, Ticket
from escbridge.policy import Engine

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "examples" / "matrix.yaml"
TICKETS = ROOT / "examples" / "tickets"
AT = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
CLI = ["--matrix", str(MATRIX), "--at", "2026-03-11T15:00:00Z", "--helpdesk", "zendesk"]

# ticket: (rule that fires, destination, group, priority afterwards or None if unchanged)
ESCALATES = {
    "1001": ("supervisor-requested", "l2", "Senior Support", Priority.HIGH),
    "1002": ("supervisor-requested", "l2", "Senior Support", Priority.HIGH),
    "1003": ("legal-threat", "l3", "Support Managers", Priority.URGENT),
    "1004": ("legal-threat", "l3", "Support Managers", Priority.URGENT),
    "1005": ("hostile-conversation", "l2", "Senior Support", Priority.HIGH),
    "1007": ("refund-over-limit", "billing", "Billing", None),
    "1010": ("billing-dispute", "billing", "Billing", Priority.HIGH),
    "1011": ("billing-dispute", "billing", "Billing", Priority.HIGH),
    "1012": ("technical-specialist", "technical", "Tier 2 Technical", None),
    "1013": ("policy-exception", "l2", "Senior Support", Priority.HIGH),
    "1014": ("vip-customer", "l2", "Senior Support", Priority.URGENT),
    "1016": ("vip-idle", "l2", "Senior Support", Priority.HIGH),
    "1017": ("sla-about-to-breach", "l2", "Senior Support", Priority.HIGH),
    "1019": ("level-resolution-expired", "l3", "Support Managers", Priority.URGENT),
    "1020": ("first-response-late", "l2", "Senior Support", Priority.HIGH),
    "1021": ("repeatedly-reopened", "l2", "Senior Support", Priority.HIGH),
}
STAYS = {
    "1006": "no escalation: no rule matched",
    "1008": "no escalation: no rule matched",
    "1009": "no escalation: no rule matched",
    "1015": "no escalation: no rule matched",
    "1018": "no escalation: no rule matched",
    "1022": "no escalation: the ticket is solved",
    "1023": (
        "no escalation: supervisor-requested: already at the top level (l3); "
        "level-resolution-expired: already at the top level (l3)"
    ),
    "1024": "no escalation: no rule matched",
    "1025": "no escalation: no rule matched",
}


@pytest.fixture(scope="module")
def example_matrix() -> Matrix:
    return load_matrix(MATRIX)


@pytest.fixture(scope="module")
def decisions(example_matrix: Matrix) -> dict[str, Decision]:
    engine = Engine(example_matrix, {"support-eu": "zendesk"})
    return {t.id: engine.decide(t, [], AT, explain=True) for t in load_tickets(TICKETS)}


@pytest.fixture(scope="module")
def explained() -> dict[str, str]:
    """`escbridge explain examples/tickets …` output, one block per ticket."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["explain", str(TICKETS), *CLI]) == 0
    blocks = re.split(r"^(?=#\d+ )", out.getvalue(), flags=re.MULTILINE)
    return {b.split(" ", 1)[0][1:]: b for b in blocks if b.startswith("#")}


def details(decision: Decision, rule_id: str) -> tuple[str, ...]:
    return next(o.details for o in decision.outcomes if o.rule_id == rule_id)


def test_every_example_ticket_is_listed_here() -> None:
    on_disk = {p.stem for p in TICKETS.glob("*.json")}
    assert on_disk == set(ESCALATES) | set(STAYS)


def test_every_example_ticket_says_what_it_shows() -> None:
    for path in TICKETS.glob("*.json"):
        assert json.loads(path.read_text())["_comment"], path


def test_the_example_matrix_has_every_rule_the_tickets_exercise(example_matrix: Matrix) -> None:
    ids = [r.id for r in example_matrix.rules]
    assert {rule for rule, *_ in ESCALATES.values()} <= set(ids)
    assert len(example_matrix.levels) == 3
    assert set(example_matrix.teams) == {"billing", "technical"}


@pytest.mark.parametrize("ticket_id", sorted(ESCALATES))
def test_escalating_examples(ticket_id: str, decisions: dict[str, Decision]) -> None:
    rule, destination, group, priority = ESCALATES[ticket_id]
    decision = decisions[ticket_id]
    assert decision.escalate, decision.summary
    assert decision.rule_id == rule
    assert decision.destination is not None
    assert decision.destination.id == destination
    assert decision.actions is not None
    assert decision.actions.group == group
    assert decision.actions.priority == priority
    assert decision.actions.tags_add[0] == f"escbridge_{destination}"


@pytest.mark.parametrize("ticket_id", sorted(STAYS))
def test_examples_that_stay_where_they_are(ticket_id: str, decisions: dict[str, Decision]) -> None:
    decision = decisions[ticket_id]
    assert not decision.escalate
    assert decision.actions is None
    assert decision.summary == STAYS[ticket_id]


class TestWhatTheExamplesShow:
    def test_1001_a_supervisor_request_goes_one_level_up_with_a_handover_note(
        self, decisions: dict[str, Decision]
    ) -> None:
        decision = decisions["1001"]
        assert decision.from_level == "l1"
        assert decision.reasons == ('"supervisor" appears in the description',)
        assert decision.actions is not None
        assert decision.actions.tags_add == ("escbridge_l2", "supervisor_requested")
        assert decision.actions.note == (
            "Dana Fischer asked for someone more senior.\n"
            "Moved from Frontline support to Senior support / team lead.\n"
            'Why: "supervisor" appears in the description'
        )

    def test_1002_manager_in_the_latest_comment(self, decisions: dict[str, Decision]) -> None:
        assert decisions["1002"].reasons == ('"manager" appears in the latest comment',)

    def test_1004_cancel_my_account_is_a_phrase(self, decisions: dict[str, Decision]) -> None:
        assert decisions["1004"].reasons == ('"cancel my account" appears in the description',)

    def test_1006_a_hostile_word_outside_the_latest_comment_does_not_count(
        self, decisions: dict[str, Decision]
    ) -> None:
        assert details(decisions["1006"], "hostile-conversation") == (
            '✗ none of "unacceptable", "ridiculous", "disgusting", "furious", "scam", '
            '"worst service" appears in latest_comment',
        )

    def test_1007_a_large_refund_goes_to_billing_with_its_amount_in_the_note(
        self, decisions: dict[str, Decision]
    ) -> None:
        decision = decisions["1007"]
        assert decision.kind == "functional"
        assert decision.destination is not None
        assert decision.destination.kind == "team"
        assert decision.actions is not None
        assert decision.actions.note is not None
        assert decision.actions.note.startswith("Refund request of 750 is over the 500")

    def test_1008_a_small_refund_misses_by_how_much(self, decisions: dict[str, Decision]) -> None:
        assert details(decisions["1008"], "refund-over-limit") == (
            "✗ custom_fields.refund_amount is 120, 380 from the limit (wanted: is above 500)",
        )

    def test_1009_an_approved_refund(self, decisions: dict[str, Decision]) -> None:
        assert details(decisions["1009"], "refund-over-limit") == (
            '✗ not: tags ["refund_approved"] have any of ["refund_approved"]',
        )

    def test_1012_a_technical_problem_is_unassigned(self, decisions: dict[str, Decision]) -> None:
        assert decisions["1012"].actions.unassign is True  # type: ignore[union-attr]

    def test_1015_a_vip_organisation_at_normal_priority_is_not_enough(
        self, decisions: dict[str, Decision]
    ) -> None:
        assert details(decisions["1015"], "vip-customer") == (
            "✗ priority is normal (wanted: is at least high)",
        )

    def test_1017_an_sla_about_to_breach_tells_the_customer(
        self, decisions: dict[str, Decision]
    ) -> None:
        decision = decisions["1017"]
        assert decision.reasons == (
            "time left until the ticket is due is 40m of calendar time, under 1h",
            "priority is at least normal (normal)",
        )
        assert decision.actions is not None
        assert decision.actions.customer_update is not None
        assert "Senior support / team lead team" in decision.actions.customer_update

    def test_1018_due_tomorrow_is_far_from_the_limit(self, decisions: dict[str, Decision]) -> None:
        assert details(decisions["1018"], "sla-about-to-breach") == (
            "✗ time left until the ticket is due is 1d of calendar time, not under 1h "
            "(23h too much)",
        )

    def test_1019_an_l2_ticket_past_its_resolution_goes_to_l3(
        self, decisions: dict[str, Decision]
    ) -> None:
        decision = decisions["1019"]
        assert decision.from_level == "l2"
        assert decision.actions is not None
        assert decision.actions.tags_remove == ("escbridge_l2",)
        assert decision.summary == (
            "escalate l2 → l3 (Support manager, group Support Managers) "
            "by rule level-resolution-expired"
        )

    def test_1022_a_solved_ticket_matches_but_never_escalates(
        self, decisions: dict[str, Decision]
    ) -> None:
        first = decisions["1022"].outcomes[0]
        assert (first.rule_id, first.matched) == ("supervisor-requested", True)
        assert first.blocked == "no escalation: the ticket is solved"

    def test_1023_the_top_of_the_ladder(self, decisions: dict[str, Decision]) -> None:
        first = decisions["1023"].outcomes[0]
        assert (first.rule_id, first.matched) == ("supervisor-requested", True)
        assert first.blocked == "already at the top level (l3)"

    def test_1024_managerial_is_not_manager(self, decisions: dict[str, Decision]) -> None:
        assert details(decisions["1024"], "supervisor-requested") == (
            '✗ none of "supervisor", "manager", "speak to someone in charge", "escalate this" '
            "appears in subject, description, latest_comment",
        )


class TestExplainCommand:
    def test_it_summarises_the_folder(self, explained: dict[str, str]) -> None:
        assert set(explained) == set(ESCALATES) | set(STAYS)
        assert explained["1025"].rstrip().endswith("25 tickets, 16 would escalate")

    @pytest.mark.parametrize("ticket_id", sorted(ESCALATES))
    def test_it_names_the_rule_that_fired(self, ticket_id: str, explained: dict[str, str]) -> None:
        rule, destination, group, _ = ESCALATES[ticket_id]
        block = explained[ticket_id]
        assert f" → {destination} (" in block
        assert f"group {group}) by rule {rule}" in block
        assert f"    ✓ {rule} ← fired\n" in block

    def test_1001(self, explained: dict[str, str]) -> None:
        lines = explained["1001"].splitlines()
        assert lines[:5] == [
            "#1001 'Still not working' [support-eu] at 2026-03-11 15:00 UTC "
            "— now at l1 (Frontline support)",
            "  ESCALATE l1 → l2 (Senior support / team lead, group Senior Support) "
            "by rule supervisor-requested",
            "    group → Senior Support; priority normal → high; "
            "tags +escbridge_l2 +supervisor_requested",
            "    ✓ supervisor-requested ← fired",
            '        ✓ "supervisor" appears in the description',
        ]
        # and why every other rule did not fire
        assert "    ✗ legal-threat" in lines
        assert (
            "        ✗ time since the ticket was last updated is 30m of business time "
            "(support-hours), not over 2h (1h 30m to go)"
        ) in lines

    def test_1003_a_legal_threat_goes_straight_to_l3(self, explained: dict[str, str]) -> None:
        assert (
            "  ESCALATE l1 → l3 (Support manager, group Support Managers) by rule legal-threat"
            in explained["1003"]
        )

    def test_1007_goes_to_the_billing_team(self, explained: dict[str, str]) -> None:
        assert (
            "    group → Billing; tags +escbridge_billing +refund_approval\n" in (explained["1007"])
        )

    def test_1012_says_it_unassigns(self, explained: dict[str, str]) -> None:
        assert "; unassign" in explained["1012"]

    def test_1019_shows_the_move_from_l2(self, explained: dict[str, str]) -> None:
        block = explained["1019"]
        assert "— now at l2 (Senior support / team lead)" in block
        assert "tags +escbridge_l3 -escbridge_l2" in block

    def test_1022_solved(self, explained: dict[str, str]) -> None:
        block = explained["1022"]
        assert "  no escalation — the ticket is solved\n" in block
        assert (
            "    ✓ supervisor-requested (not used: no escalation: the ticket is solved)\n" in block
        )

    def test_1023_at_the_top(self, explained: dict[str, str]) -> None:
        assert (
            "    ✓ supervisor-requested (not used: already at the top level (l3))\n"
            in explained["1023"]
        )

    def test_1024_managerial(self, explained: dict[str, str]) -> None:
        block = explained["1024"]
        assert "  no escalation — no rule matched\n" in block
        assert "    ✗ supervisor-requested\n" in block

    def test_json_for_the_folder(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["explain", str(TICKETS), *CLI, "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert len(payload) == 25
        by_id = {d["ticket_id"]: d for d in payload}
        assert by_id["1001"]["rule_id"] == "supervisor-requested"
        assert by_id["1001"]["destination"]["group"] == "Senior Support"
        assert by_id["1022"]["escalate"] is False
        assert len(by_id["1024"]["outcomes"]) == 13


def test_the_ticket_files_are_valid_normalised_tickets() -> None:
    tickets = load_tickets(TICKETS)
    assert len(tickets) == 25
    assert all(isinstance(t, Ticket) for t in tickets)
    assert {t.instance for t in tickets} == {"support-eu"}
