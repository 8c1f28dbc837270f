"""The one choke point for every HTTP call a connector makes to a helpdesk.

``ApiClient`` wraps a ``requests.Session`` with what every helpdesk API needs and nobody should
write twice: connect/read timeouts; retries (tenacity) with exponential backoff and jitter on
connection errors, 5xx and 429 — for a write only when it provably was not carried out (see
"Writes" below); ``Retry-After`` honoured in seconds or as an HTTP date; proactive
pacing from rate-limit headers, so a sync job slows down *before* it is throttled; a client-wide
retry budget, so a struggling helpdesk is not hammered by retries; and the typed errors of
``escbridge.errors`` (import them from there).

What differs per helpdesk is passed in as two hooks: ``error_parser`` (the platform's error body
-> message, code and field errors) and ``rate_limit_parser`` (headers -> remaining, limit, reset).

Writes: a call other than GET/HEAD/OPTIONS (unless the caller passes ``idempotent=True``) is
repeated only after a failure that says the helpdesk did not process it: the connection could
not be made (refused, connect timeout, name not resolved), 429, 503 ("not now", with or without
``Retry-After``: what a helpdesk, its load balancer and the fault proxies answer before the
request is handled), or a status the caller listed in ``retry_statuses``. A failure after the
request may have reached the helpdesk — read timeout, connection reset after sending,
500/502/504, an answer cut off — raises ``OutcomeUnknown`` at once: repeating it could write
twice (a second note, a second e-mail to the customer). The connector decides what to do
(``escbridge.connector.BaseConnector``: wait, re-read, write only what is missing).

Credentials never appear in a log line or an error: URLs lose their userinfo, and every string
given in ``secrets`` is masked in URLs and body excerpts.
"""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import requests
import urllib3.exceptions
from tenacity import RetryCallState, Retrying, retry_if_exception

from escbridge.errors import (
    ApiError,
    AuthError,
    Conflict,
    FieldError,
    NotFound,
    OutcomeUnknown,
    PermissionDeniedError,
    RateLimited,
    TransientError,
    ValidationError,
)
from escbridge.secrets import Redactor

log = logging.getLogger(__name__)

__all__ = [
    "ApiClient",
    "CallStats",
    "ErrorDetails",
    "RateLimit",
    "RetryBudget",
    "RetryPolicy",
    "default_error_parser",
    "parse_retry_after",
]

EXCERPT_CHARS = 500


@dataclass(frozen=True)
class ErrorDetails:
    """What a connector's error parser extracts from a platform error body."""

    message: str
    code: str | None = None
    fields: tuple[FieldError, ...] = ()


ErrorParser = Callable[[int, Any], ErrorDetails]
"""``(status, body)`` -> details; ``body`` is the parsed JSON, or the text when it is not JSON."""


def default_error_parser(status: int, body: Any) -> ErrorDetails:
    """Understands the common ``{"error": ..., "description"|"message": ...}`` shapes."""
    if isinstance(body, Mapping):
        code = body.get("error") or body.get("code") or body.get("errorCode")
        message = body.get("description") or body.get("message") or body.get("error_description")
        if isinstance(code, Mapping):  # {"error": {"title": ..., "message": ...}}
            message = message or code.get("message") or code.get("title")
            code = code.get("code") or code.get("title")
        code_text = str(code) if code is not None else None
        return ErrorDetails(str(message or code_text or _reason(status)), code_text)
    if isinstance(body, str) and body.strip():
        return ErrorDetails(body.strip()[:200])
    return ErrorDetails(_reason(status))


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


# --------------------------------------------------------------------------- rate limits


class RateLimit(NamedTuple):
    """A rate-limit reading: calls (or units) left, the window's size, seconds until it resets.

    Any may be None when the helpdesk did not say.
    """

    remaining: int | None
    limit: int | None
    reset_seconds: float | None


RateLimitParser = Callable[[Mapping[str, str]], RateLimit | None]
# Sees every HTTP response received (any status, each attempt): method, redacted URL, response.
ResponseHook = Callable[[str, str, requests.Response], None]
"""Headers (case-insensitive mapping) -> the most constraining limit they report, or None."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class _Reading:
    rate: RateLimit
    at: float


# --------------------------------------------------------------------------- policy and budget


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries before it gives up with a typed error.

    ``max_retry_after`` caps how long a single 429 may make us wait: past it the call raises
    ``RateLimited`` so a sync job can reschedule instead of blocking a worker for an hour.
    """

    max_attempts: int = 5
    max_total_wait: float = 300.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    default_retry_after: float = 60.0
    pace_below: float = 0.2  # start spreading calls out when < 20% of the window remains


class RetryBudget:
    """Client-wide cap on retries, in the spirit of Finagle/gRPC retry budgets.

    Every first attempt deposits ``ratio`` tokens; every retry withdraws one. A floor of
    ``min_per_window`` retries per ``window`` seconds keeps a quiet client able to retry. When the
    budget is spent, calls fail fast with their typed error instead of amplifying an outage.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_window: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_per_window = min_per_window
        self.window = window
        self._clock = clock
        self._tokens = 0.0
        self._floor_used: list[float] = []
        self._lock = threading.Lock()

    def deposit(self) -> None:
        with self._lock:
            self._tokens = min(self._tokens + self.ratio, 1000.0)

    def withdraw(self) -> bool:
        """Take one retry; False when none is left."""
        with self._lock:
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            now = self._clock()
            self._floor_used = [t for t in self._floor_used if now - t < self.window]
            if len(self._floor_used) < self.min_per_window:
                self._floor_used.append(now)
                return True
            return False


@dataclass
class CallStats:
    """What the benchmarks print: HTTP requests sent (retries included), 429s, time paced."""

    calls: int = 0
    throttled: int = 0
    retries: int = 0
    paced_seconds: float = 0.0
    retry_wait_seconds: float = 0.0


# --------------------------------------------------------------------------- the client

_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# A connection error caused by one of these happened before a byte of the request was sent.
_NOT_SENT = (
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
    ConnectionRefusedError,
    socket.gaierror,
)
REQUEST_ID_HEADERS = ("x-request-id", "x-zendesk-request-id", "x-amzn-requestid", "x-requestid")


class _Retry(Exception):
    """Internal: an attempt failed in a way worth retrying; carries the final error to raise."""

    def __init__(self, error: ApiError, wait: float | None = None) -> None:
        self.error = error
        self.wait = wait
        super().__init__(str(error))


class ApiClient:
    """requests + tenacity for one helpdesk account. Thread-safe for concurrent calls.

    ``base_url`` is prefixed to relative paths. ``bucket`` on a call names the rate-limit scope
    its response headers describe (e.g. Zendesk's ``tickets-update``), so pacing the update
    endpoint does not slow down reads. ``on_response`` sees every response received (method,
    redacted URL, response), for headers a connector wants to act on (e.g. Zendesk's
    ``x-zendesk-api-warn``); ``call`` returns only the body.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        auth: requests.auth.AuthBase | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: tuple[float, float] = (5.0, 30.0),
        policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        error_parser: ErrorParser = default_error_parser,
        rate_limit_parser: RateLimitParser | None = None,
        request_id_headers: Iterable[str] = REQUEST_ID_HEADERS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        user_agent: str = "escbridge",
        on_response: ResponseHook | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        if auth is not None:
            self.session.auth = auth
        self.session.headers.update({"User-Agent": user_agent, "Accept": "application/json"})
        if headers:
            self.session.headers.update(headers)
        self._redact = Redactor(secrets)
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._utcnow = utcnow
        self.budget = budget or RetryBudget(clock=clock)
        self._error_parser = error_parser
        self._rate_parser = rate_limit_parser
        self._on_response = on_response
        self._request_id_headers = tuple(request_id_headers)
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._readings: dict[str, _Reading] = {}
        self.stats = CallStats()

    # -- public API ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        bucket: str = "default",
        retry_statuses: Iterable[int] = (),
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send one logical call (with retries); return the 2xx response or raise a typed error.

        ``retry_statuses`` adds statuses worth retrying for this call only. ``idempotent``
        (default: GET, HEAD and OPTIONS only) says that sending the call twice does no harm, so
        it is retried after ambiguous failures too; otherwise those raise ``OutcomeUnknown``.
        """
        method = method.upper()
        repeatable = method in _SAFE if idempotent is None else idempotent
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        extra = frozenset(retry_statuses)
        first = True

        def attempt() -> requests.Response:
            nonlocal first
            if not first:
                with self._lock:
                    self.stats.retries += 1
            first = False
            self.pace(bucket)
            return self._attempt(method, url, params, json, bucket, extra, repeatable)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Retry)),
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep_for_retry,
            reraise=True,
        )
        self.budget.deposit()
        try:
            return retrying(attempt)
        except _Retry as final:
            raise final.error from None

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        bucket: str = "default",
        idempotent: bool | None = None,
    ) -> Any:
        """Like ``request`` but returns the parsed JSON body (None for an empty body)."""
        response = self.request(
            method, path, params=params, json=json, bucket=bucket, idempotent=idempotent
        )
        if not response.content or response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                "the response is not JSON",
                status=response.status_code,
                body_excerpt=self._excerpt(response),
                request_id=self._request_id(response),
                method=method.upper(),
                url=self._safe(response.url or path),
            ) from None

    def rate_limit(self, bucket: str = "default") -> RateLimit | None:
        """The latest reading for ``bucket``, with ``reset_seconds`` counted down to now."""
        with self._lock:
            reading = self._readings.get(bucket)
        if reading is None:
            return None
        rate = reading.rate
        if rate.reset_seconds is None:
            return rate
        left = rate.reset_seconds - (self._clock() - reading.at)
        if left <= 0:  # the window has reset since we looked: assume the full limit again
            return RateLimit(rate.limit, rate.limit, 0.0)
        return RateLimit(rate.remaining, rate.limit, left)

    def pace(self, bucket: str = "default") -> float:
        """Sleep as long as the last reading says is wise before the next call; return the delay.

        None left: wait for the reset. Below ``pace_below`` of the window: spread what is left
        evenly over the time to the reset, so a long job never hits the wall at full speed.
        """
        rate = self.rate_limit(bucket)
        if rate is None or rate.remaining is None or rate.reset_seconds is None:
            return 0.0
        delay = 0.0
        if rate.remaining <= 0:
            delay = rate.reset_seconds
        elif rate.limit and rate.remaining < rate.limit * self.policy.pace_below:
            with self._lock:
                reading = self._readings[bucket]
                since_last = self._clock() - reading.at
            delay = max(0.0, rate.reset_seconds / (rate.remaining + 1) - since_last)
        delay = min(delay, self.policy.max_retry_after)
        if delay > 0:
            log.debug("pacing %s: %.2fs (remaining %s of %s)", bucket, delay, *rate[:2])
            with self._lock:
                self.stats.paced_seconds += delay
            self._sleep(delay)
        return delay

    # -- one attempt ------------------------------------------------------------------------

    def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        bucket: str,
        extra_retry: frozenset[int],
        repeatable: bool,
    ) -> requests.Response:
        safe_url = self._safe(url)
        with self._lock:
            self.stats.calls += 1
        started = self._clock()
        try:
            response = self.session.request(
                method, url, params=params, json=json, timeout=self.timeout
            )
        except requests.ConnectionError as exc:
            # ConnectTimeout is a ConnectionError: the request never reached the server. A
            # connection reset after sending is one too, and may hide a write carried out.
            if repeatable or not_sent(exc):
                kind = "timed out" if isinstance(exc, requests.Timeout) else "could not connect"
                unreachable = TransientError(
                    f"{kind} ({type(exc).__name__})", method=method, url=safe_url
                )
                log.warning("%s %s: %s", method, safe_url, kind)
                raise _Retry(unreachable) from None
            log.warning("%s %s: connection lost after sending: outcome unknown", method, safe_url)
            raise OutcomeUnknown(
                f"the connection was lost after the request was sent ({type(exc).__name__}); "
                "it may have been carried out",
                method=method,
                url=safe_url,
            ) from None
        except requests.Timeout as exc:
            message = f"no answer within {self.timeout[1]:g}s ({type(exc).__name__})"
            log.warning("%s %s: read timeout", method, safe_url)
            if repeatable:
                raise _Retry(TransientError(message, method=method, url=safe_url)) from None
            raise OutcomeUnknown(
                f"{message}; it may have been carried out", method=method, url=safe_url
            ) from None
        except requests.RequestException as exc:
            message = f"request failed ({type(exc).__name__})"
            if not repeatable:  # e.g. the answer was cut off: the write may have been made
                raise OutcomeUnknown(
                    f"{message}; it may have been carried out", method=method, url=safe_url
                ) from None
            raise ApiError(message, method=method, url=safe_url) from None

        self._record_rate(bucket, response)
        if self._on_response is not None:
            self._on_response(method, safe_url, response)
        status = response.status_code
        log.debug("%s %s -> %s in %.3fs", method, safe_url, status, self._clock() - started)
        if status < 400:
            return response
        error = self._error(method, response)
        if status == 429:
            with self._lock:
                self.stats.throttled += 1
            assert isinstance(error, RateLimited)
            log.info("%s %s: throttled, retry after %s s", method, safe_url, error.retry_after)
            raise _Retry(error, error.retry_after)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._utcnow())
        if status in extra_retry or (status in _RETRYABLE_STATUS and (repeatable or status == 503)):
            log.warning("%s %s: HTTP %s, will retry", method, safe_url, status)
            raise _Retry(error, retry_after)
        if status in _RETRYABLE_STATUS:
            # A write answered 500/502/504 may have been carried out, the answer lost on the
            # way: it is not repeated.
            log.warning("%s %s: HTTP %s: outcome unknown", method, safe_url, status)
            raise _unknown(error)
        raise error

    def _error(self, method: str, response: requests.Response) -> ApiError:
        status = response.status_code
        body: Any
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        try:
            details = self._error_parser(status, body)
        except Exception:  # a parser bug must not hide the real error
            log.exception("error parser failed for HTTP %s", status)
            details = default_error_parser(status, body)
        kw: dict[str, Any] = {
            "status": status,
            "body_excerpt": self._excerpt(response),
            "request_id": self._request_id(response),
            "method": method,
            "url": self._safe(response.url or ""),
            "code": details.code,
        }
        message = self._redact(details.message)
        if status == 401:
            return AuthError(message, **kw)
        if status == 403:
            return PermissionDeniedError(message, **kw)
        if status == 404:
            return NotFound(message, **kw)
        if status == 409:
            return Conflict(message, **kw)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._utcnow())
            return RateLimited(message, retry_after=retry_after, **kw)
        if status in (400, 422):
            return ValidationError(message, fields=details.fields, **kw)
        if status >= 500:
            return TransientError(message, **kw)
        return ApiError(message, **kw)

    # -- tenacity hooks ---------------------------------------------------------------------

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if state.attempt_number >= self.policy.max_attempts:
            return True
        if isinstance(exc, _Retry):
            if state.idle_for + state.upcoming_sleep > self.policy.max_total_wait:
                return True
            if (
                isinstance(exc.error, RateLimited)
                and exc.wait is not None
                and exc.wait > self.policy.max_retry_after
            ):
                return True  # the helpdesk asks for a long pause: let the caller reschedule
        told_to_wait = (
            isinstance(exc, _Retry) and isinstance(exc.error, RateLimited) and exc.wait is not None
        )
        # Waiting out a 429's Retry-After adds no load, so it does not spend the budget; blind
        # retries of failures (5xx, timeouts) do.
        if not told_to_wait and not self.budget.withdraw():
            log.warning("retry budget exhausted: failing fast")
            return True
        return False

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and isinstance(exc.error, RateLimited):
            if exc.wait is not None:
                return float(exc.wait) + self._rng.uniform(0, 0.25)  # jitter past the reset
            return self.policy.default_retry_after
        if isinstance(exc, _Retry) and exc.wait is not None:
            return min(exc.wait, self.policy.max_retry_after)
        ceiling = min(
            self.policy.backoff_max,
            self.policy.backoff_base * float(2 ** (state.attempt_number - 1)),
        )
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # "equal jitter"

    def _sleep_for_retry(self, seconds: float) -> None:
        with self._lock:
            self.stats.retry_wait_seconds += seconds
        self._sleep(seconds)

    # -- helpers ----------------------------------------------------------------------------

    def _record_rate(self, bucket: str, response: requests.Response) -> None:
        if self._rate_parser is None:
            return
        try:
            rate = self._rate_parser(response.headers)
        except Exception:
            log.exception("rate-limit parser failed")
            return
        if rate is None:
            return
        with self._lock:
            self._readings[bucket] = _Reading(rate, self._clock())

    def _excerpt(self, response: requests.Response) -> str:
        try:
            text = response.text
        except Exception:
            return ""
        text = self._redact(text[: EXCERPT_CHARS * 2], limit=None)
        return text[:EXCERPT_CHARS]

    def _request_id(self, response: requests.Response) -> str | None:
        for name in self._request_id_headers:
            value = response.headers.get(name)
            if value:
                return value
        return None

    def _safe(self, url: str) -> str:
        return self._redact.url(url)

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r})"


def not_sent(exc: BaseException) -> bool:
    """Whether a connection error provably happened before the request was sent (refused,
    connect timeout, name not resolved): looked for along the chain of wrapped errors."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, _NOT_SENT):
            return True
        linked = [*error.args, getattr(error, "reason", None), error.__cause__, error.__context__]
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return False


def _unknown(error: ApiError) -> OutcomeUnknown:
    """``error`` (a 5xx answer to a write) as the OutcomeUnknown it is."""
    return OutcomeUnknown(
        f"{error.message}; the write may have been carried out",
        status=error.status,
        body_excerpt=error.body_excerpt,
        request_id=error.request_id,
        method=error.method,
        url=error.url,
        code=error.code,
    )
