"""ZendeskConnector against recorded-shaped responses (``responses``): every call and error path."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from zendesk_payloads import (
    ERROR_401,
    ERROR_404,
    ERROR_409,
    ERROR_422_CLOSED,
    ERROR_SEARCH_CAP,
    GROUPS_PAGE,
    JOB_QUEUED,
    ME_ADMIN,
    THROTTLED_TEXT,
    comment,
    comments_page,
    job,
    ticket,
)

from escbridge.connector import ApplyResult, Runtime
from escbridge.errors import Conflict, NotFound, PermissionDeniedError
from escbridge.model import Actions, Priority, Ticket
from escbridge.testing import FakeClock

BASE = "https://acme.zendesk.com/api/v2"
TOKEN = "tok-zendesk-secret-123"
NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
ESCALATE = Actions(
    group="Tier 2",
    priority=Priority.URGENT,
    note="Escalated to L2: no reply within 4 business hours.",
    tags_add=("escbridge_l2",),
    tags_remove=("escbridge_l1",),
    level="l2",
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def make(clock: FakeClock, **settings: Any) -> ZendeskConnector:
    base: dict[str, Any] = {
        "subdomain": "acme",
        "email": "escbridge@acme.example",
        "api_token": TOKEN,
    }
    if "oauth_token" in settings:
        base.pop("api_token")
        base.pop("email")
    cfg = ZendeskConfig.model_validate({**base, **settings})
    return ZendeskConnector(
        cfg,
        instance="eu",
        runtime=Runtime.simulated(clock),
    )


def groups() -> None:
    responses.get(f"{BASE}/groups.json", json=GROUPS_PAGE)


def comments(ticket_id: int | str = 35436, *items: dict[str, Any], **kw: Any) -> None:
    if not kw:
        kw = {"json": comments_page(*items)}
    responses.get(f"{BASE}/tickets/{ticket_id}/comments.json", **kw)


def body_of(call: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(call.request.body)
    return data


def puts(path: str) -> list[Any]:
    return [c for c in responses.calls if c.request.method == "PUT" and path in c.request.url]


def fetched(**changes: Any) -> Ticket:
    from escbridge_zendesk.parse import parse_ticket

    return parse_ticket(ticket(**changes), instance="eu", group_names={98738: "Tier 2"})


# ---------------------------------------------------------------- auth and check


@responses.activate
def test_api_token_auth_is_email_slash_token(clock: FakeClock) -> None:
    responses.get(f"{BASE}/users/me.json", json=ME_ADMIN)
    make(clock).check([])
    sent = responses.calls[0].request.headers["Authorization"]
    assert base64.b64decode(sent.removeprefix("Basic ")).decode() == (
        f"escbridge@acme.example/token:{TOKEN}"
    )


@responses.activate
def test_oauth_bearer_auth(clock: FakeClock) -> None:
    responses.get(f"{BASE}/users/me.json", json=ME_ADMIN)
    make(clock, oauth_token="oauth-xyz-789").check([])
    assert responses.calls[0].request.headers["Authorization"] == "Bearer oauth-xyz-789"


@responses.activate
def test_check_ready_resolves_groups_case_insensitively(clock: FakeClock) -> None:
    responses.get(f"{BASE}/users/me.json", json=ME_ADMIN)
    groups()
    report = make(clock, webhook_secret="whsec-1234").check(["Support", "tier 2"])
    assert report.ok and report.missing_groups == () and report.problems == ()
    assert report.identity == "escbridge <escbridge@acme.example> (user 6130907993114, admin)"
    assert any("incremental export" in n for n in report.notes)


@responses.activate
def test_check_lists_every_group_that_does_not_exist_including_deleted(clock: FakeClock) -> None:
    responses.get(f"{BASE}/users/me.json", json=ME_ADMIN)
    groups()
    report = make(clock).check(["Support", "Managers", "Old team"])
    assert not report.ok
    assert report.missing_groups == ("Managers", "Old team")
    assert any("no webhook_secret" in n for n in report.notes)


@responses.activate
def test_check_wrong_credentials_says_what_to_fix_without_the_token(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(f"{BASE}/users/me.json", status=401, json=ERROR_401)
    report = make(clock).check(["Support"])
    assert not report.ok
    (problem,) = report.problems
    assert "rejected the credentials" in problem and "email and api_token" in problem
    assert TOKEN not in problem and TOKEN not in caplog.text
    assert len(responses.calls) == 1  # 401 is not retried


@responses.activate
def test_check_anonymous_answer_means_credentials_not_accepted(clock: FakeClock) -> None:
    responses.get(
        f"{BASE}/users/me.json",
        json={"user": {"id": None, "name": "Anonymous user", "role": "end-user"}},
    )
    report = make(clock).check([])
    assert not report.ok and "anonymous" in report.problems[0]


@responses.activate
def test_check_agent_token_notes_search_fallback_and_end_user_is_a_problem(
    clock: FakeClock,
) -> None:
    agent = {"user": {**ME_ADMIN["user"], "role": "agent"}}
    responses.get(f"{BASE}/users/me.json", json=agent)
    report = make(clock).check([])
    assert report.ok and any("search" in n for n in report.notes)
    responses.replace(
        responses.GET,
        f"{BASE}/users/me.json",
        json={"user": {**ME_ADMIN["user"], "role": "end-user"}},
    )
    assert not make(clock).check([]).ok
    responses.replace(responses.GET, f"{BASE}/users/me.json", json=agent)
    forced = make(clock, sync="incremental").check([])
    assert not forced.ok and "needs an admin" in forced.problems[0]


@responses.activate
def test_check_unreachable_and_unknown_subdomain(clock: FakeClock) -> None:
    responses.get(f"{BASE}/users/me.json", body=requests.ConnectionError("no route"))
    report = make(clock, max_attempts=2).check([])
    assert not report.ok and report.problems[0].startswith(f"cannot reach {BASE}")
    responses.replace(responses.GET, f"{BASE}/users/me.json", status=404, body="")
    report = make(clock).check([])
    assert "check the subdomain" in report.problems[0]


def test_config_errors_are_precise() -> None:
    with pytest.raises(ValueError, match=r'write only the subdomain, e\.g\. "acme"'):
        ZendeskConfig(subdomain="acme.zendesk.com", email="a@b", api_token="x")
    with pytest.raises(ValueError, match="email is required"):
        ZendeskConfig(subdomain="acme", api_token="x")
    with pytest.raises(ValueError, match=r"api_token .* or oauth_token"):
        ZendeskConfig(subdomain="acme", email="a@b")
    cfg = ZendeskConfig(subdomain="acme", email="a@b", api_token="hunter2-token")
    assert "hunter2-token" not in repr(cfg)


# ---------------------------------------------------------------- fetch


@responses.activate
def test_fetch_ticket_names_the_group_and_asks_for_metric_sets(clock: FakeClock) -> None:
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments()
    t = make(clock).fetch_ticket("35436")
    assert t.group == "Tier 2" and t.version == "2011-05-05T10:38:52Z"
    assert parse_qs(urlsplit(responses.calls[-2].request.url).query)["include"] == ["metric_sets"]


@responses.activate
def test_fetch_ticket_latest_comment_is_the_newest_public_one_not_a_newer_note(
    clock: FakeClock,
) -> None:
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments(
        35436,
        comment(3, "Escalated to L2.", public=False, created_at="2026-03-11T14:59:00Z"),
        comment(2, "Can I talk to your manager?", public=True, created_at="2026-03-11T14:50:00Z"),
        comment(1, "The fire is very colorful.", public=True, created_at="2026-03-11T14:00:00Z"),
    )
    t = make(clock).fetch_ticket("35436")
    assert t.latest_comment == "Can I talk to your manager?"
    query = parse_qs(urlsplit(responses.calls[-1].request.url).query)
    assert query["sort_order"] == ["desc"] and int(query["per_page"][0]) > 1


@responses.activate
def test_fetch_ticket_without_a_public_comment_has_an_empty_latest_comment(
    clock: FakeClock,
) -> None:
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments(35436, comment(1, "internal only", public=False, created_at="2026-03-11T14:00:00Z"))
    assert make(clock).fetch_ticket("35436").latest_comment == ""


@responses.activate
def test_fetch_ticket_whose_comments_are_not_found_still_returns_the_ticket(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments(35436, status=404, json=ERROR_404)
    t = make(clock).fetch_ticket("35436")
    assert t.id == "35436" and t.latest_comment == ""
    assert "cannot read its comments" in caplog.text and TOKEN not in caplog.text


@responses.activate
def test_fetch_ticket_reads_no_comments_when_no_rule_reads_the_latest_comment(
    clock: FakeClock,
) -> None:
    # A due ticket's read is one call of the account's budget, not two (issue 16).
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments()
    connector = make(clock)
    connector.latest_comment_needed = False
    t = connector.fetch_ticket("35436")
    assert t.id == "35436" and t.latest_comment == ""
    assert not [c for c in responses.calls if "/comments.json" in c.request.url]


@responses.activate
def test_a_due_read_of_an_unchanged_ticket_reuses_the_latest_comment_it_knows(
    clock: FakeClock,
) -> None:
    # A new comment moves updated_at (the version): unchanged version, unchanged latest comment.
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments(35436, comment(1, "newer?", public=True, created_at="2026-03-11T14:00:00Z"))
    connector = make(clock)
    known = connector.fetch_ticket("35436").model_copy(update={"latest_comment": "known"})
    before = len(responses.calls)

    again = connector.refetch("35436", known)

    reads = [c.request.url for c in responses.calls[before:]]
    assert len(reads) == 1 and "/comments.json" not in reads[0]
    assert again.latest_comment == "known" and again.version == known.version


@responses.activate
def test_a_due_read_of_a_changed_ticket_reads_its_comments_again(clock: FakeClock) -> None:
    groups()
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments(35436, comment(2, "I want a manager", public=True, created_at="2026-03-11T15:00:00Z"))
    connector = make(clock)
    stale = Ticket(
        id="35436",
        instance="eu",
        created_at=datetime(2011, 5, 5, tzinfo=UTC),
        updated_at=datetime(2011, 5, 5, tzinfo=UTC),
        version="2011-05-05T09:00:00Z",
        latest_comment="old",
    )
    again = connector.refetch("35436", stale)
    assert again.latest_comment == "I want a manager"
    assert [c for c in responses.calls if "/comments.json" in c.request.url]


def test_processing_tells_the_connector_whether_a_rule_reads_the_latest_comment(
    clock: FakeClock,
) -> None:
    from escbridge.matrix import parse_matrix
    from escbridge.policy import Engine
    from escbridge.processing import Processor
    from escbridge.store import Store

    head = (
        "version: 1\nname: m\nlevels:\n  - {id: l1, name: One, groups: {'*': A}}\n"
        "  - {id: l2, name: Two, groups: {'*': B}}\n"
    )
    by_tag = head + "rules:\n  - {id: r, kind: hierarchical, when: {tags: [vip]}, to: l2}\n"
    by_word = head + "rules:\n  - {id: r, kind: hierarchical, when: {keywords: [boss]}, to: l2}\n"
    store = Store("sqlite://", check_schema=False)
    for text, needed in ((by_tag, False), (by_word, True)):
        connector = make(clock)
        Processor(store, Engine(parse_matrix(text, "m.yaml")), {"eu": connector})
        assert connector.latest_comment_needed is needed


@responses.activate
def test_fetch_missing_ticket_raises_not_found(clock: FakeClock) -> None:
    groups()
    responses.get(f"{BASE}/tickets/1.json", status=404, json=ERROR_404)
    with pytest.raises(NotFound) as info:
        make(clock).fetch_ticket("1")
    assert info.value.code == "RecordNotFound"


# ---------------------------------------------------------------- apply


@responses.activate
def test_apply_is_one_safe_put_with_private_note_and_no_id(clock: FakeClock) -> None:
    groups()
    responses.put(
        f"{BASE}/tickets/35436.json",
        json={"ticket": ticket(updated_at="2026-03-11T15:00:01Z"), "audit": {}},
    )
    result = make(clock).apply(fetched(tags=["vip", "escbridge_l1"]), ESCALATE)
    assert result == ApplyResult("35436", ok=True, actions=ESCALATE, version="2026-03-11T15:00:01Z")
    (put,) = puts("/tickets/35436.json")
    assert body_of(put) == {
        "ticket": {
            "group_id": 98738,
            "priority": "urgent",
            "comment": {"body": ESCALATE.note, "public": False},
            "tags": ["escbridge_l2", "vip"],
            "safe_update": True,
            "updated_stamp": "2011-05-05T10:38:52Z",
        }
    }


@responses.activate
def test_apply_logs_the_keys_zendesk_ignored_with_the_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """``x-zendesk-api-warn`` as recorded on a real single PUT (facetoe/zenpy update-single
    cassette) is logged at WARNING with the method and path it answered, no secrets."""
    warn = (
        '{:allowed_parameters=>{:controller=>"tickets", :action=>"update", '
        ':unpermitted_keys=>["ticket.id"], :invalid_values=>[]}}'
    )
    groups()
    responses.put(
        f"{BASE}/tickets/35436.json",
        json={"ticket": ticket(updated_at="2026-03-11T15:00:01Z"), "audit": {}},
        headers={"x-zendesk-api-warn": warn},
    )
    caplog.set_level(logging.WARNING, logger="escbridge_zendesk")
    assert make(clock).apply(fetched(), ESCALATE).ok
    (record,) = [r for r in caplog.records if "x-zendesk-api-warn" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "PUT /api/v2/tickets/35436.json" in message
    assert 'unpermitted_keys=>["ticket.id"]' in message
    assert TOKEN not in caplog.text


@responses.activate
def test_apply_conflict_without_callback_raises_for_the_caller(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=409, json=ERROR_409)
    with pytest.raises(Conflict):
        make(clock).apply(fetched(), ESCALATE)
    assert len(puts("/tickets/35436.json")) == 1  # a 409 is never blindly retried


@responses.activate
def test_apply_conflict_refetches_redecides_and_keeps_the_tag_a_human_added(
    clock: FakeClock,
) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=409, json=ERROR_409)
    responses.put(
        f"{BASE}/tickets/35436.json", json={"ticket": ticket(updated_at="2026-03-11T15:00:09Z")}
    )
    fresh = ticket(
        tags=["vip", "escbridge_l1", "added_by_hannah"], updated_at="2026-03-11T15:00:05Z"
    )
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": fresh})
    comments()
    seen: list[Ticket] = []

    def redecide(t: Ticket) -> Actions:
        seen.append(t)
        return ESCALATE

    result = make(clock).apply(
        fetched(tags=["vip", "escbridge_l1"]), ESCALATE, on_conflict=redecide
    )
    assert result.ok and result.conflicts == 1 and result.version == "2026-03-11T15:00:09Z"
    assert [t.version for t in seen] == ["2026-03-11T15:00:05Z"]
    _, second = puts("/tickets/35436.json")
    assert body_of(second)["ticket"]["updated_stamp"] == "2026-03-11T15:00:05Z"
    assert body_of(second)["ticket"]["tags"] == ["added_by_hannah", "escbridge_l2", "vip"]


@responses.activate
def test_apply_conflict_where_redecision_says_nothing_left_to_do(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=409, json=ERROR_409)
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket(status="solved")})
    comments()
    result = make(clock).apply(fetched(), ESCALATE, on_conflict=lambda t: None)
    assert result.ok and result.skipped and result.conflicts == 1
    assert len(puts("/tickets/35436.json")) == 1


@responses.activate
def test_apply_conflict_retries_are_bounded_then_reported_retryable(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=409, json=ERROR_409)
    responses.get(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    comments()
    result = make(clock, conflict_retries=2).apply(
        fetched(), ESCALATE, on_conflict=lambda t: ESCALATE
    )
    assert not result.ok and result.conflict and result.retryable and result.conflicts == 3
    assert len(puts("/tickets/35436.json")) == 3  # the first write and two retries


@responses.activate
def test_apply_unknown_group_fails_clearly_without_writing(clock: FakeClock) -> None:
    groups()
    result = make(clock).apply(fetched(), ESCALATE.model_copy(update={"group": "Tier 9"}))
    assert not result.ok and not result.retryable
    assert result.error is not None and "no group named 'Tier 9'" in result.error
    assert "Support, Tier 2" in result.error
    assert puts("/tickets") == []


@responses.activate
def test_apply_validation_error_becomes_a_failed_result_with_the_field(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=422, json=ERROR_422_CLOSED)
    result = make(clock).apply(fetched(), ESCALATE)
    assert not result.ok and result.error == "status: Status: closed prevents ticket update"


@responses.activate
def test_apply_on_a_deleted_ticket(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/35436.json", status=404, json=ERROR_404)
    result = make(clock).apply(fetched(), ESCALATE)
    assert not result.ok and "not found" in (result.error or "")


@responses.activate
def test_apply_without_a_stamp_adds_tags_and_falls_back_to_the_tags_api(clock: FakeClock) -> None:
    groups()
    # The single PUT ignored additional_tags/remove_tags (undocumented either way).
    responses.put(
        f"{BASE}/tickets/35436.json", json={"ticket": ticket(tags=["vip", "escbridge_l1"])}
    )
    responses.put(
        f"{BASE}/tickets/35436/tags.json", json={"tags": ["vip", "escbridge_l1", "escbridge_l2"]}
    )
    responses.delete(f"{BASE}/tickets/35436/tags.json", json={"tags": ["vip", "escbridge_l2"]})
    unstamped = fetched(tags=["vip", "escbridge_l1"]).model_copy(update={"version": None})
    assert make(clock).apply(unstamped, ESCALATE).ok
    put = body_of(puts("/tickets/35436.json")[0])["ticket"]
    assert put["additional_tags"] == ["escbridge_l2"] and put["remove_tags"] == ["escbridge_l1"]
    assert "tags" not in put and "safe_update" not in put
    assert body_of(puts("/tickets/35436/tags.json")[0]) == {"tags": ["escbridge_l2"]}
    delete = [c for c in responses.calls if c.request.method == "DELETE"]
    assert body_of(delete[0]) == {"tags": ["escbridge_l1"]}


@responses.activate
def test_apply_without_a_stamp_when_the_put_honours_additional_tags(clock: FakeClock) -> None:
    groups()
    responses.put(
        f"{BASE}/tickets/35436.json", json={"ticket": ticket(tags=["vip", "escbridge_l2"])}
    )
    unstamped = fetched(tags=["vip", "escbridge_l1"]).model_copy(update={"version": None})
    assert make(clock).apply(unstamped, ESCALATE).ok
    assert len(responses.calls) == 2  # groups + the one PUT: no Tags API call needed


@responses.activate
def test_customer_update_next_to_a_note_is_a_second_public_comment(clock: FakeClock) -> None:
    groups()
    responses.put(
        f"{BASE}/tickets/35436.json", json={"ticket": ticket(updated_at="2026-03-11T15:00:01Z")}
    )
    responses.put(
        f"{BASE}/tickets/35436.json", json={"ticket": ticket(updated_at="2026-03-11T15:00:02Z")}
    )
    actions = ESCALATE.model_copy(update={"customer_update": "A specialist is on it."})
    result = make(clock).apply(fetched(), actions)
    first, second = (body_of(c)["ticket"] for c in puts("/tickets/35436.json"))
    assert first["comment"] == {"body": ESCALATE.note, "public": False}
    assert second["comment"] == {"body": "A specialist is on it.", "public": True}
    assert second["updated_stamp"] == "2026-03-11T15:00:01Z"
    assert result.version == "2026-03-11T15:00:02Z"


@responses.activate
def test_throttled_put_waits_retry_after_then_succeeds(clock: FakeClock) -> None:
    groups()
    responses.put(
        f"{BASE}/tickets/35436.json",
        status=429,
        body=THROTTLED_TEXT,
        content_type="text/plain",
        headers={"Retry-After": "17"},
    )
    responses.put(f"{BASE}/tickets/35436.json", json={"ticket": ticket()})
    conn = make(clock)
    assert conn.apply(fetched(), ESCALATE).ok
    assert 17 <= clock.sleeps[0] <= 17.25
    assert conn.api.client.stats.throttled == 1


# ---------------------------------------------------------------- apply_many


def batch_items(n: int, start: int = 1) -> list[tuple[Ticket, Actions]]:
    return [
        (fetched(id=i, updated_at=f"2026-03-11T14:00:{i % 60:02d}Z"), ESCALATE)
        for i in range(start, start + n)
    ]


def job_callback(request: Any) -> tuple[int, dict[str, str], str]:
    tickets = json.loads(request.body)["tickets"]
    results = [
        {"action": "update", "status": "Updated", "success": True, "id": t["id"]}
        for t in reversed(tickets)
    ]  # order of results is not the order sent
    job_callback.jobs.append(results)  # type: ignore[attr-defined]
    body = json.loads(json.dumps(JOB_QUEUED))
    body["job_status"]["id"] = f"job{len(job_callback.jobs)}"  # type: ignore[attr-defined]
    return 200, {}, json.dumps(body)


def job_status_callback(request: Any) -> tuple[int, dict[str, str], str]:
    number = int(re.search(r"job(\d+)", request.url).group(1))  # type: ignore[union-attr]
    results = job_callback.jobs[number - 1]  # type: ignore[attr-defined]
    return 200, {}, json.dumps(job("completed", results, id=f"job{number}", progress=100))


@responses.activate
def test_apply_many_batches_at_most_100_and_maps_results_back(clock: FakeClock) -> None:
    job_callback.jobs = []  # type: ignore[attr-defined]
    groups()
    responses.add_callback(responses.PUT, f"{BASE}/tickets/update_many.json", callback=job_callback)
    responses.add_callback(
        responses.GET, re.compile(rf"{BASE}/job_statuses/.*"), callback=job_status_callback
    )
    items = batch_items(250)
    results = make(clock).apply_many(items)
    assert [r.ticket_id for r in results] == [t.id for t, _ in items]
    assert all(r.ok for r in results)
    calls = puts("/tickets/update_many.json")
    assert [len(body_of(c)["tickets"]) for c in calls] == [100, 100, 50]
    first = body_of(calls[0])["tickets"][0]
    assert first["id"] == 1 and first["safe_update"] is True
    assert first["updated_stamp"] == "2026-03-11T14:00:01Z"  # each ticket's own stamp
    assert first["comment"] == {"body": ESCALATE.note, "public": False}
    total_calls = len(responses.calls)
    assert total_calls < len(items)  # bulk: far fewer calls than one per ticket


@responses.activate
def test_apply_many_polls_until_the_job_completes(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/update_many.json", json=JOB_QUEUED)
    url = f"{BASE}/job_statuses/V3-47ed1567a1b2.json"
    responses.get(url, json=job("queued"))
    responses.get(url, json=job("working", progress=1, message="Updating ticket #1"))
    ok = [{"action": "update", "status": "Updated", "success": True, "id": i} for i in (1, 2, 3)]
    responses.get(url, json=job("completed", ok, progress=3))
    results = make(clock).apply_many(batch_items(3))
    assert all(r.ok for r in results)
    assert len([c for c in responses.calls if "job_statuses" in c.request.url]) == 3
    assert clock.sleeps == [0.1, 0.2, 0.4]  # backing off between polls, never a busy loop


@responses.activate
def test_apply_many_reports_failed_missing_and_conflicting_tickets(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/update_many.json", json=JOB_QUEUED)
    results_body = [
        {"action": "update", "status": "Updated", "success": True, "id": 1},
        {
            "id": 2,
            "error": "RecordInvalid",
            "details": "Status: closed prevents ticket update",
            "status": "Failed",
            "success": False,
        },
        {
            "id": 3,
            "error": "UpdateConflict",
            "details": "Safe Update prevented the update",
            "status": "Failed",
            "success": False,
        },
    ]
    responses.get(f"{BASE}/job_statuses/V3-47ed1567a1b2.json", json=job("completed", results_body))
    items = [*batch_items(3), (fetched(id=4), ESCALATE)]
    r1, r2, r3, r4 = make(clock).apply_many(items)
    assert r1.ok
    assert not r2.ok and not r2.retryable and "closed prevents" in (r2.error or "")
    assert not r3.ok and r3.conflict and r3.retryable
    assert not r4.ok and r4.retryable and "missing from the results" in (r4.error or "")


@responses.activate
def test_apply_many_conflict_is_redecided_one_by_one_with_the_callback(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/update_many.json", json=JOB_QUEUED)
    results_body = [
        {"action": "update", "status": "Updated", "success": True, "id": 1},
        {"id": 2, "error": "UpdateConflict", "status": "Failed", "success": False},
    ]
    responses.get(f"{BASE}/job_statuses/V3-47ed1567a1b2.json", json=job("completed", results_body))
    responses.get(
        f"{BASE}/tickets/2.json", json={"ticket": ticket(id=2, updated_at="2026-03-11T15:30:00Z")}
    )
    comments(2)
    responses.put(f"{BASE}/tickets/2.json", json={"ticket": ticket(id=2)})
    r1, r2 = make(clock).apply_many(batch_items(2), on_conflict=lambda t: ESCALATE)
    assert r1.ok and r2.ok and r2.conflicts == 1
    assert body_of(puts("/tickets/2.json")[0])["ticket"]["updated_stamp"] == "2026-03-11T15:30:00Z"


@responses.activate
def test_apply_many_failed_job_is_retryable_for_every_ticket(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/update_many.json", json=JOB_QUEUED)
    responses.get(
        f"{BASE}/job_statuses/V3-47ed1567a1b2.json",
        json=job("failed", message="Job failed: internal error"),
    )
    results = make(clock).apply_many(batch_items(2))
    assert all(not r.ok and r.retryable and "failed" in (r.error or "") for r in results)


@responses.activate
def test_apply_many_failed_job_reads_per_item_results_mapped_by_index(clock: FakeClock) -> None:
    """A real failed job (zendesk-java-client issue #98): status "failed", and the failed
    entry carries only its ``index`` in the batch. The ticket that did update is done (not
    re-sent); the one that failed validation fails with Zendesk's reason, not retried."""
    groups()
    responses.put(f"{BASE}/tickets/update_many.json", json=JOB_QUEUED)
    results_body = [
        {"index": 0, "error": "TicketCreateFailed", "details": "Description: cannot be blank"},
        {"action": "update", "status": "Updated", "success": True, "id": 2},
    ]
    responses.get(f"{BASE}/job_statuses/V3-47ed1567a1b2.json", json=job("failed", results_body))
    r1, r2 = make(clock).apply_many(batch_items(2))
    assert not r1.ok and not r1.retryable
    assert r1.error == "TicketCreateFailed: Description: cannot be blank"
    assert r2.ok
    assert len(puts("/tickets/update_many.json")) == 1
    assert puts("/tickets/1.json") == [] and puts("/tickets/2.json") == []


@responses.activate
def test_apply_many_sizes_batches_to_the_announced_update_budget(clock: FakeClock) -> None:
    job_callback.jobs = []  # type: ignore[attr-defined]
    groups()
    responses.put(
        f"{BASE}/tickets/1.json",
        json={"ticket": ticket(id=1)},
        headers={"zendesk-rate-limit-tickets-update": "total=100; remaining=30; resets=50"},
    )
    responses.add_callback(responses.PUT, f"{BASE}/tickets/update_many.json", callback=job_callback)
    responses.add_callback(
        responses.GET, re.compile(rf"{BASE}/job_statuses/.*"), callback=job_status_callback
    )
    conn = make(clock)
    conn.apply(fetched(id=1), ESCALATE)
    conn.apply_many(batch_items(50, start=2))
    sizes = [len(body_of(c)["tickets"]) for c in puts("/update_many.json")]
    assert sizes[0] == 30  # what was left of the window, so the batch is not refused


@responses.activate
def test_apply_many_single_item_is_a_plain_put(clock: FakeClock) -> None:
    groups()
    responses.put(f"{BASE}/tickets/5.json", json={"ticket": ticket(id=5)})
    (result,) = make(clock).apply_many(batch_items(1, start=5))
    assert result.ok and puts("update_many") == []


# ---------------------------------------------------------------- iter_tickets


def export_page(ids: list[int], cursor: str, end: bool, status: str = "open") -> dict[str, Any]:
    return {
        "tickets": [ticket(id=i, status=status, generated_timestamp=1700000000 + i) for i in ids],
        "after_url": f"{BASE}/incremental/tickets/cursor.json?cursor={cursor}",
        "before_url": None,
        "after_cursor": cursor,
        "before_cursor": None,
        "end_of_stream": end,
    }


@responses.activate
def test_incremental_export_pages_until_end_of_stream_and_skips_closed(clock: FakeClock) -> None:
    groups()
    url = f"{BASE}/incremental/tickets/cursor.json"
    page1 = export_page([1, 2], "c1", False)
    page1["tickets"].append(ticket(id=3, status="closed"))
    page1["tickets"].append(ticket(id=4, status="deleted"))
    responses.get(url, json=page1)
    responses.get(url, json=export_page([5], "c2", True))
    since = NOW - timedelta(hours=2)
    pages = list(make(clock).iter_tickets(since, None))
    assert [[t.id for t in p.tickets] for p in pages] == [["1", "2"], ["5"]]
    assert [p.cursor for p in pages] == ["inc:c1", "inc:c2"]
    assert [p.done for p in pages] == [False, True]
    q1, q2 = (parse_qs(urlsplit(c.request.url).query) for c in responses.calls[1:])
    assert q1["start_time"] == [str(int(since.timestamp()))]
    assert q2["cursor"] == ["c1"] and "start_time" not in q2


@responses.activate
def test_incremental_start_time_is_never_inside_the_last_minute(clock: FakeClock) -> None:
    groups()
    responses.get(f"{BASE}/incremental/tickets/cursor.json", json=export_page([], "c0", True))
    list(make(clock).iter_tickets(NOW - timedelta(seconds=5), None))
    query = parse_qs(urlsplit(responses.calls[-1].request.url).query)
    assert int(query["start_time"][0]) == int((NOW - timedelta(seconds=60)).timestamp())


@responses.activate
def test_incremental_too_recent_start_time_error_steps_back(clock: FakeClock) -> None:
    groups()
    url = f"{BASE}/incremental/tickets/cursor.json"
    responses.get(
        url, status=422, json={"error": "InvalidValue", "description": "Too recent start_time."}
    )
    responses.get(url, json=export_page([1], "c1", True))
    (page,) = make(clock).iter_tickets(NOW, None)
    assert [t.id for t in page.tickets] == ["1"]
    query = parse_qs(urlsplit(responses.calls[-1].request.url).query)
    assert int(query["start_time"][0]) == int((NOW - timedelta(seconds=120)).timestamp())


@responses.activate
def test_incremental_resumes_from_a_saved_cursor(clock: FakeClock) -> None:
    groups()
    responses.get(f"{BASE}/incremental/tickets/cursor.json", json=export_page([9], "c9", True))
    (page,) = make(clock).iter_tickets(None, "inc:c8")
    assert page.cursor == "inc:c9"
    assert parse_qs(urlsplit(responses.calls[-1].request.url).query)["cursor"] == ["c8"]


@responses.activate
def test_incremental_keeps_to_ten_requests_a_minute(clock: FakeClock) -> None:
    groups()
    url = f"{BASE}/incremental/tickets/cursor.json"
    for n in range(11):
        responses.get(url, json=export_page([n + 1], f"c{n}", n == 10))
    pages = list(make(clock).iter_tickets(None, None))
    assert len(pages) == 11
    assert clock.sleeps == [60.0]  # the 11th request waited for the minute to pass


@responses.activate
def test_non_admin_token_falls_back_to_search_and_slides_past_the_1000_cap(
    clock: FakeClock,
) -> None:
    groups()
    responses.get(
        f"{BASE}/incremental/tickets/cursor.json",
        status=403,
        json={"error": "Forbidden", "description": "You do not have access"},
    )
    served: list[str] = []

    def search(request: Any) -> tuple[int, dict[str, str], str]:
        q = parse_qs(urlsplit(request.url).query)
        served.append(q["query"][0])
        page = int(q["page"][0])
        assert q["sort_by"] == ["updated_at"] and q["sort_order"] == ["asc"]
        first_window = len({s for s in served}) == 1
        if page * 100 > 1000:
            return 422, {}, json.dumps(ERROR_SEARCH_CAP)
        if first_window:
            stamp = f"2026-03-10T16:{page:02d}:00Z"
            results = [
                {**ticket(id=page * 1000 + i, updated_at=stamp), "result_type": "ticket"}
                for i in range(100)
            ]
            return (
                200,
                {},
                json.dumps(
                    {
                        "results": results,
                        "count": 1500,
                        "next_page": f"{BASE}/search.json?page={page + 1}",
                    }
                ),
            )
        results = [
            {**ticket(id=50000 + i, updated_at="2026-03-10T17:00:00Z"), "result_type": "ticket"}
            for i in range(20)
        ]
        return 200, {}, json.dumps({"results": results, "count": 20, "next_page": None})

    responses.add_callback(responses.GET, f"{BASE}/search.json", callback=search)
    pages = list(make(clock).iter_tickets(NOW - timedelta(days=1), None))
    assert sum(len(p.tickets) for p in pages) == 1020
    assert pages[-1].done and not any(p.done for p in pages[:-1])
    windows = list(dict.fromkeys(served))
    assert windows == [
        "type:ticket status<solved updated>=2026-03-10T15:00:00Z",
        "type:ticket status<solved updated>=2026-03-10T16:10:00Z",  # from the last seen
    ]
    assert pages[-1].cursor == "search:2026-03-10T17:00:00Z"


@responses.activate
def test_search_mode_keeps_only_open_tickets_and_resumes_from_its_cursor(clock: FakeClock) -> None:
    groups()
    results = [
        {**ticket(id=1, status="open"), "result_type": "ticket"},
        {**ticket(id=2, status="solved"), "result_type": "ticket"},
        {"id": 3, "result_type": "user"},
    ]
    responses.get(f"{BASE}/search.json", json={"results": results, "count": 2, "next_page": None})
    (page,) = make(clock, sync="search").iter_tickets(None, "search:2026-03-01T00:00:00Z")
    assert [t.id for t in page.tickets] == ["1"]
    query = parse_qs(urlsplit(responses.calls[-1].request.url).query)["query"][0]
    assert "updated>=2026-03-01T00:00:00Z" in query


@responses.activate
def test_forced_incremental_does_not_fall_back(clock: FakeClock) -> None:
    groups()
    responses.get(
        f"{BASE}/incremental/tickets/cursor.json", status=403, json={"error": "Forbidden"}
    )
    with pytest.raises(PermissionDeniedError):
        list(make(clock, sync="incremental").iter_tickets(None, None))


@responses.activate
def test_search_steps_past_a_second_holding_more_than_1000_tickets(clock: FakeClock) -> None:
    groups()
    queries: list[str] = []

    def search(request: Any) -> tuple[int, dict[str, str], str]:
        q = parse_qs(urlsplit(request.url).query)
        queries.append(q["query"][0])
        if "updated>=2026-03-10T15:00:00Z" in q["query"][0]:
            results = [
                {**ticket(id=i, updated_at="2026-03-10T15:00:00Z"), "result_type": "ticket"}
                for i in range(100)
            ]
            return 200, {}, json.dumps({"results": results, "count": 5000, "next_page": "more"})
        return 200, {}, json.dumps({"results": [], "count": 0, "next_page": None})

    responses.add_callback(responses.GET, f"{BASE}/search.json", callback=search)
    pages = list(make(clock, sync="search").iter_tickets(NOW - timedelta(days=1), None))
    assert pages[-1].done
    assert queries[-1] == "type:ticket status<solved updated>=2026-03-10T15:00:01Z"  # no loop
