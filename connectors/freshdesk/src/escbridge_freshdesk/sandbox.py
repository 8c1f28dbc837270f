"""A Freshdesk emulator (Flask) for `escbridge demo`, end-to-end tests and benchmarks.

It emulates what the connector uses, with the shapes of ../shared/reference/freshdesk.md: API-key
basic auth (``key:X``, any password) with the 401 bodies; ``/agents/me``; ``/groups`` and
``/tickets`` paged with ``Link: <…>; rel="next"`` (``per_page`` ≤ 100, page 301 refused);
``/ticket_fields`` with custom statuses; view/update ticket (partial PUT, 400
``{"description", "errors": [{field, message, code}]}``, empty-body 404); notes (201 +
``Location``), replies and conversations; ``bulk_update`` with the ``bulk_action`` wrapper;
``/jobs/{id}``; credit-based per-minute rate limits (``include`` costs 2 each) with
``X-RateLimit-Total/-Remaining/-Used-CurrentRequest`` and 429 + ``Retry-After`` (no X-RateLimit
headers on the 429, as in Freshdesk's own code); and an automation rule that fires a webhook
with the configured auth (basic or a secret header) whenever a ticket is created or updated.

Where Freshdesk's behaviour is UNCONFIRMED the emulator takes one side per option, so tests
prove the connector handles both: ``bulk_mode`` ("sync": ``succeeded``/``failed``; "job":
``job_id``/``href``), ``tags_mode`` ("replace" or "append"), ``bulk_tags_mode`` (the same for
``bulk_update``'s ``properties.tags``; None: as ``tags_mode``), ``accept_null_responder``.
``faults`` (:mod:`escbridge.sandbox.faults`, shared by every emulator) make calls fail before or
after they take effect; :func:`Fault` writes a rule in this module's older terms.

Control endpoints under ``/__sandbox/`` create tickets and make "human" edits over HTTP.
"""

from __future__ import annotations

import base64
import html
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

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
from escbridge.sandbox.faults import FaultRule

from .parse import parse_time

__all__ = ["Fault", "FreshdeskSandbox", "serve_sandbox"]

TEST_API_KEY = "sandbox-api-key"
STATUS_NAMES = {
    2: ("Open", "Being Processed"),
    3: ("Pending", "Awaiting your Reply"),
    4: ("Resolved", "This ticket has been Resolved"),
    5: ("Closed", "This ticket has been Closed"),
}
PRIORITY_NAMES = {1: "Low", 2: "Medium", 3: "High", 4: "Urgent"}
SOURCE_NAMES = {
    1: "Email",
    2: "Portal",
    3: "Phone",
    7: "Chat",
    9: "Feedback Widget",
    10: "Outbound Email",
}
UPDATE_FIELDS = {
    "description", "due_by", "email_config_id", "fr_due_by", "group_id", "internal_group_id",
    "priority", "email", "phone", "twitter_id", "facebook_id", "requester_id", "name",
    "responder_id", "internal_agent_id", "source", "status", "subject", "type", "product_id",
    "company_id", "skill_id", "skip_close_notification", "unique_external_id", "tags",
    "attachments", "bcc_emails", "related_ticket_ids", "custom_fields",
}  # fmt: skip
MAX_PAGES = 300
PER_PAGE_MAX = 100

#: The "Advanced" content of the emulated rule: the template docs/helpdesks/freshdesk.md tells
#: admins to paste, rendered the way Freshdesk does (plain text substitution, no JSON escaping).
WEBHOOK_TEMPLATE = (
    '{"ticket": {"id": "{{ticket.id}}", "status": "{{ticket.status}}", '
    '"priority": "{{ticket.priority}}", "group": "{{ticket.group.name}}"}, '
    '"event": "{{triggered_event}}", "performer": "{{event_performer.email}}", '
    '"source": "freshdesk"}'
)


def fd_time(value: datetime) -> str:
    """Freshdesk's timestamps: UTC, whole seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validation_error(*errors: tuple[str, str, str]) -> HttpError:
    return HttpError(
        400,
        {
            "description": "Validation failed",
            "errors": [{"field": f, "message": m, "code": c} for f, m, c in errors],
        },
    )


def Fault(
    method: str, path: str, status: int = 504, after: bool = False, times: int = 1
) -> FaultRule:
    """A rule for :attr:`FreshdeskSandbox.faults` with ``path`` a regular expression on the
    path after /api/v2: an ``error`` of ``status``, or with ``after`` a ``lost_answer`` (the
    call takes effect, the client gets ``status``: what a proxy's 504 looks like)."""
    kind = "lost_answer" if after else "error"
    return FaultRule(method, f"re:/api/v2{path}", kind, times=times, status=status)


@dataclass
class Agent:
    id: int
    name: str
    email: str
    api_key: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "available": True,
            "occasional": False,
            "id": self.id,
            "ticket_scope": 1,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "last_active_at": None,
            "available_since": None,
            "type": "support_agent",
            "contact": {
                "active": True,
                "email": self.email,
                "job_title": None,
                "language": "en",
                "last_login_at": None,
                "mobile": None,
                "name": self.name,
                "phone": None,
                "time_zone": "UTC",
                "created_at": "2024-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z",
            },
            "signature": None,
        }


class FreshdeskSandbox(Emulator):
    """The emulator's state and its Flask ``app``. Thread-safe; time is injectable."""

    ESCBRIDGE_ID, HUMAN_ID, REQUESTER_ID, COMPANY_ID = (
        67000000001,
        67000000002,
        67000000100,
        67000000500,
    )

    def __init__(
        self,
        *,
        domain: str = "sandbox",
        api_key: str = TEST_API_KEY,
        agent_email: str = "escbridge@sandbox.example",
        groups: Iterable[str] = ("Frontline", "Senior Support", "Escalations", "Billing"),
        custom_statuses: Mapping[int, str] | None = None,
        rate_limit: int = 400,
        window_seconds: float = 60.0,
        bulk_mode: str = "sync",
        job_polls: int = 1,
        tags_mode: str = "replace",
        bulk_tags_mode: str | None = None,
        accept_null_responder: bool = True,
        max_pages: int = MAX_PAGES,
        webhook_url: str | None = None,
        webhook_auth: Mapping[str, str] | None = None,
        webhook_template: str = WEBHOOK_TEMPLATE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] | None = None,
        seed: bool = False,
    ) -> None:
        if bulk_mode not in ("sync", "job") or tags_mode not in ("replace", "append"):
            raise ValueError("bulk_mode is sync|job and tags_mode is replace|append")
        if bulk_tags_mode not in (None, "replace", "append"):
            raise ValueError("bulk_tags_mode is replace|append (None: as tags_mode)")
        super().__init__(first_id=1)
        self.domain = domain
        self.agents = [
            Agent(self.ESCBRIDGE_ID, "escbridge", agent_email, api_key),
            Agent(self.HUMAN_ID, "Hannah Human", "hannah@sandbox.example"),
        ]
        self.groups: list[dict[str, Any]] = []
        for name in groups:
            self.add_group(name)
        self.custom_statuses = dict(
            custom_statuses
            if custom_statuses is not None
            else {6: "Waiting on Customer", 7: "Waiting on Third Party"}
        )
        kw: dict[str, Any] = {"clock": monotonic} if monotonic is not None else {}
        self.limiter = SlidingWindow(rate_limit, window_seconds, **kw)
        self.bulk_mode = bulk_mode
        self.job_polls = job_polls
        self.tags_mode = tags_mode
        self.bulk_tags_mode = bulk_tags_mode
        self.accept_null_responder = accept_null_responder
        self.max_pages = max_pages
        self.webhook_url = webhook_url
        self.webhook_auth = dict(webhook_auth or {})
        self.webhook_template = webhook_template
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests_log: list[tuple[str, str]] = []
        self._now = clock
        self._lock = threading.Lock()
        self._conversation_ids = itertools.count(67100000001)
        self.tickets.subscribe(self._on_change)
        self.app = self._make_app()
        if seed:
            self.seed_demo()

    # ------------------------------------------------------------------ data helpers

    @property
    def base_url(self) -> str:
        return f"https://{self.domain}.freshdesk.com"

    def add_group(self, name: str) -> dict[str, Any]:
        gid = 67000259990 + len(self.groups) + 1
        group = {
            "id": gid,
            "name": name,
            "description": f"{name} group",
            "escalate_to": None,
            "unassigned_for": "30m",
            "business_hour_id": None,
            "agent_ids": [self.HUMAN_ID],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        self.groups.append(group)
        return group

    def group_id(self, name: str) -> int:
        return int(next(g["id"] for g in self.groups if g["name"].casefold() == name.casefold()))

    def agent_by_key(self, key: str) -> Agent | None:
        return next((a for a in self.agents if a.api_key and a.api_key == key), None)

    def _stamp(self, previous: str | None = None) -> str:
        """A new ``updated_at``, strictly later than ``previous`` (Freshdesk has 1 s resolution;
        the emulator never gives two versions of one ticket the same stamp)."""
        now = self._now().replace(microsecond=0)
        prev = parse_time(previous) if previous else None
        if prev is not None and prev >= now:
            now = prev + timedelta(seconds=1)
        return fd_time(now)

    def create_ticket(
        self,
        *,
        subject: str = "Cannot log in",
        description: str = "Since this morning the login page says my account is locked.",
        priority: int = 1,
        status: int = 2,
        group: str | None = None,
        tags: Iterable[str] = (),
        source: int = 1,
        custom_fields: Mapping[str, Any] | None = None,
        created_at: datetime | None = None,
        due_in: timedelta = timedelta(days=3),
        notify: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        """A ticket as a customer would open it (fires the webhook when ``notify``)."""
        created = created_at or self._now()
        stamp = fd_time(created)
        record: dict[str, Any] = {
            "cc_emails": [],
            "fwd_emails": [],
            "reply_cc_emails": [],
            "ticket_cc_emails": [],
            "ticket_bcc_emails": [],
            "fr_escalated": False,
            "spam": False,
            "email_config_id": None,
            "group_id": self.group_id(group) if group else None,
            "priority": priority,
            "requester_id": self.REQUESTER_ID,
            "responder_id": None,
            "source": source,
            "company_id": self.COMPANY_ID,
            "status": status,
            "subject": subject,
            "association_type": None,
            "support_email": f"support@{self.domain}.freshdesk.com",
            "to_emails": [f"support@{self.domain}.freshdesk.com"],
            "product_id": None,
            "type": None,
            "due_by": fd_time(created + due_in),
            "fr_due_by": fd_time(created + min(due_in, timedelta(days=1))),
            "is_escalated": False,
            "custom_fields": dict(custom_fields or {"cf_escalation_level": None}),
            "created_at": stamp,
            "updated_at": stamp,
            "associated_tickets_count": None,
            "tags": list(tags),
            "description": f"<div>{html.escape(description)}</div>",
            "description_text": description,
            "structured_description": None,
            "nr_due_by": None,
            "nr_escalated": False,
            "_stats": {
                "agent_responded_at": None,
                "requester_responded_at": None,
                "first_responded_at": None,
                "status_updated_at": stamp,
                "reopened_at": None,
                "resolved_at": None,
                "closed_at": None,
                "pending_since": None,
            },
            "_conversations": [],
            "_deleted": False,
            **extra,
        }
        record["id"] = self.tickets.next_id()
        return public(self.tickets.add(record, actor=None, notify=notify))

    def seed_demo(self) -> None:
        """A few tickets for `escbridge demo`: one fresh, one overdue, one waiting, one closed."""
        now = self._now()
        self.create_ticket(subject="Password reset link expired", notify=False)
        self.create_ticket(
            subject="Production outage: checkout returns 500",
            priority=3,
            group="Frontline",
            created_at=now - timedelta(hours=30),
            due_in=timedelta(hours=24),
            notify=False,
        )
        self.create_ticket(subject="Invoice copy", status=6, group="Billing", notify=False)
        self.create_ticket(subject="Thanks!", status=5, notify=False)

    def control_create(self, body: dict[str, Any]) -> Any:
        return self.create_ticket(**body)

    def control_update(self, ticket_id: int, body: dict[str, Any]) -> Any:
        return self.human_update(ticket_id, **body)

    def conversations(self, ticket_id: int) -> list[dict[str, Any]]:
        return list(self.ticket(ticket_id)["_conversations"])

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        return [c for c in self.conversations(ticket_id) if c["private"]]

    def human_update(self, ticket_id: int, **changes: Any) -> dict[str, Any]:
        """An agent edits the ticket in the UI (e.g. ``tags=[…]``, ``priority=3``)."""
        return public(self._update(ticket_id, changes, self.HUMAN_ID))

    def customer_reply(self, ticket_id: int, text: str) -> dict[str, Any]:
        """The requester answers by email: an incoming reply; a pending ticket reopens."""

        def mutate(t: dict[str, Any]) -> None:
            self._add_conversation(t, text, private=False, incoming=True, user_id=self.REQUESTER_ID)
            t["_stats"]["requester_responded_at"] = t["updated_at"]
            if t["status"] == 3:
                t["status"] = 2

        return public(self.tickets.update(ticket_id, mutate, actor=None))

    # ------------------------------------------------------------------ update logic

    def _validate(self, obj: Mapping[str, Any]) -> None:
        errors: list[tuple[str, str, str]] = []
        for key in obj:
            if key not in UPDATE_FIELDS:
                errors.append((key, "Unexpected/invalid field in request", "invalid_field"))
        if "priority" in obj and obj["priority"] not in (1, 2, 3, 4):
            errors.append(
                ("priority", "It should be one of these values: '1,2,3,4'", "invalid_value")
            )
        statuses = {*STATUS_NAMES, *self.custom_statuses}
        if "status" in obj and obj["status"] not in statuses:
            values = ",".join(str(s) for s in sorted(statuses))
            errors.append(
                ("status", f"It should be one of these values: '{values}'", "invalid_value")
            )
        group = obj.get("group_id")
        if group is not None and group not in {g["id"] for g in self.groups}:
            errors.append(
                ("group_id", "There is no group matching the given group_id", "invalid_value")
            )
        if "responder_id" in obj:
            value = obj["responder_id"]
            if value is None and not self.accept_null_responder:
                errors.append(
                    ("responder_id", "It should be a/an Positive Integer", "datatype_mismatch")
                )
            elif value is not None and value not in {a.id for a in self.agents}:
                errors.append(
                    (
                        "responder_id",
                        "There is no agent matching the given responder_id",
                        "invalid_value",
                    )
                )
        if "tags" in obj and (
            not isinstance(obj["tags"], list) or not all(isinstance(t, str) for t in obj["tags"])
        ):
            errors.append(("tags", "It should be a/an Array", "datatype_mismatch"))
        if "custom_fields" in obj:
            if not isinstance(obj["custom_fields"], dict):
                errors.append(
                    ("custom_fields", "It should be a/an key/value pair", "datatype_mismatch")
                )
            else:
                for name in obj["custom_fields"]:
                    if name not in self._custom_field_names():
                        errors.append(
                            (name, "Unexpected/invalid field in request", "invalid_field")
                        )
        if errors:
            raise validation_error(*errors)

    def _custom_field_names(self) -> set[str]:
        return {"cf_escalation_level"}

    def _update(
        self,
        ticket_id: int,
        obj: Mapping[str, Any],
        actor: int,
        *,
        tags_mode: str | None = None,
    ) -> dict[str, Any]:
        """Apply one partial update the way Freshdesk would; raise HttpError on refusal.
        ``tags_mode`` overrides ``self.tags_mode`` (bulk's own switch)."""
        append_tags = (tags_mode or self.tags_mode) == "append"
        current = self.tickets.get(ticket_id)
        if current is None or current.get("_deleted"):
            raise HttpError(404, None)
        if not obj:
            raise HttpError(
                400,
                {
                    "description": "Validation failed",
                    "errors": [
                        {
                            "field": "request",
                            "message": "Your update call does not have any parameter. "
                            "Atleast one parameter is required.",
                            "code": "missing_field",
                        }
                    ],
                },
            )
        self._validate(obj)

        def mutate(t: dict[str, Any]) -> None:
            for key, value in obj.items():
                if key == "tags":
                    if append_tags:
                        have = {x.lower() for x in t["tags"]}
                        t["tags"] = t["tags"] + [x for x in value if x.lower() not in have]
                    else:
                        t["tags"] = list(dict.fromkeys(value))
                elif key == "custom_fields":
                    t["custom_fields"] = {**t["custom_fields"], **value}
                else:
                    if key == "status" and value != t["status"]:
                        t["_stats"]["status_updated_at"] = self._stamp()
                    t[key] = value
            t["updated_at"] = self._stamp(t["updated_at"])

        return self.tickets.update(ticket_id, mutate, actor=actor)

    def _add_conversation(
        self, t: dict[str, Any], body: str, *, private: bool, incoming: bool, user_id: int
    ) -> dict[str, Any]:
        stamp = self._stamp(t["updated_at"])
        conversation = {
            "body": body if body.lstrip().startswith("<") else f"<div>{html.escape(body)}</div>",
            "body_text": _text(body),
            "id": next(self._conversation_ids),
            "incoming": incoming,
            "private": private,
            "user_id": user_id,
            "support_email": None,
            "source": 2 if private else 0,
            "category": 2 if private else 3,
            "ticket_id": t["id"],
            "to_emails": [] if private else ["customer@example.com"],
            "from_email": None,
            "cc_emails": None,
            "bcc_emails": None,
            "created_at": stamp,
            "updated_at": stamp,
            "attachments": [],
        }
        t["_conversations"].append(conversation)
        t["updated_at"] = stamp
        return conversation

    def _converse(self, ticket_id: int, body: Any, *, private: bool, actor: int) -> dict[str, Any]:
        current = self.tickets.get(ticket_id)
        if current is None or current.get("_deleted"):
            raise HttpError(404, None)
        if not isinstance(body, dict) or not str(body.get("body") or "").strip():
            raise validation_error(("body", "Mandatory attribute missing", "missing_field"))
        unknown = set(body) - {"body", "private", "incoming", "user_id", "notify_emails"}
        if unknown:
            raise validation_error(
                *(
                    (k, "Unexpected/invalid field in request", "invalid_field")
                    for k in sorted(unknown)
                )
            )
        created: dict[str, Any] = {}

        def mutate(t: dict[str, Any]) -> None:
            is_private = bool(body.get("private", True)) if private else False
            created.update(
                self._add_conversation(
                    t, str(body["body"]), private=is_private, incoming=False, user_id=actor
                )
            )
            if not private:
                stats = t["_stats"]
                stats["agent_responded_at"] = t["updated_at"]
                stats["first_responded_at"] = stats["first_responded_at"] or t["updated_at"]

        # Notes are not among the emulated rule's events: no webhook for them.
        self.tickets.update(ticket_id, mutate, actor=actor, notify=False)
        return created

    # ------------------------------------------------------------------ bulk

    def _bulk(self, body: Any, actor: int) -> tuple[int, dict[str, Any]]:
        action = body.get("bulk_action") if isinstance(body, dict) else None
        if not isinstance(action, dict):
            raise validation_error(("bulk_action", "Mandatory attribute missing", "missing_field"))
        ids = action.get("ids")
        properties = action.get("properties")
        if not isinstance(ids, list) or not ids:
            raise validation_error(("ids", "Mandatory attribute missing", "missing_field"))
        if len(ids) > 100:
            raise validation_error(
                ("ids", "Has 101 elements, it can have maximum of 100 elements", "invalid_value")
            )
        if not isinstance(properties, dict) or not properties:
            raise validation_error(("properties", "Mandatory attribute missing", "missing_field"))
        if "attachments" in properties:
            raise validation_error(
                ("attachments", "Unexpected/invalid field in request", "invalid_field")
            )
        self._validate(properties)
        if self.bulk_mode == "job":
            job_id = uuid.uuid4().hex[:29]
            with self._lock:
                self.jobs[job_id] = {
                    "id": job_id,
                    "status": "QUEUED",
                    "ids": list(ids),
                    "properties": dict(properties),
                    "actor": actor,
                    "polls": 0,
                    "data": [],
                }
            return 202, {"job_id": job_id, "href": f"{self._api_root()}/jobs/{job_id}"}
        return 202, self._run_bulk(ids, properties, actor)

    def _run_bulk(
        self, ids: list[Any], properties: Mapping[str, Any], actor: int
    ) -> dict[str, Any]:
        succeeded: list[int] = []
        failed: list[dict[str, Any]] = []
        for raw_id in ids:
            try:
                self._update(int(raw_id), properties, actor, tags_mode=self.bulk_tags_mode)
                succeeded.append(int(raw_id))
            except HttpError as exc:
                errors = (exc.body or {}).get("errors") if isinstance(exc.body, dict) else None
                failed.append(
                    {
                        "id": raw_id,
                        "errors": errors
                        or [
                            {
                                "field": "id",
                                "message": "There is no ticket matching the given id",
                                "code": "invalid_value",
                            }
                        ],
                    }
                )
        return {"succeeded": succeeded, "failed": failed}

    def _job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise HttpError(404, None)
            job["polls"] += 1
            run = job["status"] in ("QUEUED", "IN_PROGRESS") and job["polls"] > self.job_polls
            if not run and job["status"] == "QUEUED":
                job["status"] = "IN_PROGRESS"
        if run:
            outcome = self._run_bulk(job["ids"], job["properties"], job["actor"])
            # Job data items carry ``error`` (singular): what real client code polling
            # GET /api/v2/jobs/{id} reads (api-audit.md #15); its value's shape is a guess.
            data = [{"id": i, "success": True} for i in outcome["succeeded"]] + [
                {"id": f["id"], "success": False, "error": f["errors"]} for f in outcome["failed"]
            ]
            with self._lock:
                job["data"] = data
                job["status"] = (
                    "SUCCESS"
                    if not outcome["failed"]
                    else "PARTIAL"
                    if outcome["succeeded"]
                    else "FAILED"
                )
        return {"id": job["id"], "status": job["status"], "data": job["data"]}

    # ------------------------------------------------------------------ webhooks

    def _on_change(self, change: Change) -> None:
        if not self.webhook_url:
            return
        after = change.after
        before = change.before or {}
        if change.kind == "created":
            event = "{ticket_action:created}"
        else:
            parts = [
                f"{key}:{{from:{before.get(key)},to:{after.get(key)}}}"
                for key in ("priority", "status", "group_id", "responder_id")
                if before.get(key) != after.get(key)
            ]
            if not parts:
                if before.get("tags") == after.get("tags"):
                    return  # nothing the emulated rule watches
                parts = ["tags_changed:true"]
            event = (
                "{"
                + ",".join(
                    p.replace("group_id", "group").replace("responder_id", "responder")
                    for p in parts
                )
                + "}"
            )
        performer = next((a.email for a in self.agents if a.id == change.actor), "")
        values = {
            "ticket.id": str(after["id"]),
            "ticket.status": self._status_name(after["status"]),
            "ticket.priority": PRIORITY_NAMES.get(after["priority"], ""),
            "ticket.group.name": next(
                (gr["name"] for gr in self.groups if gr["id"] == after.get("group_id")), ""
            ),
            "ticket.subject": str(after.get("subject") or ""),
            "ticket.tags": ",".join(after.get("tags") or []),
            "ticket.url": f"{self.base_url}/helpdesk/tickets/{after['id']}",
            "triggered_event": event,
            "event_performer.email": performer,
        }
        body = re.sub(
            r"\{\{\s*([\w.]+)\s*\}\}", lambda m: values.get(m.group(1), ""), self.webhook_template
        )
        headers = {"Content-Type": "application/json", "User-Agent": "Freshdesk"}
        mode = self.webhook_auth.get("mode")
        if mode == "basic":
            pair = f"{self.webhook_auth['username']}:{self.webhook_auth['password']}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif mode == "api_key":
            pair = f"{self.webhook_auth['key']}:X"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif mode == "header":
            headers[self.webhook_auth["name"]] = self.webhook_auth["value"]
        self.webhooks.send(self.webhook_url, body.encode("utf-8"), headers)

    def _status_name(self, code: int) -> str:
        if code in STATUS_NAMES:
            return STATUS_NAMES[code][0]
        return self.custom_statuses.get(code, str(code))

    # ------------------------------------------------------------------ listing

    def _api_root(self) -> str:
        root = request.host_url.rstrip("/") if in_request() else self.base_url
        return f"{root}/api/v2"

    def _page_args(self, cap: int | None) -> tuple[int, int]:
        try:
            per_page = int(request.args.get("per_page", 30))
            page = int(request.args.get("page", 1))
        except ValueError:
            raise validation_error(
                ("per_page", "It should be a/an Positive Integer", "datatype_mismatch")
            ) from None
        if per_page < 1 or per_page > PER_PAGE_MAX:
            raise validation_error(
                (
                    "per_page",
                    f"It should be a Positive Integer less than or equal to {PER_PAGE_MAX}",
                    "invalid_value",
                )
            )
        if page < 1:
            raise validation_error(("page", "It should be a Positive Integer", "invalid_value"))
        if cap is not None and page > cap:
            raise validation_error(
                ("page", f"You cannot access tickets beyond the {cap}th page", "invalid_value")
            )
        return page, per_page

    def _paged(self, items: list[Any], path: str, cap: int | None = None) -> Response:
        page, per_page = self._page_args(cap)
        chunk = items[(page - 1) * per_page : page * per_page]
        response = jsonify(chunk)
        if page * per_page < len(items):
            args = {k: v for k, v in request.args.items() if k != "page"}
            args["page"] = str(page + 1)
            response.headers["Link"] = f'<{self._api_root()}{path}?{urlencode(args)}>; rel="next"'
        return response

    def _list_tickets(self) -> Response:
        args = request.args
        unknown = set(args) - {
            "filter", "requester_id", "email", "company_id", "updated_since", "order_by",
            "order_type", "include", "per_page", "page",
        }  # fmt: skip
        if unknown:
            raise validation_error(
                *(
                    (k, "Unexpected/invalid field in request", "invalid_field")
                    for k in sorted(unknown)
                )
            )
        tickets = [t for t in self.tickets.values() if not t.get("_deleted") and not t["spam"]]
        since = args.get("updated_since")
        if since:
            when = parse_time(since)
            if when is None:
                raise validation_error(
                    (
                        "updated_since",
                        "It should be in the 'valid date time' format",
                        "invalid_date",
                    )
                )
            tickets = [t for t in tickets if _at(t["updated_at"]) >= when]
        else:
            cutoff = self._now() - timedelta(days=30)
            tickets = [t for t in tickets if _at(t["created_at"]) >= cutoff]
        order_by = args.get("order_by", "created_at")
        if order_by not in ("created_at", "due_by", "updated_at", "status"):
            raise validation_error(
                (
                    "order_by",
                    "It should be one of these values: 'created_at,due_by,updated_at,status'",
                    "invalid_value",
                )
            )
        reverse = args.get("order_type", "desc") == "desc"
        tickets.sort(key=lambda t: (t[order_by], t["id"]), reverse=reverse)
        includes = self._includes({"stats", "requester", "description"})
        return self._paged([self._render(t, includes) for t in tickets], "/tickets", self.max_pages)

    def _includes(self, allowed: set[str]) -> set[str]:
        include = {i for i in request.args.get("include", "").split(",") if i}
        bad = include - allowed
        if bad:
            values = ",".join(sorted(allowed))
            raise validation_error(
                ("include", f"It should be one of these values: '{values}'", "invalid_value")
            )
        return include

    def _render(self, record: Mapping[str, Any], includes: set[str]) -> dict[str, Any]:
        out = public(record)
        if "stats" in includes:
            out["stats"] = dict(record["_stats"])
        if "requester" in includes:
            out["requester"] = {
                "id": self.REQUESTER_ID,
                "name": "Robin Requester",
                "email": "robin@customer.example",
                "mobile": None,
                "phone": None,
            }
        if "company" in includes:
            out["company"] = {"id": self.COMPANY_ID, "name": "Customer Ltd"}
        return out

    # ------------------------------------------------------------------ the app

    def _authenticate(self) -> Agent | None:
        credentials = basic_credentials()  # the API key as the user name, any password
        return self.agent_by_key(credentials[0]) if credentials is not None else None

    def _make_app(self) -> Flask:
        app = self.new_app(f"freshdesk-sandbox-{self.domain}")
        sandbox = self

        def route(rule: str, methods: list[str]) -> Callable[[Any], Any]:
            def register(fn: Any) -> Any:
                app.add_url_rule(f"/api/v2{rule}", fn.__name__, fn, methods=methods)
                return fn

            return register

        @app.before_request
        def gate() -> Any:
            if not request.path.startswith("/api/v2"):
                return None
            sandbox.requests_log.append((request.method, request.path))
            if "Authorization" not in request.headers:
                return respond(
                    {
                        "code": "credentials_required",
                        "message": "Authentication header is needed to log in.",
                    },
                    401,
                )
            agent = sandbox._authenticate()
            if agent is None:
                return respond(
                    {
                        "code": "invalid_credentials",
                        "message": "You have to be logged in to perform this action.",
                    },
                    401,
                )
            g.agent = agent
            include = [i for i in request.args.get("include", "").split(",") if i]
            cost = 1 + 2 * len(include)
            decision = sandbox.limiter.acquire(cost)
            if not decision.allowed:
                sandbox.stats.count(request.path, throttled=True)
                g.throttled = True
                return respond(
                    {"message": "You have exceeded the limit of requests per minute"},
                    429,
                    {"Retry-After": decision.retry_after_header},
                )
            g.cost = cost
            return None

        @app.after_request
        def headers(response: Response) -> Response:
            if request.path.startswith("/api/v2") and not g.get("throttled") and g.get("agent"):
                state = sandbox.limiter.peek()
                response.headers["X-RateLimit-Total"] = str(state.limit)
                response.headers["X-RateLimit-Remaining"] = str(state.remaining)
                response.headers["X-RateLimit-Used-CurrentRequest"] = str(g.get("cost", 1))
                response.headers["X-Freshdesk-API-Version"] = "latest=v2; requested=v2"
                sandbox.stats.count(request.url_rule.rule if request.url_rule else request.path)
            return response

        @app.errorhandler(404)
        def not_found(_exc: Any) -> Response:
            return respond(None, 404)

        @app.errorhandler(405)
        def not_allowed(_exc: Any) -> Response:
            return respond(
                {
                    "message": f"{request.method} method is not allowed. "
                    "It should be one of these method(s): GET"
                },
                405,
            )

        @route("/agents/me", ["GET"])
        def me() -> Any:
            return jsonify(g.agent.json())

        @route("/groups", ["GET"])
        def groups() -> Any:
            return sandbox._paged(list(sandbox.groups), "/groups")

        @route("/ticket_fields", ["GET"])
        def ticket_fields() -> Any:
            choices: dict[str, Any] = {str(k): list(v) for k, v in STATUS_NAMES.items()}
            choices |= {str(k): [v, v] for k, v in sandbox.custom_statuses.items()}
            return jsonify(
                [
                    {
                        "id": 1,
                        "name": "requester",
                        "label": "Search a requester",
                        "type": "default_requester",
                    },
                    {
                        "id": 2,
                        "name": "status",
                        "label": "Status",
                        "type": "default_status",
                        "choices": choices,
                    },
                    {
                        "id": 3,
                        "name": "priority",
                        "label": "Priority",
                        "type": "default_priority",
                        "choices": {v: k for k, v in PRIORITY_NAMES.items()},
                    },
                    {
                        "id": 4,
                        "name": "group",
                        "label": "Group",
                        "type": "default_group",
                        "choices": {gr["name"]: gr["id"] for gr in sandbox.groups},
                    },
                    {
                        "id": 5,
                        "name": "cf_escalation_level",
                        "label": "Escalation level",
                        "type": "custom_text",
                    },
                ]
            )

        @route("/tickets", ["GET"])
        def list_tickets() -> Any:
            return sandbox._list_tickets()

        @route("/tickets/<int:ticket_id>", ["GET"])
        def view_ticket(ticket_id: int) -> Any:
            record = sandbox.tickets.get(ticket_id)
            if record is None or record.get("_deleted"):
                raise HttpError(404, None)
            includes = sandbox._includes({"stats", "requester", "company", "conversations"})
            out = sandbox._render(record, includes)
            if "conversations" in includes:
                out["conversations"] = record["_conversations"][:10]
            return jsonify(out)

        @route("/tickets/<int:ticket_id>", ["PUT"])
        def update_ticket(ticket_id: int) -> Any:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise validation_error(
                    ("request", "Request body has invalid json format", "invalid_json")
                )
            return jsonify(public(sandbox._update(ticket_id, body, g.agent.id)))

        @route("/tickets/<int:ticket_id>/notes", ["POST"])
        def create_note(ticket_id: int) -> Any:
            note = sandbox._converse(
                ticket_id, request.get_json(silent=True), private=True, actor=g.agent.id
            )
            response = jsonify(note)
            response.status_code = 201
            response.headers["Location"] = f"{sandbox._api_root()}/conversations/{note['id']}"
            return response

        @route("/tickets/<int:ticket_id>/reply", ["POST"])
        def create_reply(ticket_id: int) -> Any:
            reply = sandbox._converse(
                ticket_id, request.get_json(silent=True), private=False, actor=g.agent.id
            )
            response = jsonify(reply)
            response.status_code = 201
            response.headers["Location"] = f"{sandbox._api_root()}/conversations/{reply['id']}"
            return response

        @route("/tickets/<int:ticket_id>/conversations", ["GET"])
        def conversations(ticket_id: int) -> Any:
            record = sandbox.tickets.get(ticket_id)
            if record is None or record.get("_deleted"):
                raise HttpError(404, None)
            return sandbox._paged(
                list(record["_conversations"]), f"/tickets/{ticket_id}/conversations"
            )

        @route("/tickets/bulk_update", ["POST"])
        def bulk_update() -> Any:
            status, body = sandbox._bulk(request.get_json(silent=True), g.agent.id)
            response = jsonify(body)
            response.status_code = status
            return response

        @route("/jobs/<job_id>", ["GET"])
        def job(job_id: str) -> Any:
            return jsonify(sandbox._job(job_id))

        return app


# --------------------------------------------------------------------------- helpers


def _at(stamp: str) -> datetime:
    when = parse_time(stamp)
    assert when is not None
    return when


def _text(body: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def serve_sandbox(**options: Any) -> tuple[FreshdeskSandbox, Any]:
    """Start an emulator on a free loopback port: (sandbox, running ServerThread)."""
    from escbridge.sandbox import serve

    sandbox = FreshdeskSandbox(**options)
    return sandbox, serve(sandbox.app)
