"""apply(): PUT then private note, merged tags, conflicts, and no missing or double note."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.notes import escalation_ref, find_note
from fake_account import Account
from freshdesk_payloads import API_KEY, ESCALATIONS_ID, FRONTLINE_ID, open_ticket

from escbridge.errors import Conflict, TransientError
from escbridge.model import Actions, Priority, Ticket

ESCALATE = Actions(
    group="Escalations",
    priority=Priority.URGENT,
    note="Escalated by rule R7: no first response in 4h.\nMoved to Escalations.",
    tags_add=("escbridge_l2", "sla-breach"),
    tags_remove=("escbridge_l1",),
    level="l2",
)


@pytest.fixture
def account() -> Iterator[Account]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield Account(rsps)


def connector(slept: list[float] | None = None, **settings: Any) -> FreshdeskConnector:
    cfg = FreshdeskConfig.model_validate({"domain": "acme", "api_key": API_KEY, **settings})
    sink = slept if slept is not None else []
    return FreshdeskConnector(cfg, instance="fd", sleep=sink.append)


def ticket_in(account: Account, **changes: Any) -> Ticket:
    raw = open_ticket(1234, tags=["vip", "escbridge_l1"], **changes)
    account.add(raw)
    return connector().parse_ticket(raw)


def test_put_with_group_priority_and_merged_tags_then_a_private_note(account: Account) -> None:
    ticket = ticket_in(account)
    result = connector().apply(ticket, ESCALATE)
    assert result.ok and not result.skipped and result.actions == ESCALATE
    writes = account.calls("PUT") + account.calls("POST")
    assert writes == [("PUT", "/tickets/1234"), ("POST", "/tickets/1234/notes")]
    assert account.bodies("PUT", "/tickets/1234") == [
        {"group_id": ESCALATIONS_ID, "priority": 4, "tags": ["vip", "sla-breach", "escbridge_l2"]}
    ]
    (note,) = account.bodies("POST", "/tickets/1234/notes")
    assert note["private"] is True
    assert "Escalated by rule R7: no first response in 4h.<br>Moved to Escalations." in note["body"]
    assert f"escbridge ref: {escalation_ref('1234', ESCALATE)}" in note["body"]
    assert result.version not in (None, ticket.version)  # the stamp of our PUT


def test_tags_a_human_added_meanwhile_survive(account: Account) -> None:
    ticket = ticket_in(account)
    account.tickets[1234]["tags"].append("Customer-Angry")  # added after we read the ticket
    account.tickets[1234]["updated_at"] = "2026-03-11T09:31:00Z"
    decided_again: list[Ticket] = []

    def on_conflict(fresh: Ticket) -> Actions:
        decided_again.append(fresh)
        return ESCALATE

    result = connector().apply(ticket, ESCALATE, on_conflict=on_conflict)
    assert result.ok and result.conflicts == 1
    assert "customer-angry" in decided_again[0].tags
    (body,) = account.bodies("PUT", "/tickets/1234")
    assert body["tags"] == ["vip", "Customer-Angry", "sla-breach", "escbridge_l2"]


def test_priority_is_never_lowered_and_none_leaves_it(account: Account) -> None:
    ticket = ticket_in(account, priority=4)
    connector().apply(ticket, ESCALATE.model_copy(update={"priority": Priority.HIGH}))
    assert "priority" not in account.bodies("PUT", "/tickets/1234")[0]
    ticket2 = connector().parse_ticket(open_ticket(77, priority=2, tags=[]))
    account.add(open_ticket(77, priority=2, tags=[]))
    connector().apply(ticket2, ESCALATE.model_copy(update={"priority": None}))
    assert "priority" not in account.bodies("PUT", "/tickets/77")[0]


def test_unassign_sends_responder_null(account: Account) -> None:
    ticket = ticket_in(account)
    assert account.tickets[1234]["responder_id"] is not None
    connector().apply(ticket, ESCALATE.model_copy(update={"unassign": True}))
    assert account.bodies("PUT", "/tickets/1234")[0]["responder_id"] is None
    assert account.tickets[1234]["responder_id"] is None


def test_unassign_refused_by_freshdesk_still_escalates(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    ticket = ticket_in(account)
    refused = {
        "description": "Validation failed",
        "errors": [
            {
                "field": "responder_id",
                "message": "It should be a/an Integer",
                "code": "datatype_mismatch",
            }
        ],
    }
    account.fail("PUT", "/tickets/1234", 400, refused)
    result = connector().apply(ticket, ESCALATE.model_copy(update={"unassign": True}))
    assert result.ok
    first, second = account.bodies("PUT", "/tickets/1234")
    assert first["responder_id"] is None and "responder_id" not in second
    assert account.tickets[1234]["group_id"] == ESCALATIONS_ID
    assert "refused responder_id null" in caplog.text
    assert len(account.notes(1234)) == 1


def test_the_level_also_goes_into_a_configured_custom_field(account: Account) -> None:
    ticket = ticket_in(account)
    connector(level_field="escalation_level").apply(ticket, ESCALATE)  # cf_ found by itself
    assert account.bodies("PUT", "/tickets/1234")[0]["custom_fields"] == {
        "cf_escalation_level": "l2"
    }


def test_an_unknown_group_fails_clearly_before_anything_is_written(account: Account) -> None:
    ticket = ticket_in(account)
    result = connector().apply(ticket, ESCALATE.model_copy(update={"group": "Tier 9"}))
    assert not result.ok and not result.retryable
    assert "no group named 'Tier 9'" in (result.error or "")
    assert "Escalations" in (result.error or "")  # names the groups that do exist
    assert account.calls("PUT") == [] and account.calls("POST") == []


def test_groups_are_read_once_and_cached(account: Account) -> None:
    ticket = ticket_in(account)
    conn = connector()
    conn.apply(ticket, ESCALATE)
    assert len(account.bodies("GET", "/groups")) == 1  # cached for the next apply


def test_a_missing_ticket_and_a_refused_update_are_failed_results(account: Account) -> None:
    missing = connector().parse_ticket(open_ticket(999))
    result = connector().apply(missing, ESCALATE)
    assert not result.ok and "not found" in (result.error or "")
    ticket = ticket_in(account)
    account.fail(
        "PUT",
        "/tickets/1234",
        400,
        {
            "description": "Validation failed",
            "errors": [
                {
                    "field": "type",
                    "message": "It should be one of these values: 'Question,Incident'",
                    "code": "invalid_value",
                }
            ],
        },
    )
    result = connector().apply(ticket, ESCALATE)
    assert (
        not result.ok
        and result.error == "type: It should be one of these values: 'Question,Incident'"
    )
    assert account.notes(1234) == []  # no note for an escalation that did not happen


def test_a_concurrent_edit_raises_conflict_without_a_handler(account: Account) -> None:
    ticket = ticket_in(account)
    account.tickets[1234]["updated_at"] = "2026-03-11T09:45:00Z"
    with pytest.raises(Conflict, match="changed since it was read"):
        connector().apply(ticket, ESCALATE)
    assert account.calls("PUT") == []


def test_a_re_decision_that_finds_nothing_to_do_skips(account: Account) -> None:
    ticket = ticket_in(account)
    account.tickets[1234]["updated_at"] = "2026-03-11T09:45:00Z"
    result = connector().apply(ticket, ESCALATE, on_conflict=lambda fresh: None)
    assert result.ok and result.skipped and result.conflicts == 1
    assert account.calls("PUT") == []


# --------------------------------------------------------------------------- crash safety


def test_crash_after_the_put_a_retry_adds_the_note_once_without_a_second_put(
    account: Account,
) -> None:
    ticket = ticket_in(account)
    account.fail("POST", "/tickets/1234/notes", 503, {"message": "down"})
    account.fail("POST", "/tickets/1234/notes", 503, {"message": "down"})
    account.fail("POST", "/tickets/1234/notes", 503, {"message": "down"})
    with pytest.raises(TransientError):
        connector().apply(ticket, ESCALATE)
    assert account.tickets[1234]["group_id"] == ESCALATIONS_ID  # escalated…
    assert account.notes(1234) == []  # …without its note: the state a crash leaves too

    retry = connector().apply(ticket, ESCALATE)  # a new worker, same decision
    assert retry.ok
    assert len(account.bodies("PUT", "/tickets/1234")) == 1  # the level tag said: done
    assert len(account.notes(1234)) == 1


def test_crash_after_the_note_a_retry_writes_nothing_again(account: Account) -> None:
    ticket = ticket_in(account)
    assert connector().apply(ticket, ESCALATE).ok
    puts, notes = len(account.calls("PUT")), len(account.notes(1234))

    # The worker died before recording: the retry may even have decided again and
    # worded the note differently — the reference depends on the transition, not the text.
    reworded = ESCALATE.model_copy(update={"note": "Escalated (second wording)."})
    assert connector().apply(ticket, reworded).ok
    assert (len(account.calls("PUT")), len(account.notes(1234))) == (puts, notes) == (1, 1)


def test_a_note_whose_answer_was_lost_is_not_posted_twice(account: Account) -> None:
    ticket = ticket_in(account)
    account.fail("POST", "/tickets/1234/notes", 504, after=True)  # created, answer lost
    result = connector().apply(ticket, ESCALATE)
    assert result.ok
    assert len(account.bodies("POST", "/tickets/1234/notes")) == 1
    assert len(account.notes(1234)) == 1
    assert ("GET", "/tickets/1234/conversations") in account.calls()


def test_a_note_that_really_failed_is_posted_again(account: Account) -> None:
    ticket = ticket_in(account)
    slept: list[float] = []
    account.fail("POST", "/tickets/1234/notes", 504)  # not created
    result = connector(slept).apply(ticket, ESCALATE)
    assert result.ok
    assert len(account.bodies("POST", "/tickets/1234/notes")) == 2
    assert len(account.notes(1234)) == 1
    assert slept and max(slept) < 60


def test_a_throttled_note_waits_for_retry_after(account: Account) -> None:
    ticket = ticket_in(account)
    slept: list[float] = []
    account.fail(
        "POST",
        "/tickets/1234/notes",
        429,
        {"message": "You have exceeded the limit of requests per minute"},
        headers={"Retry-After": "12"},
    )
    assert connector(slept).apply(ticket, ESCALATE).ok
    assert slept == [12.0]
    assert len(account.notes(1234)) == 1
    assert ("GET", "/tickets/1234/conversations") not in account.calls()  # 429 = not created


def test_the_same_transition_made_again_later_gets_its_own_note() -> None:
    ref = escalation_ref("1", ESCALATE)
    ours = {"private": True, "body_text": f"old escbridge ref: {ref}"}
    other = {"private": True, "body_text": "escbridge ref: esc-0123456789abcdef"}
    human = {"private": True, "body_text": "I moved it back to Frontline"}
    assert find_note([ours, human], ref) == 0
    assert find_note([ours, other, human], ref) is None  # a later escalation came between
    assert find_note([{"private": False, "body_text": f"escbridge ref: {ref}"}], ref) is None


def test_a_customer_update_is_a_public_reply_after_the_note_and_never_repeated(
    account: Account,
) -> None:
    ticket = ticket_in(account)
    actions = ESCALATE.model_copy(update={"customer_update": "We have escalated your request."})
    account.fail("POST", "/tickets/1234/reply", 503, {"message": "down"})
    account.fail("POST", "/tickets/1234/reply", 503, {"message": "down"})
    account.fail("POST", "/tickets/1234/reply", 503, {"message": "down"})
    with pytest.raises(TransientError):
        connector().apply(ticket, actions)
    assert [c["private"] for c in account.conversations[1234]] == [True]

    assert connector().apply(ticket, actions).ok
    assert [c["private"] for c in account.conversations[1234]] == [True, False]
    assert account.conversations[1234][1]["body"] == "<p>We have escalated your request.</p>"

    assert connector().apply(ticket, actions).ok  # once more: nothing new
    assert len(account.conversations[1234]) == 2
    assert len(account.bodies("PUT", "/tickets/1234")) == 1


def test_no_reply_unless_a_customer_update_is_set(account: Account) -> None:
    ticket = ticket_in(account)
    connector().apply(ticket, ESCALATE)
    assert account.bodies("POST", r"/tickets/\d+/reply") == []


def test_tags_appended_instead_of_replaced_are_reported(
    account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    account.tags_mode = "append"
    ticket = ticket_in(account)
    result = connector().apply(ticket, ESCALATE)
    assert result.ok
    assert account.tickets[1234]["tags"] == ["vip", "escbridge_l1", "sla-breach", "escbridge_l2"]
    assert "kept tags escbridge removed (escbridge_l1)" in caplog.text
    refetched = connector().parse_ticket(account.tickets[1234])
    assert refetched.level == "l2"  # the newest marker still wins


def test_nothing_to_change_makes_no_empty_put(account: Account) -> None:
    raw = open_ticket(1234, group_id=ESCALATIONS_ID, priority=4, tags=["vip"])
    account.add(raw)
    ticket = connector().parse_ticket(raw)
    note_only = Actions(group="Escalations", note="FYI", tags_add=("vip",))
    assert connector().apply(ticket, note_only).ok
    assert account.calls("PUT") == []
    assert len(account.notes(1234)) == 1
    _ = FRONTLINE_ID
