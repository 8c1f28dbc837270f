"""The Desk client: Zoho's error bodies as typed errors, credits, both 429s, 204 as empty."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import responses
from zohodesk_support import DESK, TICKET_ID, Clock, make_connector, ticket_json, token_reply

from escbridge.errors import (
    AuthError,
    NotFound,
    PermissionDeniedError,
    RateLimited,
    ValidationError,
)

TICKET = f"{DESK}/tickets/{TICKET_ID}"


@pytest.fixture
def connector(rsps, clock):
    token_reply(rsps)
    return make_connector(clock)


def test_invalid_data_names_the_fields(rsps, connector):
    rsps.patch(
        TICKET,
        status=422,
        json={
            "errorCode": "INVALID_DATA",
            "message": "The data does not comply to the validation restrictions defined.",
            "errors": [
                {"fieldName": "/contactId", "errorType": "invalid"},
                {"fieldName": "/cf/cf_escalation_level", "errorType": "missing"},
            ],
        },
    )
    with pytest.raises(ValidationError) as err:
        connector.client.update_ticket(TICKET_ID, {"contactId": "1"})
    assert err.value.code == "INVALID_DATA"
    assert [(f.field, f.message) for f in err.value.fields] == [
        ("contactId", "invalid"),
        ("cf.cf_escalation_level", "missing"),
    ]
    assert "contactId: invalid" in str(err.value)


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            404,
            {"errorCode": "URL_NOT_FOUND", "message": "The URL you requested could not be found."},
            NotFound,
            "could not be found",
        ),
        (
            403,
            {
                "errorCode": "FORBIDDEN",
                "message": "You are not authorized to access this resource.",
            },
            PermissionDeniedError,
            "not authorized",
        ),
        (
            401,
            {"errorCode": "SCOPE_MISMATCH", "message": "scope mismatch"},
            AuthError,
            "lacks a scope this call needs",
        ),
        (
            403,
            {
                "errorCode": "LICENSE_ACCESS_LIMITED",
                "maxAllowedEntity": "10",
                "feature": "AGENTS",
                "editionType": "FREE",
                "isTrial": False,
                "message": "Your Zoho Desk Edition does not support this feature/operation.",
            },
            PermissionDeniedError,
            "feature AGENTS, edition FREE",
        ),
    ],
)
def test_error_codes_become_typed_errors(rsps, connector, status, body, error, text):
    rsps.get(TICKET, status=status, json=body)
    with pytest.raises(error, match=text) as err:
        connector.fetch_ticket(TICKET_ID)
    assert err.value.code == body["errorCode"]
    assert err.value.status == status


def test_too_many_requests_backs_off_and_retries(rsps, connector, clock):
    rsps.get(TICKET, status=429, json={"errorCode": "TOO_MANY_REQUESTS", "message": "Slow down"})
    rsps.get(TICKET, status=429, json={"errorCode": "TOO_MANY_REQUESTS", "message": "Slow down"})
    rsps.get(TICKET, json=ticket_json())
    assert connector.fetch_ticket(TICKET_ID).id == TICKET_ID
    assert len(clock.sleeps) == 2 and all(s > 0 for s in clock.sleeps)


def test_daily_credits_gone_stops_at_once_with_the_resume_time(rsps, connector, clock):
    ticket = rsps.get(
        TICKET,
        status=429,
        json={"errorCode": "THRESHOLD_EXCEEDED", "message": "API credit limit exceeded"},
        headers={"Retry-After": "7200", "X-Rate-Limit-Remaining-v3": "0"},
    )
    with pytest.raises(RateLimited) as err:
        connector.fetch_ticket(TICKET_ID)
    assert ticket.call_count == 1  # no retry: nothing changes for hours
    assert clock.sleeps == []
    assert isinstance(err.value, RateLimited)
    assert err.value.resume_at == datetime(2026, 10, 5, 20, 0, tzinfo=UTC)
    assert err.value.retry_after == 7200
    assert "resumes at 2026-10-05 20:00 UTC" in str(err.value)
    assert connector.client.credits.remaining == 0


def test_without_retry_after_the_sync_resumes_the_next_utc_day(rsps, connector):
    rsps.get(TICKET, status=429, json={"errorCode": "THRESHOLD_EXCEEDED", "message": "exceeded"})
    with pytest.raises(RateLimited) as err:
        connector.fetch_ticket(TICKET_ID)
    assert err.value.resume_at == datetime(2026, 10, 6, 0, 0, tzinfo=UTC)
    assert err.value.retry_after == 6 * 3600


def test_credit_headers_are_read(rsps, connector):
    rsps.get(
        TICKET,
        json=ticket_json(),
        headers={"X-Rate-Limit-Request-Weight-v3": "1", "X-Rate-Limit-Remaining-v3": "49990"},
    )
    connector.fetch_ticket(TICKET_ID)
    assert (connector.client.credits.remaining, connector.client.credits.last_weight) == (49990, 1)
    assert connector.client.api.rate_limit("credits").remaining == 49990


def test_the_credit_reserve_stops_a_sync_before_other_integrations_starve(rsps, clock):
    token_reply(rsps)
    connector = make_connector(clock, credit_reserve=500)
    rsps.get(TICKET, json=ticket_json(), headers={"X-Rate-Limit-Remaining-v3": "499"})
    connector.fetch_ticket(TICKET_ID)
    with pytest.raises(RateLimited, match="credit_reserve of 500") as err:
        connector.client.ensure_credits(500)
    assert err.value.resume_at == datetime(2026, 10, 6, tzinfo=UTC)


def test_an_empty_list_is_204_with_no_body(rsps, connector):
    rsps.get(f"{DESK}/departments", status=204)
    rsps.get(f"{DESK}/tickets/{TICKET_ID}/comments", status=204)
    assert connector.client.departments() == []
    assert list(connector.client.comments(TICKET_ID)) == []


def test_ticket_fields_fall_back_to_the_other_documented_path(rsps, connector):
    rsps.get(
        f"{DESK}/organizationFields",
        status=404,
        json={"errorCode": "URL_NOT_FOUND", "message": "x"},
    )
    rsps.get(f"{DESK}/fields", json={"data": [{"apiName": "priority"}]})
    assert connector.client.ticket_fields() == [{"apiName": "priority"}]


def test_calls_stay_below_the_configured_concurrency(rsps):
    clock = Clock()
    token_reply(rsps)
    connector = make_connector(clock, max_concurrency=2)
    connector.tokens.token()
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return 200, {}, '{"id":"1","createdTime":"2026-10-05T17:28:58.000Z"}'

    rsps.add_callback(responses.GET, TICKET, callback=slow)
    threads = [
        threading.Thread(target=connector.client.ticket, args=(TICKET_ID,)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 2
