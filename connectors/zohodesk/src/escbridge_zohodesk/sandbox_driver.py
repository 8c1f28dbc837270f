"""The Zoho Desk emulator driven for `escbridge sandbox` and `escbridge demo`.

Found by the core through :meth:`ZohoDeskConnector.sandbox_driver
<escbridge_zohodesk.connector.ZohoDeskConnector.sandbox_driver>`; see
:mod:`escbridge.sandbox.driver` for the members a driver has.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from escbridge.model import Channel, LevelMarker, Priority, Status
from escbridge.sandbox.driver import EmulatorDriver, SimClock, TicketSpec
from escbridge_zohodesk.connector import ZohoDeskConnector
from escbridge_zohodesk.parse import format_time
from escbridge_zohodesk.sandbox import (
    ESCBRIDGE_AGENT,
    HUMAN_AGENT,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ORG_ID,
    SANDBOX_REFRESH_TOKEN,
    emulator,
)

__all__ = ["ZohoDeskDriver"]

#: The webhook id and URL token the sandbox's escbridge.yaml and the emulator share; they guard
#: nothing but a loopback emulator.
ZOHO_WEBHOOK_ID = "1892000000777001"
ZOHO_URL_TOKEN = "escbridge-sandbox-url-token"

_ZOHO_STATUS = {
    Status.NEW: ("New", "Open"),
    Status.OPEN: ("Open", "Open"),
    Status.PENDING: ("Waiting on Customer", "On Hold"),
    Status.ON_HOLD: ("On Hold", "On Hold"),
    Status.SOLVED: ("Resolved", "Closed"),
    Status.CLOSED: ("Closed", "Closed"),
}
_ZOHO_CHANNEL = {
    Channel.EMAIL: "Email",
    Channel.WEB: "Web",
    Channel.CHAT: "Chat",
    Channel.PHONE: "Phone",
    Channel.SOCIAL: "Twitter",
    Channel.API: "API",
    Channel.OTHER: "Mobile",
}
_ZOHO_PRIORITY = {
    Priority.LOW: "Low",
    Priority.NORMAL: "Medium",
    Priority.HIGH: "High",
    Priority.URGENT: "High",  # the default portal has no Urgent (the connector maps the same way)
}


@dataclass
class ZohoDeskDriver(EmulatorDriver):
    helpdesk: str = "zohodesk"
    display_name: str = "Zoho Desk"
    _desk: Any = None
    _groups: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> dept, team

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        app = ZohoDeskConnector.sandbox(**{"clock": clock.wall, **options})
        self._desk = desk = emulator(app)
        support = desk.department_id("Support")
        departments = {d["name"]: d["id"] for d in desk.departments.values()}
        teams = {t["name"]: (t["departmentId"], t["id"]) for t in desk.teams.values()}
        for name in dict.fromkeys(groups):
            if name in departments:
                self._groups[name] = (departments[name], None)
            elif name in teams:
                self._groups[name] = teams[name]
            else:
                team = desk.add_team(name, support)
                self._groups[name] = (support, team["id"])
        return self.serve(app, port=port, webhooks=desk.dispatcher, stats=desk.stats)

    def instance_settings(self) -> dict[str, Any]:
        return {
            "type": "zohodesk",
            "data_centre": self._desk.data_centre,
            "org_id": SANDBOX_ORG_ID,
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "refresh_token": SANDBOX_REFRESH_TOKEN,
            "sandbox": True,
            "desk_url": self.url,
            "webhook_id": ZOHO_WEBHOOK_ID,
            "webhook_token": ZOHO_URL_TOKEN,
            "agent_id": ESCBRIDGE_AGENT,
        }

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        return f"{receiver_url}/webhooks/{instance}?token={ZOHO_URL_TOKEN}"

    def connect_webhooks(self, url: str) -> None:
        self._desk.webhooks.clear()
        self._desk.register_webhook(url, webhook_id=ZOHO_WEBHOOK_ID)

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        desk = self._desk
        created = spec.created_at or datetime.fromtimestamp(desk.clock(), UTC)
        updated = spec.updated_at or created
        status, status_type = _ZOHO_STATUS[spec.status]
        department, team = self._groups.get(spec.group or "", (None, None))
        fields: dict[str, Any] = {
            "subject": spec.subject,
            "description": f"<div>{html.escape(spec.description)}</div>",
            "priority": _ZOHO_PRIORITY[spec.priority],
            "status": status,
            "statusType": status_type,
            "channel": _ZOHO_CHANNEL[spec.channel],
            "createdTime": format_time(created),
            "modifiedTime": format_time(updated),
            "customerResponseTime": format_time(spec.last_customer_reply_at or created),
            "dueDate": format_time(spec.due_at) if spec.due_at else None,
            "closedTime": format_time(updated) if status_type == "Closed" else None,
            # the level marker is a tag, as the connector's default (level_marker: tag) keeps it
            "tags": [*spec.tags, *([LevelMarker.tag(spec.level)] if spec.level else [])],
            "cf": {"cf_escalation_level": None, "cf_overdue_2h_triggered": "false"},
        }
        if department is not None:
            fields["departmentId"] = department
        fields["teamId"] = team
        raw = desk.add_ticket(**fields)
        ticket_id = str(raw["id"])
        if notify:  # the emulator adds tickets silently; a touch makes Desk post the event
            desk.tickets.update(
                ticket_id, lambda t: t.update(modifiedBy=HUMAN_AGENT), actor=HUMAN_AGENT
            )
        return ticket_id

    def customer_writes(self, ticket_id: str, text: str) -> None:
        now = self._desk.now_iso()
        self._desk.tickets.update(
            ticket_id,
            lambda t: t.update(modifiedTime=now, customerResponseTime=now, modifiedBy=None),
        )

    def agent_replies(self, ticket_id: str, text: str) -> None:
        """Desk's ticket JSON has no first-response time the connector reads: only a touch."""
        now = self._desk.now_iso()
        self._desk.tickets.update(
            ticket_id,
            lambda t: t.update(modifiedTime=now, modifiedBy=HUMAN_AGENT),
            actor=HUMAN_AGENT,
        )

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None:
        now = self._desk.now_iso()

        def mutate(t: dict[str, Any]) -> None:
            t.update(tags=[*(t.get("tags") or []), *tags], modifiedTime=now, modifiedBy=HUMAN_AGENT)

        self._desk.tickets.update(ticket_id, mutate, actor=HUMAN_AGENT)

    def agent_solves(self, ticket_id: str) -> None:
        now = self._desk.now_iso()
        status, status_type = _ZOHO_STATUS[Status.SOLVED]

        def mutate(t: dict[str, Any]) -> None:
            t.update(
                status=status, statusType=status_type, modifiedTime=now, modifiedBy=HUMAN_AGENT
            )

        self._desk.tickets.update(ticket_id, mutate, actor=HUMAN_AGENT)

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v1/tickets/{ticket_id}"

    def access_hint(self) -> str:
        return (
            f"OAuth: POST {self.url}/oauth/v2/token (refresh grant, sandbox client), then "
            f"GET {self.url}/api/v1/tickets/ID with 'Authorization: Zoho-oauthtoken …' and "
            "'orgId'"
        )
