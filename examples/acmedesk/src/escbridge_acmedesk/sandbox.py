"""A small Acme Desk emulator (Flask) for its conformance tests.

It has no demo driver, so `escbridge demo` and `escbridge sandbox` leave it out.

It speaks the API the connector uses — ``X-Api-Key`` auth, ``/me``, ``/teams``, tickets with a
``revision`` (409 on a stale ``if_revision``), one PATCH per escalation, open tickets in change
order — and signs a webhook on every change. Built on ``escbridge.sandbox``'s records and
webhook sender and ``escbridge.sandbox.app``'s error handling, so it stays this short.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

from escbridge.sandbox import Change, RecordStore, WebhookDispatcher
from escbridge.sandbox.app import HttpError, install, public, respond
from escbridge_acmedesk.connector import SIGNATURE_HEADER, signature

TEST_API_KEY = "acme-sandbox-api-key"
TEST_WEBHOOK_SECRET = "acme-sandbox-webhook-secret"
PRIORITIES = ("low", "normal", "high", "urgent")


# --8<-- [start:state]
class AcmeDeskSandbox:
    """The emulator's state and its Flask ``app``; thread-safe (records live in a RecordStore)."""

    BOT_ID, AGENT_ID = "bot-1", "agent-7"

    def __init__(
        self,
        *,
        api_key: str = TEST_API_KEY,
        webhook_secret: str = TEST_WEBHOOK_SECRET,
        teams: Iterable[str] = ("Frontline", "Second Line", "Managers"),
        webhook_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.teams: list[dict[str, Any]] = [
            {"id": 100 + i, "name": name} for i, name in enumerate(teams)
        ]
        self.webhook_url = webhook_url
        self.webhooks = WebhookDispatcher()
        self.tickets = RecordStore(first_id=1)
        self.tickets.subscribe(self._on_change)
        self._now = clock
        self.app = self._make_app()
        # --8<-- [end:state]

    def team_id(self, name: str) -> int:
        return int(next(t["id"] for t in self.teams if t["name"] == name))

    def create_ticket(
        self,
        *,
        title: str = "The printer is on fire",
        priority: str = "normal",
        labels: Iterable[str] = (),
        team: str | None = None,
    ) -> dict[str, Any]:
        """A ticket as a customer opens it (fires a webhook)."""
        stamp = self._now().isoformat()
        record = {
            "id": self.tickets.next_id(),
            "title": title,
            "status": "open",
            "priority": priority,
            "team_id": self.team_id(team) if team else None,
            "assignee_id": None,
            "labels": sorted({label.lower() for label in labels}),
            "revision": 1,
            "created": stamp,
            "modified": stamp,
            "_notes": [],
        }
        return self.tickets.add(record, actor="customer")

    def human_edit(self, ticket_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """An agent edits the ticket in Acme's UI (a PATCH body without ``if_revision``)."""
        return self._patch(ticket_id, changes, self.AGENT_ID)

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        record = self.tickets.get(ticket_id)
        if record is None:
            raise KeyError(ticket_id)
        return record

    # --8<-- [start:patch]
    def _patch(self, ticket_id: int, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
        if ticket_id not in self.tickets:
            raise HttpError(404, {"code": "not_found", "message": f"no ticket {ticket_id}"})
        if body.get("priority") not in (None, *PRIORITIES):
            raise HttpError(422, {"code": "invalid", "message": "priority is not valid"})
        if body.get("team_id") is not None and body["team_id"] not in {t["id"] for t in self.teams}:
            raise HttpError(422, {"code": "invalid", "message": "team_id is not a team"})

        def mutate(t: dict[str, Any]) -> None:
            expected = body.get("if_revision")
            if expected is not None and str(expected) != str(t["revision"]):
                raise HttpError(409, {"code": "conflict", "message": "revision mismatch"})
            for key in ("priority", "team_id", "assignee_id", "title", "status"):
                if key in body:
                    t[key] = body[key]
            labels = set(t["labels"]) | {x.lower() for x in body.get("add_labels") or ()}
            t["labels"] = sorted(labels - {x.lower() for x in body.get("remove_labels") or ()})
            for note in body.get("notes") or ():
                t["_notes"].append({"text": note["text"], "private": note["private"], "by": actor})
            t["revision"] += 1
            t["modified"] = self._now().isoformat()

        return self.tickets.update(ticket_id, mutate, actor=actor)
        # --8<-- [end:patch]

    # --8<-- [start:webhook]
    def _on_change(self, change: Change) -> None:
        if not self.webhook_url:
            return
        event = "ticket.created" if change.kind == "created" else "ticket.updated"
        payload = {
            "delivery_id": str(uuid.uuid4()),
            "ticket_id": change.id,
            "actor": change.actor,
            "event": event,
        }
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.webhook_secret, body),
        }
        self.webhooks.send(self.webhook_url, body, headers)
        # --8<-- [end:webhook]

    def _make_app(self) -> Flask:
        app = Flask(f"acmedesk-sandbox-{id(self)}")
        install(app)
        sandbox = self

        @app.before_request
        def authenticate() -> Response | None:
            if request.headers.get("X-Api-Key") != sandbox.api_key:
                return respond({"code": "unauthorized", "message": "invalid API key"}, 401)
            return None

        @app.get("/api/v1/me")
        def me() -> Response:
            return respond({"id": sandbox.BOT_ID, "name": "escbridge", "email": "bot@acme.example"})

        @app.get("/api/v1/teams")
        def teams() -> Response:
            return respond({"teams": sandbox.teams})

        @app.get("/api/v1/tickets/<int:ticket_id>")
        def show(ticket_id: int) -> Response:
            record = sandbox.tickets.get(ticket_id)
            if record is None:
                raise HttpError(404, {"code": "not_found", "message": f"no ticket {ticket_id}"})
            return respond({"ticket": public(record)})

        @app.patch("/api/v1/tickets/<int:ticket_id>")
        def update(ticket_id: int) -> Response:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise HttpError(400, {"code": "bad_request", "message": "expected a JSON object"})
            return respond({"ticket": public(sandbox._patch(ticket_id, body, sandbox.BOT_ID))})

        @app.get("/api/v1/tickets")
        def listing() -> Response:
            after = int(request.args.get("after") or 0)
            since = request.args.get("since") or ""
            rows = sandbox.tickets.ordered_by_change(
                start=lambda seq, t: (
                    seq > after
                    and (request.args.get("open") != "1" or t["status"] == "open")
                    and (
                        not since
                        or datetime.fromisoformat(t["modified"]) >= datetime.fromisoformat(since)
                    )
                )
            )
            page = rows[:100]
            return respond(
                {
                    "tickets": [public(t) for _, t in page],
                    "next": str(page[-1][0]) if page else None,
                    "has_more": len(rows) > len(page),
                }
            )

        return app
