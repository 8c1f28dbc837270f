"""The Freshdesk dialect of the HTTP layer: error bodies, rate limits, paging, secrets."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import responses
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.client import freshdesk_error_parser
from freshdesk_payloads import (
    AGENT_ME,
    API_KEY,
    BASE,
    ERROR_400,
    ERROR_401,
    ERROR_403,
    ERROR_429,
    GROUPS,
    open_ticket,
)

from escbridge.connector import Runtime
from escbridge.errors import (
    AuthError,
    NotFound,
    PermissionDeniedError,
    RateLimited,
    ValidationError,
)
from escbridge.testing import FakeClock


def connector(clock: FakeClock | None = None, **settings: Any) -> FreshdeskConnector:
    clock = clock or FakeClock()
    cfg = FreshdeskConfig.model_validate({"domain": "acme", "api_key": API_KEY, **settings})
    return FreshdeskConnector(cfg, instance="fd", runtime=Runtime.simulated(clock))


@responses.activate
def test_every_call_authenticates_with_the_api_key_as_basic_auth_user() -> None:
    responses.get(f"{BASE}/agents/me", json=AGENT_ME)
    connector().api.me()
    import base64

    sent = responses.calls[0].request.headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"{API_KEY}:X".encode()).decode()
    assert responses.calls[0].request.url == f"{BASE}/agents/me"


@pytest.mark.contract_exempt(reason="sends priority 9 on purpose to get the real 400 body")
@responses.activate
def test_400_becomes_a_validation_error_with_every_field() -> None:
    responses.put(f"{BASE}/tickets/1234", json=ERROR_400, status=400)
    with pytest.raises(ValidationError) as caught:
        connector().api.update_ticket("1234", {"priority": 9})
    error = caught.value
    assert error.status == 400 and error.message == "Validation failed"
    assert [(f.field, f.code) for f in error.fields] == [
        ("priority", "invalid_value"),
        ("group_id", "invalid_value"),
        ("foo", "invalid_field"),
    ]
    assert error.fields[1].message == "There is no group matching the given group_id"
    assert "group_id: There is no group matching" in str(error)


@responses.activate
def test_401_and_403_bodies_give_typed_errors_with_freshdesks_words() -> None:
    responses.get(f"{BASE}/agents/me", json=ERROR_401, status=401)
    responses.get(f"{BASE}/groups", json=ERROR_403, status=403)
    conn = connector()
    with pytest.raises(AuthError) as auth:
        conn.api.me()
    assert auth.value.code == "invalid_credentials"
    assert "You have to be logged in" in str(auth.value)
    with pytest.raises(PermissionDeniedError) as denied:
        conn.api.groups()
    assert denied.value.code == "access_denied"


@responses.activate
def test_an_empty_404_is_a_missing_record_and_a_blank_one_a_wrong_domain() -> None:
    responses.get(f"{BASE}/tickets/9", body=b"", status=404)
    responses.get(f"{BASE}/agents/me", body=b" ", status=404)
    conn = connector()
    with pytest.raises(NotFound, match="no such record"):
        conn.api.ticket("9")
    with pytest.raises(NotFound, match="check 'domain'"):
        conn.api.me()


def test_the_error_parser_is_lenient_with_unknown_bodies() -> None:
    assert freshdesk_error_parser(429, ERROR_429).message.startswith("You have exceeded")
    assert freshdesk_error_parser(429, None).message == "Freshdesk rate limit reached"
    assert freshdesk_error_parser(405, "GET method is not allowed").message.startswith("GET")
    details = freshdesk_error_parser(400, {"description": "Validation failed", "errors": "x"})
    assert details.fields == () or all(f.field for f in details.fields)


@responses.activate
def test_429_waits_for_retry_after_then_succeeds() -> None:
    clock = FakeClock()
    responses.get(f"{BASE}/tickets/1234", json=ERROR_429, status=429, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/tickets/1234", json=open_ticket())
    assert connector(clock).api.ticket("1234")["id"] == 1234
    assert len(clock.sleeps) == 1 and 7 <= clock.sleeps[0] < 7.5


@responses.activate
def test_a_long_retry_after_is_raised_so_the_job_is_rescheduled() -> None:
    responses.get(
        f"{BASE}/tickets/1234", json=ERROR_429, status=429, headers={"Retry-After": "3600"}
    )
    with pytest.raises(RateLimited) as caught:
        connector().api.ticket("1234")
    assert caught.value.retry_after == 3600


@responses.activate
def test_calls_slow_down_when_few_credits_remain() -> None:
    clock = FakeClock()
    conn = connector(clock)
    responses.get(
        f"{BASE}/tickets/1",
        json=open_ticket(1),
        headers={"X-RateLimit-Total": "200", "X-RateLimit-Remaining": "150"},
    )
    responses.get(
        f"{BASE}/tickets/2",
        json=open_ticket(2),
        headers={"X-RateLimit-Total": "200", "X-RateLimit-Remaining": "9"},
    )
    responses.get(f"{BASE}/tickets/3", json=open_ticket(3))
    conn.api.ticket("1")
    conn.api.ticket("2")
    assert clock.sleeps == []  # plenty left before the second call
    conn.api.ticket("3")
    # 9 of 200 left in a 60 s window: the next call waits about 60/10 s.
    assert len(clock.sleeps) == 1 and 5.0 < clock.sleeps[0] <= 6.0


@responses.activate
def test_paging_follows_the_link_header_and_never_leaves_the_account() -> None:
    responses.get(
        f"{BASE}/groups",
        json=GROUPS[:2],
        headers={"Link": '<https://elsewhere.example/api/v2/groups?per_page=2&page=2>; rel="next"'},
    )
    conn = connector()
    responses.get(f"{BASE}/groups", json=GROUPS[2:])
    groups = conn.api.groups()
    assert [g["name"] for g in groups] == ["Entertainers", "Frontline", "Escalations"]
    assert responses.calls[1].request.url == f"{BASE}/groups?per_page=2&page=2"
    assert all(c.request.url.startswith(BASE) for c in responses.calls)


@responses.activate
def test_secrets_never_reach_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"description": f"bad key {API_KEY}", "errors": []}
    responses.put(f"{BASE}/tickets/1", json=echo, status=400)
    responses.get(f"{BASE}/tickets/2", status=503, body="down")
    conn = connector(webhook_secret="wh-secret-for-this-test-123")
    with pytest.raises(ValidationError) as caught:
        conn.api.update_ticket("1", {"priority": 4})
    assert API_KEY not in str(caught.value) and API_KEY not in caught.value.body_excerpt
    with pytest.raises(Exception) as outage:
        conn.api.ticket("2")
    for text in (caplog.text, str(outage.value), repr(conn), repr(conn.config)):
        assert API_KEY not in text
        assert "wh-secret-for-this-test-123" not in text


@responses.activate
def test_fetch_ticket_includes_stats_and_requester_and_names_the_group() -> None:
    from freshdesk_payloads import ESCALATIONS_ID, TICKET_FIELDS

    responses.get(f"{BASE}/tickets/1234", json=open_ticket(group_id=ESCALATIONS_ID, status=6))
    responses.get(f"{BASE}/groups", json=GROUPS)
    responses.get(f"{BASE}/ticket_fields", json=TICKET_FIELDS)
    conn = connector()
    ticket = conn.fetch_ticket("1234")
    assert responses.calls[0].request.url == f"{BASE}/tickets/1234?include=stats%2Crequester"
    assert ticket.group == "Escalations"
    assert ticket.custom_fields["freshdesk.status_name"] == "Waiting on Customer"
    assert ticket.instance == "fd"
    conn.fetch_ticket("1234")
    assert len(responses.calls) == 4  # groups and ticket fields were read once


def test_a_ticket_id_from_outside_never_becomes_a_path() -> None:
    with pytest.raises(ValueError, match="not a Freshdesk ticket id"):
        connector().api.ticket("12/../../agents")
