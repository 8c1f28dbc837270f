"""apply_many(): bulk_update for identical property changes, both answer shapes, notes each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from fake_account import Account
from freshdesk_payloads import API_KEY, ESCALATIONS_ID, open_ticket

from escbridge.model import Actions, Priority, Ticket

ESCALATE = Actions(
    group="Escalations",
    priority=Priority.URGENT,
    note="Escalated: overdue.",
    tags_add=("escbridge_l2",),
    level="l2",
)


@pytest.fixture
def account() -> Iterator[Account]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Account(rsps)


def connector(**settings: Any) -> FreshdeskConnector:
    cfg = FreshdeskConfig.model_validate({"domain": "acme", "api_key": API_KEY, **settings})
    return FreshdeskConnector(cfg, instance="fd", sleep=lambda s: None)


def tickets(account: Account, ids: list[int], **changes: Any) -> list[Ticket]:
    out = []
    for tid in ids:
        raw = open_ticket(tid, **{"tags": [], **changes})
        account.add(raw)
        out.append(connector().parse_ticket(raw))
    return out


def test_identical_changes_go_in_one_bulk_call_with_notes_per_ticket(account: Account) -> None:
    items = [(t, ESCALATE) for t in tickets(account, [20, 21, 22])]
    results = connector().apply_many(items)
    assert [(r.ticket_id, r.ok) for r in results] == [("20", True), ("21", True), ("22", True)]
    (bulk,) = account.bodies("POST", "/tickets/bulk_update")
    assert bulk == {
        "bulk_action": {
            "ids": [20, 21, 22],
            "properties": {"group_id": ESCALATIONS_ID, "priority": 4, "tags": ["escbridge_l2"]},
        }
    }
    assert account.calls("PUT") == []
    for tid in (20, 21, 22):
        assert account.tickets[tid]["group_id"] == ESCALATIONS_ID
        assert len(account.notes(tid)) == 1 and account.notes(tid)[0]["private"]


def test_tickets_with_different_current_tags_are_not_forced_into_one_tag_list(
    account: Account,
) -> None:
    same = tickets(account, [30, 31])
    (different,) = tickets(account, [32], tags=["keep-me"])
    results = connector().apply_many(
        [(same[0], ESCALATE), (different, ESCALATE), (same[1], ESCALATE)]
    )
    assert [r.ticket_id for r in results] == ["30", "32", "31"]  # same order as given
    assert all(r.ok for r in results)
    assert account.bodies("POST", "/tickets/bulk_update")[0]["bulk_action"]["ids"] == [30, 31]
    assert account.bodies("PUT", "/tickets/32") == [
        {"group_id": ESCALATIONS_ID, "priority": 4, "tags": ["keep-me", "escbridge_l2"]}
    ]
    assert account.tickets[32]["tags"] == ["keep-me", "escbridge_l2"]


def test_failed_entries_of_the_succeeded_failed_shape_are_per_ticket(account: Account) -> None:
    items = [(t, ESCALATE) for t in tickets(account, [40, 41])]
    account.refuse_in_bulk = {41}
    ok, refused = connector().apply_many(items)
    assert ok.ok and not refused.ok and refused.retryable
    assert "group_id: no access" in (refused.error or "")
    assert len(account.notes(40)) == 1 and account.notes(41) == []


def test_the_job_shape_is_polled_until_it_finishes(account: Account) -> None:
    account.bulk_mode = "job"
    account.job_status_sequence = ["QUEUED", "IN_PROGRESS", "SUCCESS"]
    items = [(t, ESCALATE) for t in tickets(account, [50, 51])]
    results = connector().apply_many(items)
    assert all(r.ok for r in results)
    polls = [p for m, p in account.calls("GET") if p.startswith("/jobs/")]
    assert len(polls) == 3 and polls[0] == "/jobs/e4d18654f60b5204513155b26c6c0"
    assert all(len(account.notes(t)) == 1 for t in (50, 51))


def test_a_partial_job_names_the_tickets_that_failed(account: Account) -> None:
    account.bulk_mode = "job"
    account.job_status_sequence = ["PARTIAL"]
    account.refuse_in_bulk = {61}
    account.job_data = [
        {"id": 60, "success": True},
        {"id": 61, "success": False, "errors": [{"field": "group_id", "message": "no access"}]},
    ]
    items = [(t, ESCALATE) for t in tickets(account, [60, 61])]
    ok, failed = connector().apply_many(items)
    assert ok.ok and not failed.ok and "no access" in (failed.error or "")
    assert account.notes(61) == []


@pytest.mark.parametrize(
    "error",
    ["Group does not exist", {"field": "group_id", "message": "Group does not exist"}],
)
def test_a_job_item_error_in_the_singular_keeps_its_reason(account: Account, error: Any) -> None:
    """Job data items say ``error`` (singular), as real client code polling
    ``GET /api/v2/jobs/{id}`` reads them (api-audit.md #15): the reason reaches the result."""
    account.bulk_mode = "job"
    account.job_status_sequence = ["PARTIAL"]
    account.refuse_in_bulk = {63}
    account.job_data = [{"id": 62, "success": True}, {"id": 63, "success": False, "error": error}]
    items = [(t, ESCALATE) for t in tickets(account, [62, 63])]
    ok, failed = connector().apply_many(items)
    assert ok.ok and not failed.ok
    assert "Group does not exist" in (failed.error or "")
    assert account.notes(63) == []


def test_a_job_without_per_ticket_data_is_checked_on_the_tickets(account: Account) -> None:
    account.bulk_mode = "job"
    account.job_status_sequence = ["PARTIAL"]
    account.refuse_in_bulk = {71}
    items = [(t, ESCALATE) for t in tickets(account, [70, 71])]
    ok, failed = connector().apply_many(items)
    assert ok.ok and len(account.notes(70)) == 1
    assert not failed.ok and "did not reach the ticket" in (failed.error or "")
    assert account.notes(71) == []


def test_an_answer_in_neither_shape_is_checked_on_the_tickets(account: Account) -> None:
    account.bulk_mode = "odd"
    items = [(t, ESCALATE) for t in tickets(account, [80, 81])]
    assert all(r.ok for r in connector().apply_many(items))
    assert [p for m, p in account.calls("GET") if p in ("/tickets/80", "/tickets/81")] == [
        "/tickets/80",
        "/tickets/81",
        "/tickets/80",
        "/tickets/81",
    ]


def test_a_refused_bulk_call_falls_back_to_one_put_each(account: Account) -> None:
    items = [(t, ESCALATE) for t in tickets(account, [90, 91])]
    account.fail(
        "POST",
        "/tickets/bulk_update",
        400,
        {
            "description": "Validation failed",
            "errors": [{"field": "ids", "message": "too many", "code": "invalid_value"}],
        },
    )
    assert all(r.ok for r in connector().apply_many(items))
    assert len(account.calls("PUT")) == 2
    assert all(len(account.notes(t)) == 1 for t in (90, 91))


def test_already_escalated_tickets_in_a_batch_only_get_their_missing_note(account: Account) -> None:
    done, fresh1, fresh2 = tickets(account, [100, 101, 102])
    account.tickets[100]["tags"] = ["escbridge_l2"]  # a crash left it without its note
    results = connector().apply_many([(done, ESCALATE), (fresh1, ESCALATE), (fresh2, ESCALATE)])
    assert all(r.ok for r in results)
    assert account.bodies("POST", "/tickets/bulk_update")[0]["bulk_action"]["ids"] == [101, 102]
    assert all(len(account.notes(t)) == 1 for t in (100, 101, 102))


def test_a_conflict_in_a_batch_is_a_retryable_result_not_an_exception(account: Account) -> None:
    a, b = tickets(account, [110, 111])
    account.tickets[110]["updated_at"] = "2026-03-11T09:59:00Z"
    first, second = connector().apply_many([(a, ESCALATE), (b, ESCALATE)])
    assert not first.ok and first.conflict and first.retryable
    assert second.ok
