"""A Zendesk emulator (Flask) for `escbridge demo`, end-to-end tests and benchmarks.

It emulates what the connector uses, with the shapes of ../shared/reference/zendesk.md: API-token
(``{email}/token``) and OAuth bearer auth; ``/users/me``; groups with cursor pagination;
show/update ticket with ``safe_update`` (409 on a stale ``updated_stamp``), 404 and 422 bodies;
List Comments (``sort_order``, offset pages) over seeded comments and those added through
``ticket.comment``, public and internal; the Tags API; ``update_many`` (batch and bulk forms, ≤100,
400 ``TooManyValues``) with job statuses processed in the background; the cursor incremental export
(admin only, its own per-minute limit, changes of the last minute held back); search (offset pages,
1,000-result cap answered with 422); rate limits (account-wide and Update Ticket, sliding windows)
with the real header names and a text/plain 429 + ``Retry-After``; and signed webhooks —
event-subscription payloads or the trigger body — fired to a URL whenever a ticket changes.

Where Zendesk's behaviour is undocumented the emulator picks one side and says so, and the
connector handles both: the 409 body; ``additional_tags`` on a single PUT
(``single_put_additional_tags``); the failed-entry shape of job results (the real one —
``index`` only, job ``failed`` — with ``job_failures_by_index``); whether job items
count against the Update Ticket limit (here: each ticket costs one unit, the cautious reading).

Control endpoints under ``/__sandbox/`` create tickets and make "human" edits over HTTP.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from flask import Flask, Response, g, jsonify, request

from escbridge.connector.kit import SlidingWindow
from escbridge.sandbox import Change
from escbridge.sandbox.app import (
    Emulator,
    HttpError,
    basic_credentials,
    in_request,
    public,
    respond,
)
from escbridge_zendesk.parse import format_time, parse_time
from escbridge_zendesk.webhook import (
    INVOCATION_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    sign,
)

STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
TYPES = ("problem", "incident", "question", "task")
THROTTLED_TEXT = "Number of allowed API requests per minute exceeded"
CONFLICT_BODY = {
    "error": "UpdateConflict",
    "description": "Safe Update prevented the update due to outdated ticket data. "
    "Please fetch the latest ticket data and try again.",
}
TEST_SIGNING_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
_WRITABLE = {
    "subject",
    "status",
    "priority",
    "type",
    "group_id",
    "assignee_id",
    "tags",
    "additional_tags",
    "remove_tags",
    "custom_fields",
    "comment",
    "safe_update",
    "updated_stamp",
    "due_at",
    "external_id",
    "organization_id",
    "requester_id",
}


@dataclass
class SandboxUser:
    id: int
    name: str
    email: str
    role: str  # admin | agent | end-user
    api_token: str | None = None
    oauth_token: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": self.role,
            "active": True,
            "verified": True,
        }


def _record_invalid(field: str, description: str, code: str = "InvalidValue") -> HttpError:
    return HttpError(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description, "error": code}]},
        },
    )


class ZendeskSandbox(Emulator):
    """The emulator's state and its Flask ``app``. Thread-safe; time is injectable."""

    ADMIN_ID, AGENT_ID, HUMAN_ID, CUSTOMER_ID = 9001, 9002, 9003, 9100

    def __init__(
        self,
        *,
        subdomain: str = "sandbox",
        admin_email: str = "escbridge@sandbox.example",
        admin_token: str = "sandbox-admin-token",
        agent_email: str = "agent@sandbox.example",
        agent_token: str = "sandbox-agent-token",
        oauth_token: str = "sandbox-oauth-token",
        groups: Iterable[str] = ("Support", "Tier 2", "Managers", "Billing"),
        account_limit: int = 700,
        update_limit: int = 100,
        incremental_limit: int = 10,
        window_seconds: float = 60.0,
        incremental_lag_seconds: float = 60.0,
        single_put_additional_tags: bool = True,
        webhook_url: str | None = None,
        webhook_secret: str = TEST_SIGNING_SECRET,
        webhook_mode: str = "events",
        job_seconds_per_ticket: float = 0.0,
        job_failures_by_index: bool = False,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(first_id=1)
        self.subdomain = subdomain
        self.users = [
            SandboxUser(self.ADMIN_ID, "escbridge", admin_email, "admin", admin_token, oauth_token),
            SandboxUser(self.AGENT_ID, "Agent API", agent_email, "agent", agent_token),
            SandboxUser(self.HUMAN_ID, "Hannah Human", "hannah@sandbox.example", "agent"),
            SandboxUser(self.CUSTOMER_ID, "Carla Customer", "carla@customer.example", "end-user"),
        ]
        self.groups: list[dict[str, Any]] = []
        for i, name in enumerate(groups):
            self.add_group(name, default=(i == 0))
        self.account = SlidingWindow(account_limit, window_seconds, monotonic)
        self.update_limiter = SlidingWindow(update_limit, window_seconds, monotonic)
        self.incremental_limiter = SlidingWindow(incremental_limit, window_seconds, monotonic)
        self.incremental_lag = incremental_lag_seconds
        self.single_put_additional_tags = single_put_additional_tags
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_mode = webhook_mode
        self.webhook_id = "01HSANDBOXWEBHOOK0000000000"
        self.job_seconds_per_ticket = job_seconds_per_ticket
        self.job_failures_by_index = job_failures_by_index
        self.jobs: dict[str, dict[str, Any]] = {}
        self.api_warnings: list[str] = []
        self.updates_applied = 0
        self._now = wall_clock
        self._lock = threading.Lock()
        self._job_ids = itertools.count(1)
        self._comment_ids = itertools.count(40000000001)
        self.tickets.subscribe(self._on_change)
        self.app = self._make_app()

    # ------------------------------------------------------------------ data helpers

    @property
    def base_url(self) -> str:
        return f"https://{self.subdomain}.zendesk.com"

    def add_group(self, name: str, *, default: bool = False) -> dict[str, Any]:
        gid = 360000 + len(self.groups) + 1
        stamp = format_time(datetime(2024, 1, 1, tzinfo=UTC))
        group = {
            "url": f"{self.base_url}/api/v2/groups/{gid}.json",
            "id": gid,
            "is_public": True,
            "name": name,
            "description": "",
            "default": default,
            "deleted": False,
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.groups.append(group)
        return group

    def group_by_name(self, name: str) -> dict[str, Any]:
        return next(g for g in self.groups if g["name"].casefold() == name.casefold())

    def _stamp(self, previous: str | None = None) -> tuple[str, int]:
        """A new updated_at that is strictly later than ``previous`` (1 s resolution, like
        Zendesk) so a stale stamp is always detected."""
        now = self._now()
        if previous:
            prev = parse_time(previous)
            if prev is not None and prev.timestamp() >= int(now):
                now = prev.timestamp() + 1
        return format_time(datetime.fromtimestamp(int(now), UTC)), int(now)

    def _comment(
        self, author_id: Any, body: str, public: bool, created_at: str | None
    ) -> dict[str, Any]:
        """A comment in the List Comments shape (``created_at`` None: set by the update)."""
        cid = next(self._comment_ids)
        html = "".join(f"<p>{escape(line)}</p>" for line in body.splitlines()) or "<p></p>"
        return {
            "id": cid,
            "type": "Comment",
            "author_id": author_id,
            "body": body,
            "html_body": f'<div class="zd-comment" dir="auto">{html}</div>',
            "plain_body": body,
            "public": public,
            "attachments": [],
            "audit_id": cid + 1,
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "metadata": {"system": {}, "custom": {}},
            "created_at": created_at,
        }

    def create_ticket(
        self,
        *,
        subject: str = "Help, my printer is on fire!",
        description: str = "The smoke is very colorful.",
        priority: str | None = None,
        status: str = "new",
        group: str | None = None,
        tags: Iterable[str] = (),
        at: datetime | None = None,
        notify: bool = True,
        comments: Iterable[Mapping[str, Any]] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        """A ticket as a customer would open it (fires ``ticket.created`` when ``notify``).

        The description is the first public comment; ``comments`` seeds later ones, oldest
        first: ``{"body", "public" (default true), "author_id" (default the customer)}``.
        """
        tid = self.tickets.next_id()
        if at is not None:
            stamp, gen = format_time(at), int(at.timestamp())
        else:
            stamp, gen = self._stamp()
        thread = [self._comment(self.CUSTOMER_ID, description, True, stamp)]
        for c in comments:
            thread.append(
                self._comment(
                    c.get("author_id", self.CUSTOMER_ID),
                    str(c.get("body") or ""),
                    bool(c.get("public", True)),
                    stamp,
                )
            )
        record = {
            "url": f"{self.base_url}/api/v2/tickets/{tid}.json",
            "id": tid,
            "external_id": None,
            "via": {"channel": "email", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": stamp,
            "updated_at": stamp,
            "generated_timestamp": gen,
            "type": None,
            "subject": subject,
            "raw_subject": subject,
            "description": description,
            "priority": priority,
            "status": status,
            "recipient": None,
            "requester_id": self.CUSTOMER_ID,
            "submitter_id": self.CUSTOMER_ID,
            "assignee_id": None,
            "organization_id": None,
            "group_id": self.group_by_name(group)["id"] if group else None,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "has_incidents": False,
            "is_public": True,
            "due_at": None,
            "tags": sorted({t.lower() for t in tags}),
            "custom_fields": [],
            "fields": [],
            "satisfaction_rating": None,
            "custom_status_id": 1,
            "ticket_form_id": 1,
            "brand_id": 1,
            "allow_channelback": False,
            "allow_attachments": True,
            "_comments": thread,
            **extra,
        }
        return public(self.tickets.add(record, actor=self.CUSTOMER_ID, notify=notify))

    def seed(self, count: int, make: Callable[[int], Mapping[str, Any]]) -> None:
        """Many tickets at once without webhooks (``make(i)`` -> create_ticket kwargs)."""
        for i in range(count):
            self.create_ticket(notify=False, **make(i))

    def human_update(self, ticket_id: int, **changes: Any) -> dict[str, Any]:
        """An agent edits the ticket in the UI (no safe update), e.g. ``additional_tags=[…]``."""
        return self._update(ticket_id, changes, self.HUMAN_ID, single=False)

    def control_create(self, body: dict[str, Any]) -> Any:
        return {"ticket": self.create_ticket(**body)}

    def control_update(self, ticket_id: int, body: dict[str, Any]) -> Any:
        return {"ticket": public(self.human_update(ticket_id, **body))}

    def control_stats(self) -> dict[str, Any]:
        return {**super().control_stats(), "updates_applied": self.updates_applied}

    # ------------------------------------------------------------------ update logic

    def _update(
        self, ticket_id: int, obj: Mapping[str, Any], actor: int, *, single: bool
    ) -> dict[str, Any]:
        """Apply one ticket object the way Zendesk would; raise HttpError on refusal."""
        if ticket_id not in self.tickets:
            raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
        unknown = set(obj) - _WRITABLE - ({"id"} if not single else set())
        if unknown:
            warn = (
                '{:allowed_parameters=>{:controller=>"tickets", :action=>"update", '
                f":unpermitted_keys=>{sorted('ticket.' + k for k in unknown)}}}}}"
            )
            self.api_warnings.append(warn)
            if in_request():
                g.api_warn = warn
        if "updated_stamp" in obj and "safe_update" not in obj and not single:
            raise HttpError(
                400,
                {
                    "error": "InvalidValue",
                    "description": "updated_stamp requires safe_update in a batch update",
                },
            )
        self._validate(obj)

        def mutate(t: dict[str, Any]) -> None:
            stamp = obj.get("updated_stamp")
            if "safe_update" in obj and stamp is not None and stamp != t["updated_at"]:
                raise HttpError(409, CONFLICT_BODY)
            if t["status"] == "closed":
                raise _record_invalid("status", "Status: closed prevents ticket update", "Closed")
            for key in (
                "subject",
                "status",
                "priority",
                "type",
                "group_id",
                "assignee_id",
                "due_at",
                "external_id",
                "organization_id",
            ):
                if key in obj:
                    t[key] = obj[key]
            tags = set(t["tags"])
            if "tags" in obj:
                tags = {str(x).lower() for x in obj["tags"] or []}
            if not single or self.single_put_additional_tags:
                tags |= {str(x).lower() for x in obj.get("additional_tags") or []}
                tags -= {str(x).lower() for x in obj.get("remove_tags") or []}
            t["tags"] = sorted(tags)
            if "custom_fields" in obj:
                fields = {f["id"]: f for f in t["custom_fields"]}
                for f in obj["custom_fields"]:
                    fields[f["id"]] = {"id": f["id"], "value": f.get("value")}
                t["custom_fields"] = list(fields.values())
                t["fields"] = list(fields.values())
            comment = obj.get("comment")
            if isinstance(comment, Mapping) and (comment.get("body") or comment.get("html_body")):
                initial_public = bool(t["_comments"][0]["public"]) if t["_comments"] else True
                public = comment.get("public", initial_public)  # omitted: the initial value
                author = comment.get("author_id") or actor  # optional; default: the caller
                body = str(comment.get("body") or comment.get("html_body"))
                t["_comments"].append(self._comment(author, body, bool(public), None))
            t["updated_at"], t["generated_timestamp"] = self._stamp(t["updated_at"])
            if t["_comments"] and t["_comments"][-1]["created_at"] is None:
                t["_comments"][-1]["created_at"] = t["updated_at"]

        updated = self.tickets.update(ticket_id, mutate, actor=actor)
        with self._lock:
            self.updates_applied += 1
        return updated

    def _validate(self, obj: Mapping[str, Any]) -> None:
        if "priority" in obj and obj["priority"] not in (*PRIORITIES, None):
            raise _record_invalid("priority", f"Priority: {obj['priority']} is not valid")
        if "status" in obj and obj["status"] not in STATUSES:
            raise _record_invalid("status", f"Status: {obj['status']} is not valid")
        if "type" in obj and obj["type"] not in (*TYPES, None):
            raise _record_invalid("type", f"Type: {obj['type']} is not valid")
        if obj.get("group_id") is not None and not any(
            gr["id"] == obj["group_id"] and not gr["deleted"] for gr in self.groups
        ):
            raise _record_invalid("group", "Group: is invalid")
        comment = obj.get("comment")
        if comment is not None and not isinstance(comment, Mapping):
            raise _record_invalid("comment", "Comment: must be an object")

    # ------------------------------------------------------------------ jobs

    def _start_job(self, items: list[tuple[int, Mapping[str, Any]]], actor: int) -> dict[str, Any]:
        job_id = f"V3-sandbox{next(self._job_ids):06d}"
        job = {
            "id": job_id,
            "url": f"{self.base_url}/api/v2/job_statuses/{job_id}.json",
            "job_type": "bulk_update",
            "total": len(items),
            "progress": None,
            "status": "queued",
            "message": None,
            "results": None,
        }
        with self._lock:
            self.jobs[job_id] = job
        threading.Thread(
            target=self._run_job, args=(job_id, items, actor), name=job_id, daemon=True
        ).start()
        return dict(job)

    def _run_job(self, job_id: str, items: list[tuple[int, Mapping[str, Any]]], actor: int) -> None:
        results: list[dict[str, Any]] = []
        with self._lock:
            self.jobs[job_id].update(status="working", progress=0)
        for n, (tid, obj) in enumerate(items, 1):
            if self.job_seconds_per_ticket:
                time.sleep(self.job_seconds_per_ticket)
            try:
                self._update(tid, obj, actor, single=False)
                results.append(
                    {"action": "update", "status": "Updated", "success": True, "id": tid}
                )
            except HttpError as exc:
                results.append(self._failed_entry(n - 1, tid, exc))
            with self._lock:
                self.jobs[job_id].update(progress=n, message=f"Updating ticket #{tid}")
        failed = self.job_failures_by_index and any("index" in r for r in results)
        with self._lock:
            self.jobs[job_id].update(
                status="failed" if failed else "completed",
                progress=len(items),
                results=results,
                message=f"Completed at {datetime.now(UTC):%Y-%m-%d %H:%M:%S +0000}",
            )

    def _failed_entry(self, index: int, tid: int, exc: HttpError) -> dict[str, Any]:
        """A job result entry for an item that failed.

        Default: the emulator's own guess (``id``, ``status``, ``success``). With
        ``job_failures_by_index``: the shape of a real failed job (cloudbees-oss/
        zendesk-java-client issue #98) — only ``index`` (position in the batch), ``error`` and
        ``details`` — and the job's status becomes ``failed``.
        """
        body = exc.body if isinstance(exc.body, Mapping) else {}
        error = body.get("error", "Failed")
        if not self.job_failures_by_index:
            return {
                "action": "update",
                "id": tid,
                "status": "Failed",
                "success": False,
                "error": error,
                "details": body.get("description", ""),
            }
        details = body.get("details")
        reasons = [
            str(d.get("description"))
            for field in (details.values() if isinstance(details, Mapping) else ())
            for d in (field if isinstance(field, list) else ())
            if isinstance(d, Mapping) and d.get("description")
        ]
        return {
            "index": index,
            "error": error,
            "details": "; ".join(reasons) or body.get("description", ""),
        }

    # ------------------------------------------------------------------ webhooks

    def _on_change(self, change: Change) -> None:
        if not self.webhook_url:
            return
        after = change.after
        payloads: list[tuple[bytes, dict[str, str]]] = []
        if self.webhook_mode == "trigger":
            body = json.dumps(
                {
                    "escbridge": 1,
                    "ticket_id": str(after["id"]),
                    "actor_id": str(change.actor or ""),
                    "status": after["status"],
                    "priority": after["priority"] or "",
                }
            ).encode()
            payloads.append((body, {INVOCATION_HEADER: str(uuid.uuid4().int)[:12]}))
        else:
            for kind, current, previous in _event_kinds(change):
                envelope = {
                    "account_id": 18525119,
                    "detail": _event_detail(after, change.actor),
                    "event": {}
                    if kind == "ticket.created"
                    else {"current": current, "previous": previous},
                    "id": str(uuid.uuid4()),
                    "subject": f"zen:ticket:{after['id']}",
                    "time": datetime.fromtimestamp(self._now(), UTC).strftime(
                        "%Y-%m-%dT%H:%M:%S.%fZ"
                    ),  # the emulator's clock: a simulated day's events occur in that day
                    "type": f"zen:event-type:{kind}",
                    "zendesk_event_version": "2022-11-06",
                }
                payloads.append((json.dumps(envelope).encode(), {}))
        for body, extra in payloads:
            timestamp = format_time(datetime.fromtimestamp(self._now(), UTC))
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Zendesk Webhook",
                "X-Zendesk-Account-Id": "18525119",
                WEBHOOK_ID_HEADER: self.webhook_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.webhook_secret, timestamp, body),
                **extra,
            }
            self.webhooks.send(self.webhook_url, body, headers)

    # ------------------------------------------------------------------ HTTP

    def _authenticate(self) -> SandboxUser | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token = header[7:].strip()
            return next((u for u in self.users if u.oauth_token and u.oauth_token == token), None)
        credentials = basic_credentials()
        if credentials is not None:
            login, secret = credentials
            if not login.endswith("/token"):
                return None  # password auth is not emulated
            email = login.removesuffix("/token")
            return next(
                (
                    u
                    for u in self.users
                    if u.email == email and u.api_token and u.api_token == secret
                ),
                None,
            )
        return None

    def _limit(self, limiter: SlidingWindow, cost: int, header: str | None) -> None:
        decision = limiter.acquire(cost)
        if header:
            g.endpoint_rate = (header, decision)
        if not decision.allowed:
            raise HttpError(429, THROTTLED_TEXT, {"Retry-After": decision.retry_after_header})

    def _make_app(self) -> Flask:
        app = self.new_app(f"zendesk-sandbox-{id(self)}")
        sandbox = self

        def route(rule: str, methods: list[str]) -> Callable[[Any], Any]:
            def register(fn: Any) -> Any:
                app.add_url_rule(
                    f"/api/v2{rule}", view_func=fn, methods=methods, endpoint=f"{fn.__name__}"
                )
                app.add_url_rule(
                    f"/api/v2{rule}.json",
                    view_func=fn,
                    methods=methods,
                    endpoint=f"{fn.__name__}_json",
                )
                return fn

            return register

        @app.before_request
        def gate() -> Any:
            g.request_id = uuid.uuid4().hex
            g.endpoint_rate = None
            g.api_warn = None
            if request.path.startswith("/__sandbox"):
                g.user = None
                return None
            user = sandbox._authenticate()
            if user is None:
                if request.path.startswith("/api/v2/users/me") and not request.headers.get(
                    "Authorization"
                ):
                    g.user = None  # Zendesk answers /users/me anonymously
                else:
                    return respond(
                        {"error": "Couldn't authenticate you"},
                        401,
                        {"WWW-Authenticate": 'Basic realm="Web Password"'},
                    )
            g.user = user
            decision = sandbox.account.acquire(1)
            if not decision.allowed:
                return respond(THROTTLED_TEXT, 429, {"Retry-After": decision.retry_after_header})
            return None

        @app.after_request
        def headers(response: Response) -> Response:
            if not request.path.startswith("/__sandbox"):
                acct = sandbox.account.peek()
                response.headers["X-Rate-Limit"] = str(acct.limit)
                response.headers["X-Rate-Limit-Remaining"] = str(acct.remaining)
                response.headers["ratelimit-limit"] = str(acct.limit)
                response.headers["ratelimit-remaining"] = str(acct.remaining)
                response.headers["ratelimit-reset"] = acct.reset_header
                rate = getattr(g, "endpoint_rate", None)
                if rate is not None:
                    name, d = rate
                    response.headers[name] = (
                        f"total={d.limit}; remaining={d.remaining}; resets={d.reset_header}"
                    )
                if getattr(g, "api_warn", None):
                    response.headers["x-zendesk-api-warn"] = g.api_warn
                sandbox.stats.count(
                    request.url_rule.rule if request.url_rule else request.path,
                    throttled=response.status_code == 429,
                )
            response.headers["X-Request-Id"] = g.get("request_id", "")
            return response

        def require_user() -> SandboxUser:
            user: SandboxUser | None = g.user
            if user is None:
                raise HttpError(401, {"error": "Couldn't authenticate you"})
            if user.role == "end-user":
                raise HttpError(
                    403,
                    {"error": "Forbidden", "description": "You do not have access to this page."},
                )
            return user

        @route("/users/me", ["GET"])
        def me() -> Any:
            user: SandboxUser | None = g.user
            if user is None:
                return jsonify(
                    user={
                        "id": None,
                        "name": "Anonymous user",
                        "email": "invalid@example.com",
                        "role": "end-user",
                    }
                )
            return jsonify(user=user.json())

        @route("/groups", ["GET"])
        def groups() -> Any:
            require_user()
            size = min(int(request.args.get("page[size]", 0) or 0), 100)
            if not size:
                return jsonify(
                    groups=sandbox.groups,
                    next_page=None,
                    previous_page=None,
                    count=len(sandbox.groups),
                )
            start = int(_decode_cursor(request.args.get("page[after]")) or 0)
            page = sandbox.groups[start : start + size]
            more = start + size < len(sandbox.groups)
            after = _encode_cursor(start + size) if more else None
            return jsonify(
                groups=page,
                meta={"has_more": more, "after_cursor": after, "before_cursor": None},
                links={"prev": None, "next": None},
            )

        @route("/tickets/<int:ticket_id>", ["GET"])
        def show_ticket(ticket_id: int) -> Any:
            require_user()
            record = sandbox.tickets.get(ticket_id)
            if record is None:
                raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
            return jsonify(ticket=public(record))

        @route("/tickets/<int:ticket_id>", ["PUT"])
        def update_ticket(ticket_id: int) -> Any:
            user = require_user()
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not isinstance(body.get("ticket"), dict):
                raise HttpError(400, {"error": "InvalidJSON", "description": "expected ticket"})
            sandbox._limit(sandbox.update_limiter, 1, "Zendesk-RateLimit-tickets-update")
            before = sandbox.tickets.get(ticket_id)
            after = sandbox._update(ticket_id, body["ticket"], user.id, single=True)
            return jsonify(ticket=public(after), audit=_audit(before, after, user.id))

        @route("/tickets/<int:ticket_id>/comments", ["GET"])
        def comments(ticket_id: int) -> Any:
            """List Comments: offset pages (``page``, ``per_page`` ≤100), ``sort_order``
            asc (default, oldest first) or desc; public comments and internal notes."""
            require_user()
            record = sandbox.tickets.get(ticket_id)
            if record is None:
                raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
            order = request.args.get("sort_order", "asc")
            if order not in ("asc", "desc"):
                raise HttpError(
                    400, {"error": "InvalidValue", "description": "sort_order must be asc or desc"}
                )
            page = max(1, int(request.args.get("page", 1) or 1))
            per_page = min(max(1, int(request.args.get("per_page", 100) or 100)), 100)
            thread = list(record["_comments"])
            if order == "desc":
                thread.reverse()
            chunk = thread[(page - 1) * per_page : page * per_page]
            base = f"{sandbox.base_url}/api/v2/tickets/{ticket_id}/comments.json"
            query = f"per_page={per_page}&sort_order={order}"
            more = page * per_page < len(thread)
            return jsonify(
                comments=chunk,
                next_page=f"{base}?page={page + 1}&{query}" if more else None,
                previous_page=f"{base}?page={page - 1}&{query}" if page > 1 else None,
                count=len(thread),
            )

        @route("/tickets/<int:ticket_id>/tags", ["GET", "PUT", "POST", "DELETE"])
        def tags(ticket_id: int) -> Any:
            user = require_user()
            if ticket_id not in sandbox.tickets:
                raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
            if request.method == "GET":
                return jsonify(tags=sandbox.ticket(ticket_id)["tags"])
            sandbox._limit(sandbox.update_limiter, 1, "Zendesk-RateLimit-tickets-update")
            body = request.get_json(silent=True) or {}
            given = [str(t).lower() for t in body.get("tags") or []]
            obj: dict[str, Any] = {
                "PUT": {"additional_tags": given},
                "POST": {"tags": given},
                "DELETE": {"remove_tags": given},
            }[request.method]
            if body.get("safe_update") and body.get("updated_stamp"):
                obj |= {"safe_update": True, "updated_stamp": body["updated_stamp"]}
            after = sandbox._update(ticket_id, obj, user.id, single=False)
            return jsonify(tags=after["tags"])

        @route("/tickets/update_many", ["PUT"])
        def update_many() -> Any:
            user = require_user()
            body = request.get_json(silent=True) or {}
            items: list[tuple[int, Mapping[str, Any]]]
            if "tickets" in body:
                items = [
                    (int(t["id"]), {k: v for k, v in t.items() if k != "id"})
                    for t in body["tickets"]
                ]
            else:
                ids = [int(x) for x in request.args.get("ids", "").split(",") if x.strip()]
                items = [(i, body.get("ticket") or {}) for i in ids]
            if len(items) > 100:
                raise HttpError(
                    400,
                    {
                        "error": "TooManyValues",
                        "description": "Parameter  cannot specify more than 100 values",
                        "max_count": 100,
                    },
                )
            if not items:
                raise HttpError(400, {"error": "InvalidValue", "description": "no tickets"})
            for _, obj in items:
                if "updated_stamp" in obj and "safe_update" not in obj:
                    raise HttpError(
                        400,
                        {
                            "error": "InvalidValue",
                            "description": "updated_stamp requires safe_update",
                        },
                    )
            sandbox._limit(sandbox.update_limiter, len(items), "Zendesk-RateLimit-tickets-update")
            return jsonify(job_status=sandbox._start_job(items, user.id))

        @route("/job_statuses/<job_id>", ["GET"])
        def job_status(job_id: str) -> Any:
            require_user()
            with sandbox._lock:
                job = sandbox.jobs.get(job_id)
                job = json.loads(json.dumps(job)) if job else None
            if job is None:
                raise HttpError(404, {"error": "RecordNotFound", "description": "Not found"})
            return jsonify(job_status=job)

        @route("/incremental/tickets/cursor", ["GET"])
        def incremental() -> Any:
            user = require_user()
            if user.role != "admin":
                raise HttpError(
                    403,
                    {
                        "error": "Forbidden",
                        "description": "You do not have access to this page. Please contact the "
                        "account owner of this help desk for further help.",
                    },
                )
            sandbox._limit(sandbox.incremental_limiter, 1, None)
            return jsonify(sandbox._export(request.args))

        @route("/search", ["GET"])
        def search() -> Any:
            require_user()
            return jsonify(sandbox._search(request.args))

        # -- control endpoints (not Zendesk): what customers and humans do --------------------

        @app.post("/__sandbox/webhook")
        def control_webhook() -> Any:
            body = request.get_json(silent=True) or {}
            sandbox.webhook_url = body.get("url")
            sandbox.webhook_mode = body.get("mode", sandbox.webhook_mode)
            return jsonify(url=sandbox.webhook_url, mode=sandbox.webhook_mode)

        return app

    # ------------------------------------------------------------------ export and search

    def _export(self, args: Mapping[str, str]) -> dict[str, Any]:
        per_page = min(int(args.get("per_page", 1000) or 1000), 1000)
        cutoff = self._now() - self.incremental_lag
        start: Callable[[int, Mapping[str, Any]], bool]
        if args.get("cursor"):
            after_seq = int(_decode_cursor(args["cursor"]) or 0)
            start = lambda seq, rec: seq > after_seq  # noqa: E731
        else:
            start_time = int(args.get("start_time", 0) or 0)
            start = lambda seq, rec: rec["generated_timestamp"] >= start_time  # noqa: E731
            after_seq = self.tickets.last_seq(
                lambda seq, rec: rec["generated_timestamp"] < start_time
            )
        ready = self.tickets.ordered_by_change(
            start=start,
            stop=lambda rec: rec["generated_timestamp"] > cutoff,  # the last minute is held back
            limit=per_page + 1,
        )
        page = ready[:per_page]
        if page:
            after_seq = page[-1][0]
        cursor = _encode_cursor(after_seq)
        end = len(ready) <= per_page
        return {
            "tickets": [public(r) for _, r in page],
            "after_url": f"{self.base_url}/api/v2/incremental/tickets/cursor.json?cursor={cursor}",
            "before_url": None,
            "after_cursor": cursor,
            "before_cursor": None,
            "end_of_stream": end,
        }

    def _search(self, args: Mapping[str, str]) -> dict[str, Any]:
        query = args.get("query", "")
        page = max(1, int(args.get("page", 1) or 1))
        per_page = min(max(1, int(args.get("per_page", 100) or 100)), 100)
        if page * per_page > 1000:
            raise HttpError(
                422,
                {
                    "error": "invalid",
                    "description": "Invalid search: Requested "
                    "response size was greater than Search Response Limits",
                },
            )
        tests = [_search_term(term, self) for term in query.split()]
        hits = [t for t in self.tickets.values() if all(test(t) for test in tests)]
        key = args.get("sort_by", "updated_at")
        hits.sort(
            key=lambda t: (str(t.get(key) or ""), t["id"]),
            reverse=args.get("sort_order", "desc") == "desc",
        )
        chunk = hits[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(hits)
        base = f"{self.base_url}/api/v2/search.json"
        return {
            "results": [{**public(t), "result_type": "ticket"} for t in chunk],
            "facets": None,
            "next_page": f"{base}?page={page + 1}&per_page={per_page}" if more else None,
            "previous_page": f"{base}?page={page - 1}" if page > 1 else None,
            "count": len(hits),
        }


# --------------------------------------------------------------------------- helpers


def _encode_cursor(value: int) -> str:
    return base64.b64encode(f"{value}.0||{value}|".encode()).decode()


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.b64decode(cursor).decode().split(".")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(
            422, {"error": "InvalidPaginationParameter", "description": "cursor is invalid"}
        ) from None


def _audit(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], author: int
) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    for key in ("group_id", "priority", "status", "assignee_id", "tags"):
        if before is None or before.get(key) != after.get(key):
            events.append(
                {
                    "id": len(events) + 1,
                    "type": "Change",
                    "field_name": key,
                    "value": after.get(key),
                    "previous_value": before.get(key) if before else None,
                }
            )
    if before is not None and len(after["_comments"]) > len(before["_comments"]):
        last = after["_comments"][-1]
        events.append(
            {
                "id": len(events) + 1,
                "type": "Comment",
                "body": last["body"],
                "public": last["public"],
                "author_id": author,
            }
        )
    return {
        "id": int(time.time() * 1000),
        "ticket_id": after["id"],
        "created_at": after["updated_at"],
        "author_id": author,
        "metadata": {"system": {}, "custom": {}},
        "events": events,
        "via": {"channel": "api"},
    }


_ORDER = {s: i for i, s in enumerate(STATUSES)}


def _search_term(term: str, sandbox: ZendeskSandbox) -> Callable[[Mapping[str, Any]], bool]:
    """The subset of Zendesk's search syntax the connector sends."""
    for op in ("<=", ">=", "<", ">", ":"):
        field, sep, value = term.partition(op)
        if sep and field.isidentifier():
            break
    else:
        return lambda t: term.lower() in str(t.get("subject", "")).lower()
    if field == "type":
        return lambda t: value == "ticket"
    if field == "status":
        rank = _ORDER.get(value, -1)
        ops: dict[str, Callable[[int], bool]] = {
            ":": lambda r: r == rank,
            "<": lambda r: r < rank,
            "<=": lambda r: r <= rank,
            ">": lambda r: r > rank,
            ">=": lambda r: r >= rank,
        }
        return lambda t: ops[op](_ORDER.get(t["status"], 0))
    if field in ("updated", "created"):
        when = parse_time(value if "T" in value else f"{value}T00:00:00Z")
        assert when is not None
        key = f"{field}_at"
        cmp: dict[str, Callable[[datetime], bool]] = {
            ">": lambda d: d > when,
            ">=": lambda d: d >= when,
            "<": lambda d: d < when,
            "<=": lambda d: d <= when,
            ":": lambda d: d.date() == when.date(),
        }
        return lambda t: cmp[op](parse_time(t[key]) or when)
    if field == "tags":
        return lambda t: value.lower() in t["tags"]
    if field == "group":
        return lambda t: any(
            gr["id"] == t["group_id"] and gr["name"].lower() == value.lower()
            for gr in sandbox.groups
        )
    return lambda t: True


def _event_kinds(change: Change) -> list[tuple[str, Any, Any]]:
    if change.kind == "created":
        return [("ticket.created", None, None)]
    before, after = change.before or {}, change.after
    kinds: list[tuple[str, Any, Any]] = []
    for key, kind in (
        ("status", "ticket.status_changed"),
        ("priority", "ticket.priority_changed"),
        ("group_id", "ticket.group_assignment_changed"),
        ("assignee_id", "ticket.agent_assignment_changed"),
        ("tags", "ticket.tags_changed"),
        ("custom_fields", "ticket.custom_field_changed"),
    ):
        if before.get(key) != after.get(key):
            cur, prev = after.get(key), before.get(key)
            if key in ("status", "priority"):
                cur = str(cur).upper() if cur else None
                prev = str(prev).upper() if prev else None
            elif key.endswith("_id"):
                cur = str(cur) if cur else None
                prev = str(prev) if prev else None
            kinds.append((kind, cur, prev))
    if len(after.get("_comments", [])) > len(before.get("_comments", [])):
        last = after["_comments"][-1]
        kinds.append(
            (
                "ticket.comment_added",
                {"comment": {"body": last["body"], "is_public": last["public"]}},
                None,
            )
        )
    return kinds


def _event_detail(t: Mapping[str, Any], actor: Any) -> dict[str, Any]:
    def sid(value: Any) -> str | None:
        return str(value) if value is not None else None

    return {
        "actor_id": sid(actor) or "0",
        "assignee_id": sid(t.get("assignee_id")),
        "brand_id": sid(t.get("brand_id")),
        "created_at": t["created_at"],
        "custom_status": sid(t.get("custom_status_id")),
        "description": t.get("description"),
        "external_id": t.get("external_id"),
        "form_id": sid(t.get("ticket_form_id")),
        "group_id": sid(t.get("group_id")),
        "id": str(t["id"]),
        "is_public": t.get("is_public"),
        "organization_id": sid(t.get("organization_id")),
        "priority": str(t["priority"]).upper() if t.get("priority") else None,
        "requester_id": sid(t.get("requester_id")),
        "status": str(t["status"]).upper(),
        "subject": t.get("subject"),
        "submitter_id": sid(t.get("submitter_id")),
        "tags": list(t.get("tags") or []),
        "type": str(t["type"]).upper() if t.get("type") else None,
        "updated_at": t["updated_at"],
        "via": {"channel": (t.get("via") or {}).get("channel")},
    }


def serve_sandbox(**options: Any) -> tuple[ZendeskSandbox, Any]:
    """Start a sandbox on 127.0.0.1 (any free port); returns (sandbox, running server)."""
    from escbridge.sandbox import serve

    sandbox = ZendeskSandbox(**options)
    return sandbox, serve(sandbox.app)
