"""The emulator answers like Freshdesk: shapes, limits and error bodies the connector relies on."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from escbridge_freshdesk.sandbox import TEST_API_KEY, Fault, FreshdeskSandbox
from flask.testing import FlaskClient

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{TEST_API_KEY}:X".encode()).decode()}


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def client(**options: Any) -> tuple[FreshdeskSandbox, FlaskClient]:
    sandbox = FreshdeskSandbox(**options)
    return sandbox, sandbox.app.test_client()


def test_auth_bodies() -> None:
    _, c = client()
    missing = c.get("/api/v2/agents/me")
    assert missing.status_code == 401 and missing.json == {
        "code": "credentials_required",
        "message": "Authentication header is needed to log in.",
    }
    wrong = c.get(
        "/api/v2/agents/me",
        headers={"Authorization": "Basic " + base64.b64encode(b"nope:X").decode()},
    )
    assert wrong.status_code == 401 and wrong.json["code"] == "invalid_credentials"
    me = c.get("/api/v2/agents/me", headers=AUTH)
    assert me.json["contact"]["email"] == "escbridge@sandbox.example"


def test_a_missing_ticket_is_an_empty_404_and_an_update_without_fields_a_400() -> None:
    sandbox, c = client()
    gone = c.get("/api/v2/tickets/404", headers=AUTH)
    assert gone.status_code == 404 and gone.data == b""
    tid = sandbox.create_ticket(notify=False)["id"]
    empty = c.put(f"/api/v2/tickets/{tid}", json={}, headers=AUTH)
    assert empty.status_code == 400
    assert "does not have any parameter" in empty.json["errors"][0]["message"]
    bad = c.put(
        f"/api/v2/tickets/{tid}", json={"priority": 9, "group_id": 1, "foo": 1}, headers=AUTH
    )
    assert bad.json["description"] == "Validation failed"
    assert {(e["field"], e["code"]) for e in bad.json["errors"]} == {
        ("foo", "invalid_field"),
        ("priority", "invalid_value"),
        ("group_id", "invalid_value"),
    }


def test_lists_page_with_a_link_and_refuse_large_pages_and_page_301() -> None:
    sandbox, c = client()
    for _ in range(3):
        sandbox.create_ticket(notify=False)
    first = c.get("/api/v2/tickets?per_page=2&updated_since=2000-01-01T00:00:00Z", headers=AUTH)
    assert len(first.json) == 2 and 'page=2>; rel="next"' in first.headers["Link"]
    assert c.get("/api/v2/tickets?per_page=101", headers=AUTH).status_code == 400
    beyond = c.get("/api/v2/tickets?page=301", headers=AUTH)
    assert "beyond the 300th page" in beyond.json["errors"][0]["message"]


def test_credits_per_include_and_a_429_with_retry_after_but_no_ratelimit_headers() -> None:
    tick = Tick()
    sandbox, c = client(rate_limit=6, monotonic=tick)
    tid = sandbox.create_ticket(notify=False)["id"]
    ok = c.get(f"/api/v2/tickets/{tid}?include=stats,requester", headers=AUTH)
    assert ok.headers["X-RateLimit-Used-CurrentRequest"] == "5"
    assert ok.headers["X-RateLimit-Remaining"] == "1" and ok.headers["X-RateLimit-Total"] == "6"
    throttled = c.get(f"/api/v2/tickets/{tid}?include=stats", headers=AUTH)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert "X-RateLimit-Remaining" not in throttled.headers
    tick.now += 61
    assert c.get(f"/api/v2/tickets/{tid}", headers=AUTH).status_code == 200


@pytest.mark.parametrize("mode", ["sync", "job"])
def test_bulk_update_in_both_answer_shapes(mode: str) -> None:
    sandbox, c = client(bulk_mode=mode, job_polls=1)
    ids = [sandbox.create_ticket(notify=False)["id"] for _ in range(2)]
    body = {"bulk_action": {"ids": [*ids, 999], "properties": {"priority": 4}}}
    answer = c.post("/api/v2/tickets/bulk_update", json=body, headers=AUTH)
    assert answer.status_code == 202
    if mode == "sync":
        assert answer.json["succeeded"] == ids and answer.json["failed"][0]["id"] == 999
    else:
        job = answer.json["job_id"]
        assert answer.json["href"].endswith(f"/api/v2/jobs/{job}")
        assert c.get(f"/api/v2/jobs/{job}", headers=AUTH).json["status"] == "IN_PROGRESS"
        done = c.get(f"/api/v2/jobs/{job}", headers=AUTH).json
        assert (
            done["status"] == "PARTIAL"
            and {"id": 999, "success": False}.items() <= done["data"][-1].items()
        )
    assert all(sandbox.ticket(i)["priority"] == 4 for i in ids)


def test_a_fault_after_the_change_loses_only_the_answer() -> None:
    sandbox, c = client()
    tid = sandbox.create_ticket(notify=False)["id"]
    sandbox.faults.append(Fault("POST", r"/tickets/\d+/notes", status=504, after=True))
    lost = c.post(
        f"/api/v2/tickets/{tid}/notes", json={"body": "hi", "private": True}, headers=AUTH
    )
    assert lost.status_code == 504 and len(sandbox.notes(tid)) == 1
    note = c.post(
        f"/api/v2/tickets/{tid}/notes", json={"body": "again", "private": True}, headers=AUTH
    )
    assert note.status_code == 201 and note.headers["Location"].endswith(
        f"/conversations/{note.json['id']}"
    )
