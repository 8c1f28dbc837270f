"""Freshdesk's dialect of the shared HTTP layer: its error bodies, rate-limit headers and paging.

Everything goes through ``escbridge.http.ApiClient``; this module only supplies the two hooks it
asks for and the ``Link: <...>; rel="next"`` paging Freshdesk's list endpoints use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from escbridge.connector.kit import Runtime
from escbridge.errors import ApiError, FieldError
from escbridge.http import ApiClient, ErrorDetails, RateLimit, RetryBudget, RetryPolicy

from .config import FreshdeskConfig, base_url_for

__all__ = [
    "PER_PAGE",
    "FreshdeskApi",
    "freshdesk_error_parser",
    "make_rate_limit_parser",
    "next_link",
]

PER_PAGE = 100  # the maximum Freshdesk accepts; more is an error
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
    """One method per Freshdesk endpoint escbridge uses, returning Freshdesk's JSON.

    Two ApiClients share one session: ``client`` for reads and idempotent writes (retried),
    ``once`` for creating notes and replies. ``once`` never retries by itself, and a POST whose
    answer was lost (timeout, 504, reset) raises ``OutcomeUnknown``: it may have created the
    note, and only the caller can look at the ticket (after a wait) before trying again.
    """

    def __init__(
        self,
        config: FreshdeskConfig,
        *,
        runtime: Runtime | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        runtime = runtime or Runtime()
        session = runtime.session or requests.Session()
        policy = policy or RetryPolicy(max_attempts=config.max_attempts)
        common: dict[str, Any] = {
            **runtime.client_kwargs(),
            "session": session,
            "auth": (config.api_key.get_secret_value(), "X"),
            "headers": {"Content-Type": "application/json"},
            "secrets": config.secret_values(),
            "timeout": (config.connect_timeout, config.read_timeout),
            "error_parser": freshdesk_error_parser,
            "rate_limit_parser": make_rate_limit_parser(float(config.rate_limit_window)),
            "budget": RetryBudget(clock=runtime.clock),
            "user_agent": "escbridge-freshdesk",
        }
        base = base_url_for(config)
        self.client = ApiClient(base, policy=policy, **common)
        self.once = ApiClient(
            base,
            policy=RetryPolicy(max_attempts=1, max_retry_after=policy.max_retry_after),
            **common,
        )

    # -- paging ----------------------------------------------------------------------------

    def pages(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[Any, str | None]]:
        """(page JSON, next URL) for every page, following ``Link: rel="next"``."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        while url is not None:
            response = self.client.request("GET", url, params=query)
            url = self._on_account(next_link(response))
            yield (response.json() if response.content else []), url
            query = None  # the next link carries the whole query

    def _on_account(self, link: str | None) -> str | None:
        """The next-page link, re-rooted on our own base URL.

        The API key goes with every request, so a link is never followed to another host: its
        path after ``/api/v2`` and its query are kept, the host is always ours.
        """
        if link is None:
            return None
        parts = urlsplit(link)
        _, sep, rest = parts.path.partition("/api/v2/")
        if not sep:
            raise ApiError(f"unexpected next-page link path: {parts.path[:80]}", method="GET")
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.client.base_url}/{rest}{query}"

    def _all(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page, _ in self.pages(path, params):
            out += [item for item in page or [] if isinstance(item, dict)]
        return out

    # -- account -----------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The agent the API key belongs to (``GET /agents/me``)."""
        data = self.client.call("GET", "/agents/me")
        return data if isinstance(data, dict) else {}

    def groups(self) -> list[dict[str, Any]]:
        return self._all("/groups", {"per_page": PER_PAGE})

    def ticket_fields(self) -> list[dict[str, Any]]:
        data = self.client.call("GET", "/ticket_fields")
        return [f for f in data or [] if isinstance(f, dict)]

    # -- tickets -----------------------------------------------------------------------------

    def ticket(self, ticket_id: str, include: str | None = None) -> dict[str, Any]:
        params = {"include": include} if include else None
        data = self.client.call("GET", f"/tickets/{_num(ticket_id)}", params=params)
        return data if isinstance(data, dict) else {}

    def update_ticket(self, ticket_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /tickets/{id}``: a partial update; answers 200 with the whole ticket."""
        data = self.client.call("PUT", f"/tickets/{_num(ticket_id)}", json=dict(body))
        return data if isinstance(data, dict) else {}

    def bulk_update(self, ids: Sequence[str], properties: Mapping[str, Any]) -> Any:
        """``POST /tickets/bulk_update`` with the ``bulk_action`` wrapper.

        Re-sending the same properties is harmless (no note, no e-mail), so it is marked
        idempotent: retried after a lost answer too.
        """
        payload = {"bulk_action": {"ids": [int(i) for i in ids], "properties": dict(properties)}}
        return self.client.call("POST", "/tickets/bulk_update", json=payload, idempotent=True)

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``. Always built from the id on our own base URL: following the
        ``href`` from a response verbatim could send the API key to another host."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", job_id):
            raise ValueError(f"not a Freshdesk job id: {job_id[:20]!r}")
        data = self.client.call("GET", f"/jobs/{job_id}")
        return data if isinstance(data, dict) else {}

    def conversations(self, ticket_id: str) -> list[dict[str, Any]]:
        """Every reply and note of a ticket, oldest first."""
        return self._all(f"/tickets/{_num(ticket_id)}/conversations", {"per_page": PER_PAGE})

    def create_note(self, ticket_id: str, html: str) -> dict[str, Any]:
        """``POST /tickets/{id}/notes`` (private); one attempt, see the class docstring."""
        body = {"body": html, "private": True}
        data = self.once.call("POST", f"/tickets/{_num(ticket_id)}/notes", json=body)
        return data if isinstance(data, dict) else {}

    def create_reply(self, ticket_id: str, html: str) -> dict[str, Any]:
        """``POST /tickets/{id}/reply`` (public, emailed to the requester); one attempt."""
        data = self.once.call("POST", f"/tickets/{_num(ticket_id)}/reply", json={"body": html})
        return data if isinstance(data, dict) else {}


def _num(ticket_id: str) -> int:
    """Ticket ids go into URL paths: only digits, so a webhook can never inject a path."""
    text = str(ticket_id).strip()
    if not text.isdigit():
        raise ValueError(f"not a Freshdesk ticket id: {text[:20]!r}")
    return int(text)
