"""The Zendesk Support API calls escbridge makes, on the shared ``escbridge.http.ApiClient``.

One method per endpoint, returning Zendesk's JSON; no translation here (that is parse.py) and
no decisions (that is connector.py). Rate-limit buckets name Zendesk's per-endpoint limits so
pacing the Update Ticket limit does not slow reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from escbridge.connector.kit import Runtime
from escbridge.http import ApiClient, RetryPolicy
from escbridge.secrets import redact
from escbridge_zendesk.config import ZendeskConfig
from escbridge_zendesk.parse import parse_error, parse_rate_limit

log = logging.getLogger(__name__)

UPDATE_BUCKET = "tickets-update"
INCREMENTAL_BUCKET = "incremental"
SEARCH_BUCKET = "search"
MAX_BATCH = 100  # update_many and show_many take at most 100 tickets
SEARCH_CAP = 1000  # search returns at most 1,000 results per query
API_WARN_HEADER = "x-zendesk-api-warn"
COMMENTS_PER_PAGE = 25  # newest comments read per event: enough to get past escbridge's notes


class BearerAuth(requests.auth.AuthBase):
    """OAuth bearer token; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(***)"


class TokenAuth(requests.auth.HTTPBasicAuth):
    """API token: HTTP Basic with ``{email}/token`` and the token; repr hides the token."""

    def __init__(self, email: str, token: str) -> None:
        super().__init__(f"{email}/token", token)

    def __repr__(self) -> str:
        return f"TokenAuth({self.username!r}, ***)"


def auth_for(config: ZendeskConfig) -> requests.auth.AuthBase:
    if config.oauth_token is not None:
        return BearerAuth(config.oauth_token.get_secret_value())
    assert config.api_token is not None and config.email
    return TokenAuth(config.email, config.api_token.get_secret_value())


class ZendeskApi:
    """Thin, typed-error Zendesk API over ApiClient. ``client.stats`` counts calls and 429s."""

    def __init__(
        self,
        config: ZendeskConfig,
        *,
        runtime: Runtime | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.client = ApiClient(
            config.api_url,
            auth=auth_for(config),
            secrets=config.secret_values(),
            timeout=(config.connect_timeout, config.read_timeout),
            policy=policy or RetryPolicy(max_attempts=config.max_attempts),
            error_parser=parse_error,
            rate_limit_parser=parse_rate_limit,
            user_agent="escbridge-zendesk",
            on_response=self._log_api_warning,
            **(runtime or Runtime()).client_kwargs(),
        )

    def _log_api_warning(self, method: str, url: str, response: requests.Response) -> None:
        """Log Zendesk's ``x-zendesk-api-warn`` header at WARNING, with the request it answers.

        Real responses name request keys Zendesk ignored in it, e.g. ``{:allowed_parameters=>
        {:controller=>"tickets", :action=>"update", :unpermitted_keys=>["ticket.id"], ...}}``
        (recorded in facetoe/zenpy's update-single betamax cassette): a sign that part of a
        write was silently dropped. ``url`` is already redacted; only its path is logged.
        """
        warning = response.headers.get(API_WARN_HEADER)
        if warning:
            log.warning(
                "Zendesk ignored part of %s %s: %s: %s",
                method,
                urlsplit(url).path,
                API_WARN_HEADER,
                redact(warning, self.config.secret_values())[:500],
            )

    # -- users and groups ---------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        data = self.client.call("GET", "/users/me.json")
        user: dict[str, Any] = (data or {}).get("user") or {}
        return user

    def groups(self) -> list[dict[str, Any]]:
        """Every group, through cursor pagination (``page[size]=100``, ``meta.has_more``)."""
        return list(self._cursor_pages("/groups.json", "groups"))

    def _cursor_pages(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"page[size]": 100}
        url = path
        while True:
            data = self.client.call("GET", url, params=params) or {}
            yield from data.get(key) or []
            meta = data.get("meta") or {}
            if meta.get("has_more") and meta.get("after_cursor"):
                params = {"page[size]": 100, "page[after]": meta["after_cursor"]}
                continue
            next_page = data.get("next_page")  # offset pagination if page[size] was ignored
            if not meta and next_page:
                url, params = next_page, {}
                continue
            return

    # -- tickets ------------------------------------------------------------------------------

    def ticket(self, ticket_id: str, include: str | None = None) -> dict[str, Any]:
        """``{"ticket": …}`` plus any sideloads asked for."""
        params = {"include": include} if include else None
        data: dict[str, Any] = self.client.call("GET", f"/tickets/{ticket_id}.json", params=params)
        return data

    def comments(
        self, ticket_id: str, *, sort_order: str = "desc", per_page: int = COMMENTS_PER_PAGE
    ) -> list[dict[str, Any]]:
        """List Comments ``GET /tickets/{id}/comments``: one page, newest first by default.

        Returns public comments and internal notes alike (``public`` tells them apart).
        """
        data = self.client.call(
            "GET",
            f"/tickets/{ticket_id}/comments.json",
            params={"sort_order": sort_order, "per_page": per_page},
        )
        return list((data or {}).get("comments") or [])

    def update_ticket(self, ticket_id: str, ticket: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /tickets/{id}`` with ``{"ticket": …}`` (the body never carries ``id``).

        Not repeated after a lost answer (``OutcomeUnknown``): it may add a comment."""
        assert "id" not in ticket, "Zendesk rejects ticket.id in the PUT body"
        data: dict[str, Any] = self.client.call(
            "PUT", f"/tickets/{ticket_id}.json", json={"ticket": dict(ticket)}, bucket=UPDATE_BUCKET
        )
        return data

    def add_tags(self, ticket_id: str, tags: Sequence[str], stamp: str | None) -> list[str]:
        """Tags API ``PUT /tickets/{id}/tags``: adds without touching other tags."""
        body: dict[str, Any] = {"tags": list(tags)}
        if stamp:
            body |= {"safe_update": "true", "updated_stamp": stamp}
        data = self.client.call(  # adding tags twice adds nothing: safe to repeat
            "PUT",
            f"/tickets/{ticket_id}/tags.json",
            json=body,
            bucket=UPDATE_BUCKET,
            idempotent=True,
        )
        return list((data or {}).get("tags") or [])

    def remove_tags(self, ticket_id: str, tags: Sequence[str]) -> list[str]:
        data = self.client.call(
            "DELETE",
            f"/tickets/{ticket_id}/tags.json",
            json={"tags": list(tags)},
            bucket=UPDATE_BUCKET,
            idempotent=True,
        )
        return list((data or {}).get("tags") or [])

    def update_many(self, tickets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Batch form ``{"tickets": [{"id": …, …}]}`` (≤100); returns the job_status."""
        if not 0 < len(tickets) <= MAX_BATCH:
            raise ValueError(f"update_many takes 1 to {MAX_BATCH} tickets, not {len(tickets)}")
        data = self.client.call(
            "PUT",
            "/tickets/update_many.json",
            json={"tickets": [dict(t) for t in tickets]},
            bucket=UPDATE_BUCKET,
        )
        job: dict[str, Any] = (data or {}).get("job_status") or {}
        return job

    def job_status(self, job_id: str) -> dict[str, Any]:
        data = self.client.call("GET", f"/job_statuses/{job_id}.json")
        job: dict[str, Any] = (data or {}).get("job_status") or {}
        return job

    # -- sync ---------------------------------------------------------------------------------

    def incremental(
        self, *, start_time: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """Cursor-based incremental export (Admin only, 10 requests/minute)."""
        params: dict[str, Any] = {"include": "metric_sets"}
        if cursor:
            params["cursor"] = cursor
        else:
            params["start_time"] = int(start_time or 0)
        data: dict[str, Any] = self.client.call(
            "GET", "/incremental/tickets/cursor.json", params=params, bucket=INCREMENTAL_BUCKET
        )
        return data

    def search(self, query: str, *, page: int = 1, per_page: int = 100) -> dict[str, Any]:
        """Search tickets, oldest update first (offset pagination; 1,000 results per query)."""
        data: dict[str, Any] = self.client.call(
            "GET",
            "/search.json",
            params={
                "query": query,
                "sort_by": "updated_at",
                "sort_order": "asc",
                "page": page,
                "per_page": per_page,
            },
            bucket=SEARCH_BUCKET,
        )
        return data
