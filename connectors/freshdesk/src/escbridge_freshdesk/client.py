"""Freshdesk's dialect of the shared HTTP layer: its error bodies, rate-limit headers and paging.

Everything goes through ``escbridge.http.ApiClient``; this module only supplies the two hooks it
asks for and the ``Link: <...>; rel="next"`` paging Freshdesk's list endpoints use.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

from escbridge.http import (
    ApiClient,
    ErrorDetails,
    FieldError,
    RateLimit,
    RetryBudget,
    RetryPolicy,
)

from .config import FreshdeskConfig, base_url_for

__all__ = [
    "FreshdeskApi",
    "freshdesk_error_parser",
    "make_rate_limit_parser",
    "next_link",
]

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?', re.IGNORECASE)

_STATUS_TEXT = {
    401: "the API key was not accepted",
    403: "this API key's agent may not do this",
    404: "no such record (or not visible to this API key's agent)",
    429: "Freshdesk rate limit reached",
}


def freshdesk_error_parser(status: int, body: Any) -> ErrorDetails:
    """Freshdesk error bodies -> message, code and field errors.

    400: ``{"description": "Validation failed", "errors": [{"field", "message", "code"}]}``;
    401/403/429: ``{"code", "message"}`` (or only ``message``); 404 for a missing record: an
    empty body; 404 for an unknown account: a one-space body.
    """
    if isinstance(body, Mapping):
        fields = tuple(
            FieldError(
                field=str(item.get("field") or item.get("nested_field") or "?"),
                message=str(item.get("message") or ""),
                code=str(item["code"]) if item.get("code") is not None else None,
            )
            for item in body.get("errors") or ()
            if isinstance(item, Mapping)
        )
        code = body.get("code")
        if code is None and fields:
            code = fields[0].code
        message = body.get("description") or body.get("message") or _STATUS_TEXT.get(status)
        return ErrorDetails(
            str(message or f"HTTP {status}"),
            str(code) if code is not None else None,
            fields,
        )
    if status == 404 and isinstance(body, str):
        # A blank (not empty) body is what Freshdesk answers for a domain that has no account.
        return ErrorDetails("no Freshdesk account at this domain (check 'domain')", "no_account")
    if isinstance(body, str) and body.strip():
        return ErrorDetails(body.strip()[:200])
    return ErrorDetails(_STATUS_TEXT.get(status, f"HTTP {status}"))


def make_rate_limit_parser(window: float) -> Callable[[Mapping[str, str]], RateLimit | None]:
    """``X-RateLimit-Remaining``/``-Total`` -> a reading the ApiClient paces on.

    Freshdesk does not say when the window resets, so the reading assumes a whole window ahead:
    conservative, it slows a sync down early rather than running into 429s. On a 429 the
    headers are absent and ``Retry-After`` governs instead.
    """

    def parse(headers: Mapping[str, str]) -> RateLimit | None:
        remaining = _int(headers.get("X-RateLimit-Remaining"))
        total = _int(headers.get("X-RateLimit-Total"))
        if remaining is None and total is None:
            return None
        return RateLimit(remaining, total, window)

    return parse


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def next_link(response: requests.Response) -> str | None:
    """The URL of the next page from the ``Link`` header, or None on the last page."""
    header = response.headers.get("Link") or response.headers.get("link")
    if not header:
        return None
    match = _NEXT.search(header)
    return match.group(1) if match else None


class FreshdeskApi:
    """Two ApiClients over one session: ``api`` for reads and idempotent writes, ``once`` for
    creating notes and replies.

    ``once`` never retries on its own: a POST whose answer was lost (timeout, 504, reset) may
    have created the note, and only the caller can look before trying again.
    """

    def __init__(
        self,
        config: FreshdeskConfig,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        session = session or requests.Session()
        self.sleep: Callable[[float], None] = sleep or time.sleep
        auth = (config.api_key.get_secret_value(), "X")
        parser = make_rate_limit_parser(float(config.rate_limit_window))
        budget = RetryBudget()
        common: dict[str, Any] = {
            "session": session,
            "auth": auth,
            "headers": {"Content-Type": "application/json"},
            "secrets": config.secrets(),
            "error_parser": freshdesk_error_parser,
            "rate_limit_parser": parser,
            "budget": budget,
            "user_agent": "escbridge-freshdesk",
            "sleep": self.sleep,
        }
        base = base_url_for(config)
        self.api = ApiClient(base, policy=policy, **common)
        once_policy = RetryPolicy(
            max_attempts=1,
            max_retry_after=(policy or RetryPolicy()).max_retry_after,
        )
        self.once = ApiClient(base, policy=once_policy, **common)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.api.call("GET", path, params=params)

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every page of a list endpoint, following ``Link: rel="next"`` until it is absent."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        while url is not None:
            response = self.api.request("GET", url, params=query)
            yield response.json() if response.content else []
            url = next_link(response)
            query = None  # the next link carries the whole query
