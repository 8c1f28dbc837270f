"""ApiClient: retries, Retry-After, pacing, retry budget, typed errors, and no leaked secrets."""

from __future__ import annotations

import base64
import logging
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses
import urllib3.exceptions

from escbridge.errors import (
    ApiError,
    AuthError,
    Conflict,
    EscbridgeError,
    FieldError,
    NotFound,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimited,
    TransientError,
    ValidationError,
)
from escbridge.http import (
    ApiClient,
    ErrorDetails,
    RateLimit,
    RetryBudget,
    RetryPolicy,
    parse_retry_after,
)
from escbridge.secrets import redact, safe_url
from escbridge.testing import FakeClock

BASE = "https://acme.example.com/api"
SECRET = "s3cr3t-token-value"
NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)


def rate_headers(headers: Any) -> RateLimit | None:
    if "x-remaining" not in headers:
        return None
    return RateLimit(
        int(headers["x-remaining"]), int(headers["x-limit"]), float(headers["x-reset"])
    )


def make_client(clock: FakeClock, **kw: Any) -> ApiClient:
    kw.setdefault("rate_limit_parser", rate_headers)
    return ApiClient(
        BASE,
        auth=("agent@acme.example/token", SECRET),
        secrets=[SECRET],
        sleep=clock.sleep,
        clock=clock.monotonic,
        utcnow=clock,
        rng=random.Random(7),
        **kw,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@responses.activate
def test_on_response_sees_every_response_with_method_and_redacted_url(clock: FakeClock) -> None:
    """The hook gets each attempt's response (headers a connector acts on), URL redacted."""
    seen: list[tuple[str, str, int, str | None]] = []
    client = make_client(
        clock,
        on_response=lambda m, u, r: seen.append((m, u, r.status_code, r.headers.get("x-note"))),
    )
    url = f"{BASE}/things"
    responses.get(url, status=503, headers={"x-note": "busy"})
    responses.get(url, json={"ok": True}, headers={"x-note": "fine"})
    assert client.call("GET", "/things", params={"key": SECRET}) == {"ok": True}
    assert [(m, code, note) for m, _, code, note in seen] == [
        ("GET", 503, "busy"),
        ("GET", 200, "fine"),
    ]
    assert all(u.startswith(f"{BASE}/things") and SECRET not in u for _, u, _, _ in seen)


@responses.activate
def test_retries_5xx_with_growing_jittered_backoff_then_succeeds(clock: FakeClock) -> None:
    url = f"{BASE}/tickets/1"
    responses.get(url, status=503, body="upstream down")
    responses.get(url, status=502, body="bad gateway")
    responses.get(url, json={"ticket": {"id": 1}})
    client = make_client(clock)

    assert client.call("GET", "/tickets/1") == {"ticket": {"id": 1}}

    assert client.stats.calls == 3 and client.stats.retries == 2
    first, second = clock.sleeps
    assert 0.25 <= first <= 0.5  # equal jitter around base 0.5 s
    assert 0.5 <= second <= 1.0  # doubled


@responses.activate
def test_429_waits_retry_after_seconds_and_counts_it(clock: FakeClock) -> None:
    url = f"{BASE}/tickets/1"
    responses.get(
        url,
        status=429,
        body="Number of allowed API requests per minute exceeded",
        content_type="text/plain",
        headers={"Retry-After": "7"},
    )
    responses.get(url, json={"ok": True})
    client = make_client(clock)

    assert client.call("GET", "/tickets/1") == {"ok": True}
    assert client.stats.throttled == 1
    assert 7.0 <= clock.sleeps[0] <= 7.25


@responses.activate
def test_429_retry_after_as_http_date(clock: FakeClock) -> None:
    url = f"{BASE}/x"
    when = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    responses.get(url, status=429, headers={"Retry-After": when})
    responses.get(url, json={})
    make_client(clock).call("GET", "/x")
    assert 12.0 <= clock.sleeps[0] <= 12.25


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("  2.5 ") == 2.5
    assert parse_retry_after("Wed, 11 Mar 2026 15:01:00 GMT", NOW) == 60.0
    assert parse_retry_after("Wed, 11 Mar 2026 14:00:00 GMT", NOW) == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@responses.activate
def test_long_retry_after_raises_rate_limited_for_the_caller_to_reschedule(
    clock: FakeClock,
) -> None:
    responses.get(
        f"{BASE}/x",
        status=429,
        body="Number of allowed API requests per minute exceeded",
        content_type="text/plain",
        headers={"Retry-After": "3600"},
    )
    client = make_client(clock, policy=RetryPolicy(max_retry_after=120))
    with pytest.raises(RateLimited) as info:
        client.call("GET", "/x")
    assert info.value.retry_after == 3600
    assert info.value.status == 429
    assert "Number of allowed API requests" in info.value.body_excerpt
    assert clock.sleeps == [] and client.stats.calls == 1


@responses.activate
def test_persistent_429_gives_up_after_max_attempts(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", status=429, headers={"Retry-After": "1"})
    client = make_client(clock, policy=RetryPolicy(max_attempts=3))
    with pytest.raises(RateLimited):
        client.call("GET", "/x")
    assert client.stats.calls == 3 and client.stats.throttled == 3


@responses.activate
def test_connection_errors_are_retried_then_transient_error(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", body=requests.ConnectionError("refused"))
    client = make_client(clock, policy=RetryPolicy(max_attempts=4))
    with pytest.raises(TransientError) as info:
        client.call("GET", "/x")
    assert client.stats.calls == 4 and len(clock.sleeps) == 3
    assert info.value.status is None
    assert "could not connect" in str(info.value)


@responses.activate
def test_read_timeout_on_a_write_is_outcome_unknown_and_not_retried(clock: FakeClock) -> None:
    responses.post(f"{BASE}/x", body=requests.ReadTimeout("slow"))
    client = make_client(clock)
    with pytest.raises(OutcomeUnknown) as info:
        client.call("POST", "/x", json={})
    assert client.stats.calls == 1
    assert isinstance(info.value, TransientError)  # code that does not know it: "retry later"
    assert (info.value.method, info.value.url) == ("POST", f"{BASE}/x")


@responses.activate
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_write_answered_500_502_504_is_outcome_unknown_and_sent_once(
    clock: FakeClock, method: str, status: int
) -> None:
    responses.add(method, f"{BASE}/w", status=status, json={"error": "boom"})
    responses.add(method, f"{BASE}/w", json={"done": 1})
    client = make_client(clock)
    with pytest.raises(OutcomeUnknown) as info:
        client.call(method, "/w", json={})
    assert info.value.status == status and info.value.method == method
    assert client.stats.calls == 1 and clock.sleeps == []


@responses.activate
@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError(
            ConnectionResetError(104, "Connection reset by peer")
        ),  # reset after sending
        requests.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("answer cut off"),
    ],
    ids=["reset", "read-timeout", "cut-off"],
)
def test_a_write_whose_answer_was_lost_is_outcome_unknown(
    clock: FakeClock, failure: Exception
) -> None:
    responses.post(f"{BASE}/w", body=failure)
    client = make_client(clock)
    with pytest.raises(OutcomeUnknown):
        client.call("POST", "/w", json={})
    assert client.stats.calls == 1


@responses.activate
@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectTimeout("connect timed out"),
        requests.ConnectionError(
            urllib3.exceptions.MaxRetryError(
                None,  # type: ignore[arg-type]
                "/w",
                urllib3.exceptions.NewConnectionError(
                    None,  # type: ignore[arg-type]
                    "Failed to establish a new connection: [Errno 111] Connection refused",
                ),
            )
        ),
        requests.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
    ],
    ids=["connect-timeout", "new-connection", "refused"],
)
def test_a_write_that_never_reached_the_helpdesk_is_retried(
    clock: FakeClock, failure: Exception
) -> None:
    responses.post(f"{BASE}/w", body=failure)
    responses.post(f"{BASE}/w", json={"done": 1})
    client = make_client(clock)
    assert client.call("POST", "/w", json={}) == {"done": 1}
    assert client.stats.calls == 2


@responses.activate
def test_a_write_refused_with_429_or_503_retry_after_is_retried(clock: FakeClock) -> None:
    responses.post(f"{BASE}/w", status=429, headers={"Retry-After": "3"})
    responses.post(f"{BASE}/w", status=503, headers={"Retry-After": "2"})
    responses.post(f"{BASE}/w", json={"done": 1})
    client = make_client(clock)
    assert client.call("POST", "/w", json={}) == {"done": 1}
    assert client.stats.calls == 3


@responses.activate
def test_503_on_a_write_means_not_now_and_is_retried(clock: FakeClock) -> None:
    responses.post(f"{BASE}/b", status=503)
    responses.post(f"{BASE}/b", json={"done": 1})
    client = make_client(clock)
    assert client.call("POST", "/b", json={}) == {"done": 1}
    assert client.stats.calls == 2


@responses.activate
def test_a_write_marked_idempotent_is_retried_after_an_ambiguous_failure(
    clock: FakeClock,
) -> None:
    responses.put(f"{BASE}/tags", status=504)
    responses.put(f"{BASE}/tags", body=requests.ReadTimeout("slow"))
    responses.put(f"{BASE}/tags", json={"tags": ["a"]})
    client = make_client(clock)
    assert client.call("PUT", "/tags", json={}, idempotent=True) == {"tags": ["a"]}
    assert client.stats.calls == 3


@responses.activate
def test_reads_are_retried_after_5xx_and_read_timeouts(clock: FakeClock) -> None:
    responses.get(f"{BASE}/r", status=504)
    responses.get(f"{BASE}/r", body=requests.ReadTimeout("slow"))
    responses.get(f"{BASE}/r", json={"ok": 1})
    client = make_client(clock)
    assert client.call("GET", "/r") == {"ok": 1}
    assert client.stats.calls == 3


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"error": "Couldn't authenticate you"}, AuthError),
        (
            403,
            {"error": "Forbidden", "description": "You do not have access"},
            PermissionDeniedError,
        ),
        (404, {"error": "RecordNotFound", "description": "Not found"}, NotFound),
        (409, {"error": "UpdateConflict", "description": "Safe Update prevented"}, Conflict),
        (
            422,
            {"error": "RecordInvalid", "description": "Record validation errors"},
            ValidationError,
        ),
        (400, {"error": "TooManyValues"}, ValidationError),
        (418, {"error": "teapot"}, ApiError),
    ],
)
@responses.activate
def test_status_maps_to_typed_error_without_retry(
    clock: FakeClock, status: int, body: dict[str, str], kind: type[ApiError]
) -> None:
    responses.put(
        f"{BASE}/tickets/5", status=status, json=body, headers={"X-Request-Id": "req-123"}
    )
    client = make_client(clock)
    with pytest.raises(kind) as info:
        client.call("PUT", "/tickets/5", json={"ticket": {}})
    err = info.value
    assert type(err) is kind
    assert isinstance(err, EscbridgeError)
    assert err.status == status and err.request_id == "req-123"
    assert err.method == "PUT" and err.url == f"{BASE}/tickets/5"
    assert body["error"] in err.body_excerpt
    assert client.stats.calls == 1 and clock.sleeps == []


@responses.activate
def test_empty_404_body_freshdesk_style(clock: FakeClock) -> None:
    responses.get(f"{BASE}/tickets/9", status=404, body="")
    with pytest.raises(NotFound) as info:
        make_client(clock).call("GET", "/tickets/9")
    assert info.value.body_excerpt == ""
    assert "Not Found" in str(info.value)


@responses.activate
def test_validation_fields_come_from_the_connector_parser(clock: FakeClock) -> None:
    def parse(status: int, body: Any) -> ErrorDetails:
        fields = tuple(
            FieldError(name, item["description"], item.get("error"))
            for name, items in body["details"].items()
            for item in items
        )
        return ErrorDetails(body["description"], body["error"], fields)

    responses.put(
        f"{BASE}/tickets/5",
        status=422,
        json={
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {"status": [{"description": "Status: closed prevents ticket update"}]},
        },
    )
    with pytest.raises(ValidationError) as info:
        make_client(clock, error_parser=parse).call("PUT", "/tickets/5", json={})
    assert info.value.fields == (
        FieldError("status", "Status: closed prevents ticket update", None),
    )
    assert info.value.code == "RecordInvalid"
    assert "status: Status: closed prevents ticket update" in str(info.value)


@responses.activate
def test_a_broken_error_parser_does_not_hide_the_error(clock: FakeClock) -> None:
    def parse(status: int, body: Any) -> ErrorDetails:
        raise KeyError("oops")

    responses.get(f"{BASE}/x", status=404, json={"error": "RecordNotFound"})
    with pytest.raises(NotFound):
        make_client(clock, error_parser=parse).call("GET", "/x")


@responses.activate
def test_non_json_success_body_is_a_typed_error_not_a_crash(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", body="<html>maintenance</html>", content_type="text/html")
    responses.delete(f"{BASE}/y", status=204)
    client = make_client(clock)
    with pytest.raises(ApiError, match="not JSON"):
        client.call("GET", "/x")
    assert client.call("DELETE", "/y") is None


@responses.activate
def test_proactive_pacing_waits_for_reset_when_nothing_is_left(clock: FakeClock) -> None:
    responses.get(
        f"{BASE}/x", json={}, headers={"x-remaining": "0", "x-limit": "100", "x-reset": "30"}
    )
    client = make_client(clock)
    client.call("GET", "/x")
    assert clock.sleeps == []
    client.call("GET", "/x")
    assert clock.sleeps == [30.0]  # waited for the window before the second call
    assert client.stats.throttled == 0 and client.stats.paced_seconds == 30.0


@responses.activate
def test_pacing_spreads_calls_when_the_budget_runs_low(clock: FakeClock) -> None:
    responses.get(
        f"{BASE}/x", json={}, headers={"x-remaining": "9", "x-limit": "100", "x-reset": "50"}
    )
    client = make_client(clock)
    client.call("GET", "/x")
    client.call("GET", "/x")
    assert clock.sleeps == [pytest.approx(5.0)]  # 50 s left / (9 + 1) calls


@responses.activate
def test_no_pacing_while_the_budget_is_healthy(clock: FakeClock) -> None:
    responses.get(
        f"{BASE}/x", json={}, headers={"x-remaining": "80", "x-limit": "100", "x-reset": "50"}
    )
    client = make_client(clock)
    for _ in range(3):
        client.call("GET", "/x")
    assert clock.sleeps == []


@responses.activate
def test_pacing_is_per_bucket(clock: FakeClock) -> None:
    responses.put(
        f"{BASE}/tickets/1",
        json={},
        headers={"x-remaining": "0", "x-limit": "100", "x-reset": "40"},
    )
    responses.get(
        f"{BASE}/tickets/1",
        json={},
        headers={"x-remaining": "600", "x-limit": "700", "x-reset": "40"},
    )
    client = make_client(clock)
    client.call("PUT", "/tickets/1", json={}, bucket="tickets-update")
    client.call("GET", "/tickets/1")
    assert clock.sleeps == []  # reads are not slowed by the exhausted update budget
    assert client.rate_limit("tickets-update") == RateLimit(0, 100, 40.0)
    client.call("PUT", "/tickets/1", json={}, bucket="tickets-update")
    assert clock.sleeps == [40.0]


@responses.activate
def test_rate_limit_reading_counts_down_and_refills(clock: FakeClock) -> None:
    responses.get(
        f"{BASE}/x", json={}, headers={"x-remaining": "3", "x-limit": "10", "x-reset": "20"}
    )
    client = make_client(clock)
    client.call("GET", "/x")
    clock.advance(seconds=5)
    assert client.rate_limit() == RateLimit(3, 10, 15.0)
    clock.advance(seconds=20)
    assert client.rate_limit() == RateLimit(10, 10, 0.0)


@responses.activate
def test_retry_budget_fails_fast_when_spent(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", status=503)
    budget = RetryBudget(ratio=0.0, min_per_window=2, window=60, clock=clock.monotonic)
    client = make_client(clock, budget=budget, policy=RetryPolicy(max_attempts=10))
    with pytest.raises(TransientError):
        client.call("GET", "/x")
    assert client.stats.calls == 3  # 1 attempt + the 2 retries the budget allowed
    with pytest.raises(TransientError):
        client.call("GET", "/x")
    assert client.stats.calls == 4  # no retry left: failed fast


@responses.activate
def test_waiting_out_retry_after_does_not_spend_the_retry_budget(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", status=429, headers={"Retry-After": "1"})
    responses.get(f"{BASE}/x", status=429, headers={"Retry-After": "1"})
    responses.get(f"{BASE}/x", json={})
    budget = RetryBudget(ratio=0.0, min_per_window=0, window=60, clock=clock.monotonic)
    client = make_client(clock, budget=budget)
    assert client.call("GET", "/x") == {}
    assert client.stats.throttled == 2


@responses.activate
def test_total_wait_is_bounded(clock: FakeClock) -> None:
    responses.get(f"{BASE}/x", status=429, headers={"Retry-After": "50"})
    client = make_client(clock, policy=RetryPolicy(max_attempts=10, max_total_wait=120))
    with pytest.raises(RateLimited):
        client.call("GET", "/x")
    assert sum(clock.sleeps) <= 120


@responses.activate
def test_secrets_never_reach_errors_or_logs(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url_with_secret = f"https://user:{SECRET}@acme.example.com/api/echo?api_key={SECRET}"
    responses.get(
        re.compile(r"https://.*acme\.example\.com/api/echo.*"),
        status=400,
        json={"error": "bad", "description": f"token {SECRET} is malformed"},
    )
    client = make_client(clock)
    with pytest.raises(ValidationError) as info:
        client.call("GET", url_with_secret)
    err = info.value
    shown = " ".join([str(err), repr(err), err.url, err.body_excerpt, err.message])
    assert SECRET not in shown
    # the user name stays (it tells which account); the password is masked
    assert "user:[redacted]@acme.example.com" in err.url and "api_key=[redacted]" in err.url
    assert SECRET not in caplog.text
    # The Authorization header is sent, but never part of what the error keeps.
    sent = responses.calls[0].request.headers["Authorization"]
    assert sent.startswith("Basic ") and sent not in shown


@responses.activate
def test_connection_error_messages_do_not_echo_the_url_with_credentials(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(
        "https://acme.example.com/api/x",
        body=requests.ConnectionError(f"failed https://u:{SECRET}@acme.example.com"),
    )
    client = make_client(clock, policy=RetryPolicy(max_attempts=1))
    with pytest.raises(TransientError) as info:
        client.call("GET", f"https://u:{SECRET}@acme.example.com/api/x")
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_redact_masks_plain_url_encoded_and_base64_forms() -> None:
    assert redact("a=abc/def+g&b=abc%2Fdef%2Bg", ["abc/def+g"]) == "a=[redacted]&b=[redacted]"
    basic = base64.b64encode(b"escbridge@acme.example/token:s3cr3t-t0k3n").decode()
    assert "s3cr3t" not in redact(f"sent {basic}", ["escbridge@acme.example/token:s3cr3t-t0k3n"])


def test_redact_keeps_ordinary_words_after_a_credential_key() -> None:
    assert redact("token: no response") == "token: no response"
    assert redact("password: required") == "password: required"
    assert redact("api_key=Zx81kd0a2LmQ") == "api_key=[redacted]"


def test_database_urls_are_masked_whatever_the_password_holds() -> None:
    for password in ["p@ss@w:rd", "a/b#c", "x y"]:
        shown = safe_url(f"postgresql+psycopg://app:{password}@db.internal:5432/esc")
        assert password not in shown and shown.endswith("db.internal:5432/esc")
