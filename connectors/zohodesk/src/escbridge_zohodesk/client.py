"""The Zoho Desk API calls escbridge makes, on the shared ``escbridge.http.ApiClient``.

One method per endpoint, returning Zoho's JSON (None for Desk's empty ``204``); no translation
(parse.py) and no decisions (connector.py). What Zoho needs beyond the shared client:

- every call carries ``Authorization: Zoho-oauthtoken …`` from the ``TokenManager`` and the
  mandatory ``orgId`` header (except ``/organizations``, which lists the orgs);
- a 401 refreshes the token once and repeats the call;
- a 429 ``THRESHOLD_EXCEEDED`` (daily credits gone) becomes ``RateLimited`` with ``resume_at``
  (the next UTC midnight, or what Retry-After says) at once: the
  shared client would otherwise retry it like the concurrency 429 ``TOO_MANY_REQUESTS``, and
  nothing changes for hours. A response hook on this client's own session does it, before the
  retry loop sees the response;
- ``X-Rate-Limit-Remaining-v3`` / ``-Request-Weight-v3`` are read into ``credits``;
- at most ``max_concurrency`` calls run at once, below the portal's concurrency limit.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from escbridge.connector.kit import Runtime
from escbridge.errors import (
    ApiError,
    AuthError,
    FieldError,
    NotFound,
    RateLimited,
    ValidationError,
)
from escbridge.http import (
    ApiClient,
    ErrorDetails,
    RateLimit,
    RetryPolicy,
    default_error_parser,
    parse_retry_after,
)
from escbridge.secrets import redact, safe_url
from escbridge_zohodesk.config import ZohoDeskConfig
from escbridge_zohodesk.oauth import TokenManager

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CREDITS = "credits"  # one rate-limit bucket: credits belong to the whole portal
UPDATE_MANY_MAX = 50  # UNCONFIRMED maximum; the UI's mass action and Zoho's samples use 50
# associateTag/dissociateTag body ``tags``: 1..51 names of 3..50 characters matching
# TAG_PATTERN, never "null" (zohodesk-oas v1.0/TicketTag.json, requestBodies tagArray and
# associateTags_tagArray). Python's re has no \P{InBasicLatin}: "any non-ASCII character".
TAGS_PER_CALL = 51
TAG_MIN, TAG_MAX = 3, 50
TAG_PATTERN = re.compile(r"^(?!null$)[a-zA-Z0-9_.\-+%\s\u0080-\U0010ffff]{3,}$")
PAGE = 100
NO_REFRESH_CODES = frozenset({"SCOPE_MISMATCH", "OAUTH_ORG_MISMATCH"})

_HINTS = {
    "SCOPE_MISMATCH": (
        "the OAuth token lacks a scope this call needs (docs/helpdesks/zohodesk.md, step 2)"
    ),
    "OAUTH_ORG_MISMATCH": "org_id is not an organisation of the user who made the refresh token",
    "INVALID_OAUTH": "the access token is invalid or has expired",
    "LICENSE_ACCESS_LIMITED": "the portal's Zoho Desk edition does not include this",
}


def parse_error(status: int, body: Any) -> ErrorDetails:
    """Zoho's ``{"errorCode", "message", "errors": [{"fieldName": "/x", "errorType"}]}``."""
    if not isinstance(body, Mapping) or "errorCode" not in body:
        return default_error_parser(status, body)
    code = str(body["errorCode"])
    message = str(body.get("message") or code)
    hint = _HINTS.get(code)
    if code == "LICENSE_ACCESS_LIMITED" and body.get("feature"):
        hint = f"{hint} (feature {body.get('feature')}, edition {body.get('editionType')})"
    if hint and hint.lower() not in message.lower():
        message = f"{message} — {hint}"
    fields = []
    for item in body.get("errors") or ():
        if isinstance(item, Mapping) and item.get("fieldName"):
            name = str(item["fieldName"]).lstrip("/").replace("/", ".")
            kind = str(item.get("errorType") or "invalid")
            fields.append(FieldError(name, kind, kind))
    return ErrorDetails(message, code, tuple(fields))


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """``X-Rate-Limit-Remaining-v3``: the portal's credits left today (no window is given)."""
    remaining = _int(headers.get("X-Rate-Limit-Remaining-v3"))
    if remaining is None:
        return None
    return RateLimit(remaining, None, None)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def next_utc_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Credits:
    """The latest figures Desk reported: credits left today and what the last call cost."""

    remaining: int | None = None
    last_weight: int | None = None


class _ZohoAuth(requests.auth.AuthBase):
    """Adds the current access token and the orgId header to every Desk request."""

    def __init__(self, tokens: TokenManager, org_id: str, local: threading.local) -> None:
        self._tokens = tokens
        self._org_id = org_id
        self._local = local

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._tokens.token()
        self._local.token = token
        r.headers["Authorization"] = f"Zoho-oauthtoken {token}"
        path = urlsplit(r.url or "").path.rstrip("/")
        if not path.endswith("/organizations"):
            r.headers["orgId"] = self._org_id
        return r

    def __repr__(self) -> str:
        return "ZohoAuth(***)"


class DeskClient:
    """Zoho Desk API v1 for one portal."""

    def __init__(
        self,
        config: ZohoDeskConfig,
        tokens: TokenManager,
        *,
        runtime: Runtime | None = None,
    ) -> None:
        runtime = runtime or Runtime()
        self.config = config
        self.tokens = tokens
        self._utcnow = runtime.utcnow
        self._local = threading.local()
        self.credits = Credits()
        session = runtime.session or requests.Session()
        session.hooks.setdefault("response", []).append(self._on_response)
        self.api = ApiClient(
            "",
            auth=_ZohoAuth(tokens, config.org_id, self._local),
            secrets=config.secret_values(),
            timeout=(config.connect_timeout, config.read_timeout),
            policy=RetryPolicy(
                max_attempts=config.max_attempts, default_retry_after=2.0, max_retry_after=120.0
            ),
            error_parser=parse_error,
            rate_limit_parser=parse_rate_limit,
            user_agent="escbridge-zohodesk",
            **{**runtime.client_kwargs(), "session": session},
        )
        self._slots = threading.BoundedSemaphore(config.max_concurrency)

    # -- the choke point -----------------------------------------------------------------------

    @property
    def root(self) -> str:
        return self.tokens.pair.desk + API_PREFIX

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One Desk call: JSON body, or None for 204/empty; refreshes the token once on 401.

        ``idempotent`` as ``ApiClient.call``: a write so marked is repeated after a lost answer.
        """
        with self._slots:
            try:
                return self.api.call(
                    method,
                    self.root + path,
                    params=params,
                    json=json,
                    bucket=CREDITS,
                    idempotent=idempotent,
                )
            except AuthError as exc:
                if exc.code in NO_REFRESH_CODES:
                    raise
                fresh = self.tokens.refresh_after_rejection(getattr(self._local, "token", None))
                if fresh is None:
                    raise _refused_again(exc) from None
                log.info("zohodesk: access token refused (%s); refreshed and retrying", exc.code)
                try:
                    return self.api.call(
                        method,
                        self.root + path,
                        params=params,
                        json=json,
                        bucket=CREDITS,
                        idempotent=idempotent,
                    )
                except AuthError as again:
                    if again.code not in NO_REFRESH_CODES:
                        self.tokens.mark_refused(getattr(self._local, "token", None) or fresh)
                        raise _refused_again(again) from None
                    raise

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        remaining = _int(response.headers.get("X-Rate-Limit-Remaining-v3"))
        weight = _int(response.headers.get("X-Rate-Limit-Request-Weight-v3"))
        if remaining is not None:
            self.credits.remaining = remaining
        if weight is not None:
            self.credits.last_weight = weight
        if response.status_code != 429:
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, Mapping) and body.get("errorCode") == "THRESHOLD_EXCEEDED":
            self.credits.remaining = 0
            raise self._credits_error(response, body)

    def _credits_error(self, response: requests.Response, body: Mapping[str, Any]) -> RateLimited:
        now = self._utcnow()
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        resume_at = now + timedelta(seconds=retry_after) if retry_after is not None else None
        if resume_at is None:
            resume_at = next_utc_midnight(now)
            retry_after = (resume_at - now).total_seconds()
        secrets = self.config.secret_values()
        return RateLimited(
            "Zoho Desk's daily API credits for this portal are used up "
            f"({body.get('message') or 'THRESHOLD_EXCEEDED'}); escbridge stops and resumes at "
            f"{resume_at:%Y-%m-%d %H:%M} UTC",
            resume_at=resume_at,
            retry_after=retry_after,
            status=429,
            code="THRESHOLD_EXCEEDED",
            body_excerpt=redact(response.text[:500], secrets),
            method=(response.request.method or "") if response.request is not None else "",
            url=safe_url((response.url or "").split("?", 1)[0], secrets),
        )

    def ensure_credits(self, reserve: int) -> None:
        """Stop a sync before it eats into credits other integrations on the portal need."""
        remaining = self.credits.remaining
        if reserve and remaining is not None and remaining <= reserve:
            now = self._utcnow()
            resume_at = next_utc_midnight(now)
            raise RateLimited(
                f"only {remaining} Zoho Desk API credits are left today, at or below the "
                f"credit_reserve of {reserve}; escbridge stops syncing until "
                f"{resume_at:%Y-%m-%d} UTC",
                resume_at=resume_at,
                retry_after=(resume_at - now).total_seconds(),
                code="CREDIT_RESERVE",
            )

    # -- endpoints -----------------------------------------------------------------------------

    def organizations(self) -> list[dict[str, Any]]:
        return _data(self.call("GET", "/organizations"))

    def myinfo(self) -> dict[str, Any]:
        """The agent escbridge acts as (UNCONFIRMED endpoint: a failure means "unknown")."""
        body = self.call("GET", "/myinfo")
        return dict(body) if isinstance(body, Mapping) else {}

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        body = self.call(
            "GET",
            f"/tickets/{_seg(ticket_id)}",
            params={"include": "contacts,assignee,departments,team"},
        )
        if not isinstance(body, Mapping):
            raise NotFound(f"ticket {ticket_id}: empty answer", status=204, code="EMPTY")
        return dict(body)

    def update_ticket(self, ticket_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        body = self.call("PATCH", f"/tickets/{_seg(ticket_id)}", json=dict(fields))
        return dict(body) if isinstance(body, Mapping) else {}

    def move_ticket(self, ticket_id: str, department_id: str) -> None:
        self.call(
            "POST",
            f"/tickets/{_seg(ticket_id)}/move",
            params={"departmentId": department_id},
            json={"departmentId": department_id},
            idempotent=True,  # moving to the department it is in changes nothing
        )

    def comments(self, ticket_id: str) -> Iterator[dict[str, Any]]:
        """Comments, newest first (lazily, a page at a time)."""
        start = 0
        while True:
            page = _data(
                self.call(
                    "GET",
                    f"/tickets/{_seg(ticket_id)}/comments",
                    params={"from": start, "limit": PAGE, "sortBy": "-commentedTime"},
                )
            )
            yield from page
            if len(page) < PAGE:
                return
            start += PAGE

    def add_comment(self, ticket_id: str, content: str, *, public: bool) -> dict[str, Any]:
        body = self.call(
            "POST",
            f"/tickets/{_seg(ticket_id)}/comments",
            json={"content": content, "isPublic": public, "contentType": "plainText"},
        )
        return dict(body) if isinstance(body, Mapping) else {}

    def delete_comment(self, ticket_id: str, comment_id: str) -> None:
        self.call(
            "DELETE", f"/tickets/{_seg(ticket_id)}/comments/{_seg(comment_id)}", idempotent=True
        )

    def update_many(
        self, field: str, ids: Sequence[str], value: Any, *, custom: bool = False
    ) -> None:
        """One field on up to 50 tickets (Desk answers 204 with no body).

        Setting a field to a value twice creates nothing (no comment, no e-mail): marked
        idempotent, so a lost answer is simply repeated.
        """
        if not 0 < len(ids) <= UPDATE_MANY_MAX:
            raise ValueError(f"updateMany takes 1 to {UPDATE_MANY_MAX} ids, not {len(ids)}")
        self.call(
            "POST",
            "/tickets/updateMany",
            json={
                "fieldName": field,
                "isCustomField": custom,
                "ids": list(ids),
                "fieldValue": value,
            },
            idempotent=True,
        )

    def tags(self, ticket_id: str) -> list[str]:
        """The names of a ticket's tags: ``GET /tickets/{id}/tags`` answers
        ``{"tags": [{"id", "name", "tagType"}]}`` (TicketTag.json; scope Desk.tickets.READ)."""
        body = self.call("GET", f"/tickets/{_seg(ticket_id)}/tags")
        items = body.get("tags") if isinstance(body, Mapping) else None
        return [
            str(t["name"])
            for t in items or ()
            if isinstance(t, Mapping) and isinstance(t.get("name"), str)
        ]

    def associate_tags(self, ticket_id: str, names: Sequence[str]) -> None:
        """Add tags (scope Desk.tickets.CREATE). Not marked idempotent: an answer lost on the
        way is settled by reading the tags again (BaseConnector), never by sending it again."""
        self.call("POST", f"/tickets/{_seg(ticket_id)}/associateTag", json=_tag_body(names))

    def dissociate_tags(self, ticket_id: str, names: Sequence[str]) -> None:
        """Remove tags (scope Desk.tickets.CREATE); Desk answers 200 with no body."""
        self.call("POST", f"/tickets/{_seg(ticket_id)}/dissociateTag", json=_tag_body(names))

    def search(self, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
        """One page of /tickets/search: the tickets and Desk's ``count`` (None if not sent)."""
        body = self.call("GET", "/tickets/search", params=params)
        if not isinstance(body, Mapping):
            return [], 0  # 204: nothing matched
        count = body.get("count")
        try:
            total = int(count) if count is not None else None
        except (TypeError, ValueError):
            total = None
        return _data(body), total

    def teams(self) -> list[dict[str, Any]]:
        body = self.call("GET", "/teams")
        if isinstance(body, Mapping) and isinstance(body.get("teams"), list):
            return [dict(t) for t in body["teams"] if isinstance(t, Mapping)]
        return _data(body)

    def departments(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            page = _data(self.call("GET", "/departments", params={"from": start, "limit": PAGE}))
            out.extend(page)
            if len(page) < PAGE:
                return out
            start += PAGE

    def ticket_fields(self) -> list[dict[str, Any]]:
        """Ticket field definitions: /organizationFields, else /fields (which is current is
        UNCONFIRMED; the first that exists is used)."""
        try:
            return _data(self.call("GET", "/organizationFields", params={"module": "tickets"}))
        except (NotFound, ValidationError) as exc:
            log.info("zohodesk: /organizationFields unavailable (%s); trying /fields", exc.code)
        return _data(self.call("GET", "/fields", params={"module": "tickets"}))


def _refused_again(exc: AuthError) -> AuthError:
    return AuthError(
        f"{exc.message} — a new access token was refused too: check org_id and that the user "
        "still has Zoho Desk access",
        status=exc.status,
        body_excerpt=exc.body_excerpt,
        request_id=exc.request_id,
        method=exc.method,
        url=exc.url,
        code=exc.code,
    )


def valid_tag(name: str) -> bool:
    """Whether Desk's tag API takes ``name`` (see TAG_PATTERN)."""
    return TAG_MIN <= len(name) <= TAG_MAX and TAG_PATTERN.match(name) is not None


def _tag_body(names: Sequence[str]) -> dict[str, list[str]]:
    if not 0 < len(names) <= TAGS_PER_CALL or not all(valid_tag(n) for n in names):
        raise ValueError(f"Desk takes 1 to {TAGS_PER_CALL} valid tag names, not {list(names)!r}")
    return {"tags": list(names)}


def _seg(value: str) -> str:
    """An id as one URL path segment (ids are digits; anything else is escaped, not trusted)."""
    return quote(str(value), safe="")


def _data(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, Mapping):
        items = body.get("data")
        if isinstance(items, list):
            return [dict(i) for i in items if isinstance(i, Mapping)]
    return []


def error_body(exc: ApiError) -> Any:
    """The JSON of an error's body excerpt, when it is JSON."""
    try:
        return json.loads(exc.body_excerpt) if exc.body_excerpt else None
    except ValueError:
        return None
