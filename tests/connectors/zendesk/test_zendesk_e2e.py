"""End to end: the connector against its sandbox, served as a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET, ZendeskSandbox
from flask import Flask, request

from escbridge.cli.connectors import run_check
from escbridge.connector import Runtime
from escbridge.errors import WebhookAuthError
from escbridge.model import Actions, Priority, TicketEvent
from escbridge.sandbox import ServerThread, serve
from escbridge.testing import FakeClock

ADMIN = {"email": "escbridge@sandbox.example", "api_token": "sandbox-admin-token"}
AGENT = {"email": "agent@sandbox.example", "api_token": "sandbox-agent-token"}
L2 = Actions(
    group="Tier 2",
    priority=Priority.HIGH,
    note="Escalated to L2 (no first reply within 4 business hours).",
    tags_add=("escbridge_l2",),
    level="l2",
)
PAST = datetime.now(UTC) - timedelta(hours=3)


@pytest.fixture
def sandbox() -> Iterator[tuple[ZendeskSandbox, ServerThread]]:
    sb = ZendeskSandbox()
    with serve(sb.app) as server:
        yield sb, server
    sb.webhooks.close()


def connect(url: str, **settings: Any) -> ZendeskConnector:
    values = {
        "base_url": url,
        "sandbox": True,
        **ADMIN,
        "webhook_secret": TEST_SIGNING_SECRET,
        **settings,
    }
    return ZendeskConnector(ZendeskConfig.model_validate(values), instance="eu")


def test_check_against_the_sandbox(sandbox: tuple[ZendeskSandbox, ServerThread]) -> None:
    _, server = sandbox
    report = connect(server.url).check(["Tier 2", "Managers"])
    assert report.ok, report
    assert "(user 9001, admin)" in report.identity
    missing = connect(server.url).check(["Tier 2", "Tier 3"])
    assert missing.missing_groups == ("Tier 3",)
    bad = connect(server.url, api_token="wrong-token-value").check([])
    assert not bad.ok and "401" in bad.problems[0] and "wrong-token-value" not in bad.problems[0]


def test_escbridge_check_command_tells_the_admin_what_is_wrong(
    sandbox: tuple[ZendeskSandbox, ServerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = sandbox
    monkeypatch.setenv("ZENDESK_API_TOKEN", "sandbox-admin-token")
    monkeypatch.setenv("ZENDESK_WEBHOOK_SECRET", TEST_SIGNING_SECRET)
    (tmp_path / "escbridge.yaml").write_text(
        "matrix: matrix.yaml\n"
        "instances:\n"
        "  support-eu:\n"
        "    type: zendesk\n"
        f"    base_url: {server.url}\n"
        "    email: escbridge@sandbox.example\n"
        "    api_token: ${ZENDESK_API_TOKEN}\n"
        "    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}\n"
        "    sandbox: true\n",
        encoding="utf-8",
    )
    (tmp_path / "matrix.yaml").write_text("this is: [not a matrix\n", encoding="utf-8")
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=[])
    out = io.StringIO()
    assert run_check(args, out=out) == 1
    text = out.getvalue()
    assert "connected as escbridge <escbridge@sandbox.example>" in text
    assert "matrix is invalid" in text and "NOT READY" in text
    assert "sandbox-admin-token" not in text and TEST_SIGNING_SECRET not in text

    monkeypatch.setenv("ZENDESK_API_TOKEN", "revoked-token")
    out = io.StringIO()
    assert run_check(args, out=out) == 1
    assert "rejected the credentials" in out.getvalue()
    assert "revoked-token" not in out.getvalue()

    monkeypatch.delenv("ZENDESK_API_TOKEN")
    out = io.StringIO()
    assert run_check(args, out=out) == 2
    assert (
        "escbridge.yaml:7 instances.support-eu.api_token: environment variable "
        "ZENDESK_API_TOKEN is not set" in out.getvalue()
    )


def test_an_escalation_lands_as_one_update_with_a_private_note(
    sandbox: tuple[ZendeskSandbox, ServerThread],
) -> None:
    sb, server = sandbox
    created = sb.create_ticket(subject="Checkout broken", tags=["vip"], at=PAST)
    conn = connect(server.url)
    ticket = conn.fetch_ticket(str(created["id"]))
    result = conn.apply(ticket, L2)
    assert result.ok and result.version != ticket.version
    after = conn.fetch_ticket(ticket.id)
    assert (after.group, after.priority, after.level) == ("Tier 2", Priority.HIGH, "l2")
    assert after.tags == {"vip", "escbridge_l2"}
    comments = requests.get(
        f"{server.url}/api/v2/tickets/{ticket.id}/comments.json",
        auth=("escbridge@sandbox.example/token", "sandbox-admin-token"),
        timeout=5,
    ).json()["comments"]
    assert comments[-1]["body"] == L2.note and comments[-1]["public"] is False
    assert sb.api_warnings == []  # never sent ticket.id or unknown keys
    assert sb.stats.by_endpoint["/api/v2/tickets/<int:ticket_id>.json"] == 3  # get, put, get


def test_latest_comment_is_the_newest_public_reply_never_an_internal_note(
    sandbox: tuple[ZendeskSandbox, ServerThread],
) -> None:
    sb, server = sandbox
    reply = "This is unacceptable, can I talk to your manager?"
    created = sb.create_ticket(at=PAST, comments=[{"body": reply}])
    conn = connect(server.url)
    ticket = conn.fetch_ticket(str(created["id"]))
    assert ticket.latest_comment == reply
    assert conn.apply(ticket, L2).ok  # adds an internal note, now the newest comment
    assert conn.fetch_ticket(ticket.id).latest_comment == reply
    sb.human_update(created["id"], comment={"body": "Thanks!", "author_id": sb.CUSTOMER_ID})
    assert conn.fetch_ticket(ticket.id).latest_comment == "Thanks!"
    newest = requests.get(
        f"{server.url}/api/v2/tickets/{ticket.id}/comments.json",
        params={"sort_order": "desc", "per_page": 2},
        auth=("escbridge@sandbox.example/token", "sandbox-admin-token"),
        timeout=5,
    ).json()
    assert [c["public"] for c in newest["comments"]] == [True, False]
    assert newest["count"] == 4 and newest["next_page"] and newest["previous_page"] is None
    assert {"id", "type", "author_id", "body", "html_body", "plain_body", "created_at"} <= set(
        newest["comments"][0]
    )


def test_a_human_edit_in_between_is_kept_and_the_decision_is_retaken(
    sandbox: tuple[ZendeskSandbox, ServerThread],
) -> None:
    sb, server = sandbox
    created = sb.create_ticket(tags=["vip"], at=PAST)
    conn = connect(server.url)
    stale = conn.fetch_ticket(str(created["id"]))
    sb.human_update(created["id"], additional_tags=["hannah_looked"])
    decided: list[frozenset[str]] = []

    def redecide(fresh: Any) -> Actions:
        decided.append(fresh.tags)
        return L2

    result = conn.apply(stale, L2, on_conflict=redecide)
    assert result.ok and result.conflicts == 1
    assert decided == [frozenset({"vip", "hannah_looked"})]
    assert set(sb.ticket(created["id"])["tags"]) == {"vip", "hannah_looked", "escbridge_l2"}


def test_bulk_escalation_uses_update_many_and_job_statuses() -> None:
    sb = ZendeskSandbox(update_limit=1000)  # each ticket of a job costs one update
    sb.seed(230, lambda i: {"subject": f"t{i}", "at": PAST + timedelta(seconds=i)})
    with serve(sb.app) as server:
        conn = connect(server.url)
        items = [(conn.fetch_ticket(str(i)), L2) for i in range(1, 231)]
        before = sb.stats.requests
        results = conn.apply_many(items)
    assert all(r.ok for r in results) and len(results) == 230
    assert sb.stats.by_endpoint["/api/v2/tickets/update_many.json"] == 3
    assert sb.stats.requests - before < 230 / 10  # bulk: a handful of calls
    assert all("escbridge_l2" in sb.ticket(i)["tags"] for i in range(1, 231))
    assert sb.ticket(1)["_comments"][-1]["public"] is False


def test_a_failed_job_with_index_only_entries_fails_one_ticket_and_keeps_the_rest() -> None:
    """The real failed-job shape (zendesk-java-client issue #98): status "failed", the failed
    entry carries only its ``index``. The closed ticket fails with Zendesk's reason and is not
    retried; the others are done and not sent again."""
    sb = ZendeskSandbox(job_failures_by_index=True)
    sb.seed(3, lambda i: {"subject": f"t{i}", "at": PAST + timedelta(seconds=i)})
    sb.create_ticket(subject="closed", status="closed", at=PAST)
    with serve(sb.app) as server:
        conn = connect(server.url)
        items = [(conn.fetch_ticket(str(i)), L2) for i in (1, 4, 2, 3)]
        results = conn.apply_many(items)
        assert any(j["status"] == "failed" for j in sb.jobs.values())
    by_id = {r.ticket_id: r for r in results}
    assert all(by_id[i].ok for i in ("1", "2", "3"))
    assert not by_id["4"].ok and not by_id["4"].retryable
    assert "closed prevents ticket update" in (by_id["4"].error or "")
    assert sb.stats.by_endpoint["/api/v2/tickets/update_many.json"] == 1
    assert [c["public"] for c in sb.ticket(1)["_comments"][1:]] == [False]  # one note, once


def test_incremental_sync_holds_back_the_last_minute_and_resumes_from_its_cursor() -> None:
    wall = FakeClock(datetime.now(UTC))
    sb = ZendeskSandbox(wall_clock=lambda: wall().timestamp())
    sb.seed(5, lambda i: {"at": wall() - timedelta(hours=1, seconds=-i)})
    sb.create_ticket(subject="just now")  # inside Zendesk's one-minute lag
    sb.create_ticket(subject="already solved", status="solved", at=wall() - timedelta(hours=1))
    with serve(sb.app) as server:
        cfg = ZendeskConfig.model_validate({"base_url": server.url, "sandbox": True, **ADMIN})
        conn = ZendeskConnector(cfg, instance="eu", utcnow=wall)
        pages = list(conn.iter_tickets(None, None))
        assert [t.id for p in pages for t in p.tickets] == ["1", "2", "3", "4", "5"]
        cursor = pages[-1].cursor
        assert pages[-1].done and cursor is not None and cursor.startswith("inc:")
        wall.advance(seconds=61)
        (page,) = conn.iter_tickets(None, cursor)
        assert [t.subject for t in page.tickets] == ["just now"]


def test_agent_token_syncs_through_search_beyond_1000_results(
    sandbox: tuple[ZendeskSandbox, ServerThread],
) -> None:
    sb, server = sandbox
    sb.seed(1050, lambda i: {"at": PAST + timedelta(seconds=i), "status": "open"})
    conn = connect(server.url, **AGENT)
    seen = [t.id for p in conn.iter_tickets(PAST - timedelta(minutes=1), None) for t in p.tickets]
    assert set(seen) == {str(i) for i in range(1, 1051)}
    assert sb.stats.by_endpoint["/api/v2/incremental/tickets/cursor.json"] == 1  # 403, once
    assert sb.stats.throttled == 0


def test_updates_are_paced_by_the_announced_limit_and_429s_are_survived() -> None:
    sb = ZendeskSandbox(update_limit=3, window_seconds=1.0, account_limit=40)
    sb.seed(6, lambda i: {"at": PAST})
    with serve(sb.app) as server:
        conn = connect(server.url)
        tickets = [conn.fetch_ticket(str(i)) for i in range(1, 7)]
        started = time.monotonic()
        results = [conn.apply(t, L2) for t in tickets]
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert elapsed >= 0.9  # six updates at three a second cannot take less than a window
    stats = conn.api.client.stats
    assert stats.paced_seconds > 0 or stats.throttled > 0
    assert sb.stats.throttled == stats.throttled


def test_sandbox_error_shapes(sandbox: tuple[ZendeskSandbox, ServerThread]) -> None:
    sb, server = sandbox
    auth = ("escbridge@sandbox.example/token", "sandbox-admin-token")
    api = f"{server.url}/api/v2"
    missing = requests.get(f"{api}/tickets/999.json", auth=auth, timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"error": "RecordNotFound", "description": "Not found"}
    sb.create_ticket(at=PAST)
    bad = requests.put(
        f"{api}/tickets/1.json", json={"ticket": {"priority": "asap"}}, auth=auth, timeout=5
    )
    assert bad.status_code == 422 and bad.json()["details"]["priority"]
    denied = requests.get(f"{api}/groups.json", auth=("x@y/token", "nope"), timeout=5)
    assert denied.status_code == 401 and "WWW-Authenticate" in denied.headers
    many = requests.put(
        f"{api}/tickets/update_many.json",
        auth=auth,
        timeout=5,
        json={"tickets": [{"id": i} for i in range(101)]},
    )
    assert many.status_code == 400 and many.json()["error"] == "TooManyValues"
    tight = ZendeskSandbox(account_limit=1)
    with serve(tight.app) as srv:
        requests.get(f"{srv.url}/api/v2/users/me.json", auth=auth, timeout=5)
        throttled = requests.get(f"{srv.url}/api/v2/users/me.json", auth=auth, timeout=5)
    assert throttled.status_code == 429
    assert throttled.headers["Content-Type"].startswith("text/plain")
    assert throttled.text == "Number of allowed API requests per minute exceeded"
    assert int(throttled.headers["Retry-After"]) >= 1


def receiver(conn: ZendeskConnector) -> tuple[Flask, list[TicketEvent], list[str]]:
    """The shape of the real webhook receiver: verify, parse, hand over."""
    app = Flask("test-receiver")
    events: list[TicketEvent] = []
    refused: list[str] = []

    @app.post("/webhooks/eu")
    def hook() -> tuple[str, int]:
        body = request.get_data()
        headers = dict(request.headers)
        try:
            conn.verify_webhook(headers, body, dict(request.args))
        except WebhookAuthError as exc:
            refused.append(str(exc))
            return "", 401
        events.extend(conn.parse_webhook(headers, body))
        return "", 202

    return app, events, refused


@pytest.mark.parametrize("mode", ["events", "trigger"])
def test_signed_webhooks_on_every_change_and_own_changes_recognised(
    sandbox: tuple[ZendeskSandbox, ServerThread], mode: str
) -> None:
    sb, server = sandbox
    conn = connect(server.url)
    app, events, refused = receiver(conn)
    with serve(app) as hook_server:
        sb.webhook_url = f"{hook_server.url}/webhooks/eu"
        sb.webhook_mode = mode
        created = sb.create_ticket(subject="Printer on fire")
        assert sb.webhooks.flush()
        human = [e for e in events if e.ticket_id == str(created["id"])]
        assert human and not any(conn.is_own_change(e) for e in human)
        events.clear()
        conn.apply(conn.fetch_ticket(str(created["id"])), L2)
        assert sb.webhooks.flush()
    assert refused == []
    assert events and all(conn.is_own_change(e) for e in events)
    assert len({e.dedupe_key for e in events}) == len(events)
    if mode == "events":
        assert {e.kind for e in events} >= {
            "ticket.group_assignment_changed",
            "ticket.priority_changed",
            "ticket.tags_changed",
            "ticket.comment_added",
        }
    assert all(d.status == 202 for d in sb.webhooks.deliveries)


def test_webhooks_signed_with_another_secret_are_refused(
    sandbox: tuple[ZendeskSandbox, ServerThread],
) -> None:
    sb, server = sandbox
    conn = connect(server.url, webhook_secret="the-secret-escbridge-knows")
    app, events, refused = receiver(conn)
    with serve(app) as hook_server:
        sb.webhook_url = f"{hook_server.url}/webhooks/eu"
        sb.create_ticket()
        assert sb.webhooks.flush()
    assert events == [] and refused and "does not match" in refused[0]
    assert sb.webhooks.deliveries[0].status == 401


def test_events_occur_on_the_emulators_clock() -> None:
    """A simulated day's webhook events are dated in that day (``escbridge history`` prints the
    helpdesk's own date of each event), not on the machine's clock."""
    day = datetime(2026, 3, 11, 9, 30, tzinfo=UTC)
    sb = ZendeskSandbox(wall_clock=day.timestamp)
    conn = ZendeskConnector(  # on the day's clock too: its replay window checks the date
        connect("http://127.0.0.1:9").config,
        instance="eu",
        runtime=Runtime.simulated(FakeClock(day)),
    )
    app, events, refused = receiver(conn)
    with serve(sb.app), serve(app) as hook_server:
        sb.webhook_url = f"{hook_server.url}/webhooks/eu"
        sb.create_ticket(subject="Printer on fire")
        assert sb.webhooks.flush()
    sb.webhooks.close()
    assert refused == [] and events
    assert {e.occurred_at for e in events} == {day}
