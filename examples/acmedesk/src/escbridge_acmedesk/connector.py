"""AcmeDeskConnector: Acme Desk in escbridge's vocabulary — only what is Acme's own.

Acme Desk writes one escalation in one ``PATCH /tickets/{id}`` (team, priority, labels and the
note together) guarded by ``if_revision`` (409 when someone changed the ticket), and signs its
webhooks with an HMAC of the body. Everything else — the apply loop and its conflict
semantics, retries and typed errors, the team cache, the `check` wording — comes from
``escbridge.connector`` and ``escbridge.http``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

# --8<-- [start:imports]
from pydantic import SecretStr

from escbridge.connector import (
    CAP_INCREMENTAL_SYNC,
    CAP_SAFE_UPDATE,
    CAP_SANDBOX,
    CAP_TRIGGER_WEBHOOKS,
    ApplyResult,
    BaseConnector,
    CheckReport,
    ConnectorInfo,
    ConnectorSettings,
    Group,
    GroupDirectory,
    Runtime,
    TicketPage,
    WebhookRequest,
    check_identity,
)
from escbridge.connector.kit import Identity
from escbridge.connector.payload import load_json
from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.http import ApiClient, RetryPolicy
from escbridge.model import Actions, LevelMarker, Priority, Status, Ticket, TicketEvent

# --8<-- [end:imports]

__version__ = "0.1.0"

SIGNATURE_HEADER = "X-Acme-Signature"


# --8<-- [start:config]
class AcmeDeskConfig(ConnectorSettings):
    """The instance's settings in escbridge.yaml (secrets as SecretStr, typos rejected).

    ``ConnectorSettings`` brings the settings every connector has (timeouts, attempts,
    ``conflict_retries``, ``write_settle_seconds``/``_rounds``) and rejects unknown keys.
    """

    url: str
    api_key: SecretStr
    webhook_secret: SecretStr

    def secret_values(self) -> list[str]:
        """Masked in every error and log line."""
        return [self.api_key.get_secret_value(), self.webhook_secret.get_secret_value()]
        # --8<-- [end:config]


# --8<-- [start:helpers]
def _identity(me: Mapping[str, Any]) -> Identity:
    """Acme's ``/me`` answer as the identity its webhooks name in ``actor``."""
    return Identity(str(me["id"]), label=f"{me.get('name') or ''} <{me.get('email') or ''}>")


def signature(secret: str, body: bytes) -> str:
    """What Acme Desk puts in ``X-Acme-Signature`` (the emulator signs with it too)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Patch:
    ticket: Ticket
    actions: Actions
    body: dict[str, Any]
    # --8<-- [end:helpers]


# --8<-- [start:class]
class AcmeDeskConnector(BaseConnector[AcmeDeskConfig, _Patch]):
    """Acme Desk, spoken in escbridge's normalised vocabulary."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="acmedesk",
        version=__version__,
        display_name="Acme Desk",
        capabilities=frozenset(
            {CAP_SAFE_UPDATE, CAP_TRIGGER_WEBHOOKS, CAP_INCREMENTAL_SYNC, CAP_SANDBOX}
        ),
        signature_scheme="HMAC-SHA256 of the body, hex, in X-Acme-Signature",
        config_model=AcmeDeskConfig,
    )

    def __init__(
        self,
        config: AcmeDeskConfig,
        *,
        instance: str,
        runtime: Runtime | None = None,
        **test_overrides: Any,
    ) -> None:
        super().__init__(config, instance=instance, runtime=runtime, **test_overrides)
        self.api = ApiClient(
            f"{config.url.rstrip('/')}/api/v1",
            headers={"X-Api-Key": config.api_key.get_secret_value()},
            secrets=config.secret_values(),
            timeout=(config.connect_timeout, config.read_timeout),  # from ConnectorSettings
            policy=RetryPolicy(max_attempts=config.max_attempts),
            user_agent=f"escbridge-acmedesk/{__version__}",
            **self.runtime.client_kwargs(),
        )
        self.teams: GroupDirectory[int] = GroupDirectory(
            self._load_teams, instance=instance, clock=self.runtime.clock
        )
        # --8<-- [end:class]

    # --8<-- [start:teams]
    def _load_teams(self) -> list[Group[int]]:
        teams = self.api.call("GET", "/teams")["teams"]
        return [Group(int(t["id"]), str(t["name"])) for t in teams]
        # --8<-- [end:teams]

    # ------------------------------------------------------------------ check

    # --8<-- [start:check]
    def check(self, groups: Collection[str]) -> CheckReport:
        me = check_identity(
            lambda: self.api.call("GET", "/me"),
            product="Acme Desk",
            where=self.config.url,
            credentials="api_key",
        )
        if isinstance(me, CheckReport):
            return me
        self.identity.set(_identity(me))
        missing = tuple(self.teams.missing(groups))
        return CheckReport(
            ok=not missing, identity=f"{me['name']} <{me['email']}>", missing_groups=missing
        )
        # --8<-- [end:check]

    # ------------------------------------------------------------------ tickets

    # --8<-- [start:tickets]
    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket:
        labels = [str(label).lower() for label in raw.get("labels") or ()]
        return Ticket(
            id=str(raw["id"]),
            instance=self.instance,
            subject=str(raw.get("title") or ""),
            tags=frozenset(labels),
            status=Status.OPEN if raw.get("status") == "open" else Status.CLOSED,
            priority=Priority.parse(raw.get("priority") or "normal"),
            group=self.teams.names().get(int(raw["team_id"])) if raw.get("team_id") else None,
            created_at=datetime.fromisoformat(raw["created"]),
            updated_at=datetime.fromisoformat(raw["modified"]),
            level=LevelMarker.from_tags(labels),
            version=str(raw["revision"]),
        )

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        raw = self.api.call("GET", f"/tickets/{ticket_id}")["ticket"]
        self.teams.note_ids([raw.get("team_id")])
        return self.parse_ticket(raw)

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets in change order; the cursor is Acme's change sequence."""
        while True:
            params = {"open": 1, "after": cursor or "", "since": since.isoformat() if since else ""}
            page = self.api.call("GET", "/tickets", params=params)
            self.teams.note_ids([t.get("team_id") for t in page["tickets"]])
            cursor = page["next"] or cursor
            tickets = [self.parse_ticket(t) for t in page["tickets"]]
            yield TicketPage(tickets, cursor, done=not page["has_more"])
            if not page["has_more"]:
                return
        # --8<-- [end:tickets]

    # ------------------------------------------------------------------ apply

    # --8<-- [start:prepare]
    def _prepare(self, ticket: Ticket, actions: Actions) -> _Patch | ApplyResult:
        """One PATCH holds the whole escalation, so a ticket that carries the level already
        has all of it (a retry after a lost answer writes nothing)."""
        if actions.level and ticket.level == actions.level:
            return ApplyResult(ticket.id, ok=True, actions=actions, version=ticket.version)
        add = list(dict.fromkeys(t.lower() for t in actions.tags_add))
        if actions.level and LevelMarker.tag(actions.level) not in add:
            add.append(LevelMarker.tag(actions.level))
        body: dict[str, Any] = {
            "if_revision": ticket.version,
            "add_labels": add,
            "remove_labels": [t.lower() for t in actions.tags_remove if t.lower() not in add],
            "notes": [],
        }
        if actions.group:
            body["team_id"] = self.teams.id_of(actions.group)
        if actions.priority is not None and actions.priority > ticket.priority:
            body["priority"] = actions.priority.label  # never lowered
        if actions.unassign:
            body["assignee_id"] = None
        if actions.note:
            body["notes"].append({"text": actions.note, "private": True})
        if actions.customer_update:
            body["notes"].append({"text": actions.customer_update, "private": False})
        return _Patch(ticket, actions, body)
        # --8<-- [end:prepare]

    # --8<-- [start:write]
    def _write_one(self, prepared: _Patch) -> ApplyResult:
        path = f"/tickets/{prepared.ticket.id}"
        after = self.api.call("PATCH", path, json=prepared.body, bucket="writes")["ticket"]
        return ApplyResult(
            prepared.ticket.id, ok=True, actions=prepared.actions, version=str(after["revision"])
        )
        # --8<-- [end:write]

    # ------------------------------------------------------------------ webhooks

    # --8<-- [start:webhooks]
    def verify_request(self, request: WebhookRequest) -> None:
        sent = request.header(SIGNATURE_HEADER)
        if not sent:
            raise WebhookAuthError(f"no {SIGNATURE_HEADER} header")
        expected = signature(self.config.webhook_secret.get_secret_value(), request.body)
        if not hmac.compare_digest(expected, sent.strip()):
            raise WebhookAuthError("signature does not match (wrong secret or altered body)")

    def parse_request(self, request: WebhookRequest) -> list[TicketEvent]:
        data = load_json(request.body)  # strict: refuses what no store can keep, never quoting it
        try:
            ticket_id, delivery = str(data["ticket_id"]), str(data["delivery_id"])
        except (TypeError, KeyError):
            raise WebhookPayloadError(
                "not an Acme Desk webhook: expected JSON with ticket_id and delivery_id"
            ) from None
        return [
            TicketEvent(
                instance=self.instance,
                ticket_id=ticket_id,
                dedupe_key=f"{self.instance}:acmedesk:{delivery}",
                kind=str(data.get("event") or "ticket.updated"),
                actor=str(data["actor"]) if data.get("actor") else None,
            )
        ]
        # --8<-- [end:webhooks]

    # --8<-- [start:whoami]
    def _whoami(self) -> Identity:
        """Who the API key belongs to: escbridge's own changes name this user as the actor.

        ``BaseConnector`` learns it once — in the background for a receiver, never while a
        webhook waits — and answers ``own_change_known``/``is_own_change`` from it.
        """
        return _identity(self.api.call("GET", "/me"))
        # --8<-- [end:whoami]

    # ------------------------------------------------------------------ sandbox

    # --8<-- [start:sandbox]
    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """The Acme Desk emulator's Flask app (needs the ``[sandbox]`` extra)."""
        from escbridge_acmedesk.sandbox import AcmeDeskSandbox

        return AcmeDeskSandbox(**options).app
        # --8<-- [end:sandbox]
