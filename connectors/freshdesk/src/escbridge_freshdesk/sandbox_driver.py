"""The Freshdesk emulator driven for `escbridge sandbox` and `escbridge demo`.

Found by the core through :meth:`FreshdeskConnector.sandbox_driver
<escbridge_freshdesk.connector.FreshdeskConnector.sandbox_driver>`; see
:mod:`escbridge.sandbox.driver` for the members a driver has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from escbridge.model import Channel, Status
from escbridge.sandbox.driver import SANDBOX_WEBHOOK_SECRET, EmulatorDriver, SimClock, TicketSpec

from .sandbox import TEST_API_KEY, FreshdeskSandbox, fd_time

__all__ = ["FreshdeskDriver"]

_FD_ON_HOLD = 7
_FD_STATUS = {
    Status.NEW: 2,
    Status.OPEN: 2,
    Status.PENDING: 3,
    Status.ON_HOLD: _FD_ON_HOLD,
    Status.SOLVED: 4,
    Status.CLOSED: 5,
}
_FD_SOURCE = {
    Channel.EMAIL: 1,
    Channel.WEB: 2,
    Channel.PHONE: 3,
    Channel.CHAT: 7,
    Channel.SOCIAL: 5,
    Channel.API: 2,
    Channel.OTHER: 8,
}
_FD_SECRET_HEADER = "X-Escbridge-Secret"


@dataclass
class FreshdeskDriver(EmulatorDriver):
    helpdesk: str = "freshdesk"
    display_name: str = "Freshdesk"
    _sandbox: Any = None

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        settings: dict[str, Any] = {
            "groups": tuple(dict.fromkeys(groups)),
            "custom_statuses": {6: "Waiting on Customer", _FD_ON_HOLD: "On Hold"},
            "rate_limit": 20000,
            "clock": clock.now,
            "monotonic": clock.monotonic,
        }
        sandbox = self._sandbox = FreshdeskSandbox(**{**settings, **options})
        return self.serve(sandbox.app, port=port, webhooks=sandbox.webhooks, stats=sandbox.stats)

    def instance_settings(self) -> dict[str, Any]:
        return {
            "type": "freshdesk",
            "domain": self._sandbox.domain,
            "api_key": TEST_API_KEY,
            "api_url": self.url,
            "webhook_secret": SANDBOX_WEBHOOK_SECRET,
            "webhook_header": _FD_SECRET_HEADER,
        }

    def connect_webhooks(self, url: str) -> None:
        self._sandbox.webhook_url = url
        self._sandbox.webhook_auth = {
            "mode": "header",
            "name": _FD_SECRET_HEADER,
            "value": SANDBOX_WEBHOOK_SECRET,
        }

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        created = spec.created_at or self._sandbox._now()
        stamp = fd_time(created)
        updated = fd_time(spec.updated_at) if spec.updated_at else stamp
        first = fd_time(spec.first_response_at) if spec.first_response_at else None
        replied = fd_time(spec.last_customer_reply_at) if spec.last_customer_reply_at else None
        extra: dict[str, Any] = {
            "updated_at": updated,
            "_stats": {
                "agent_responded_at": first,
                "requester_responded_at": replied,
                "first_responded_at": first,
                "status_updated_at": updated,
                "reopened_at": None,
                "resolved_at": updated if spec.status is Status.SOLVED else None,
                "closed_at": updated if spec.status is Status.CLOSED else None,
                "pending_since": updated if spec.status is Status.PENDING else None,
            },
        }
        if spec.due_at is not None:
            extra["due_by"] = fd_time(spec.due_at)
        tags = [*spec.tags, *([f"escbridge_{spec.level}"] if spec.level else [])]
        raw = self._sandbox.create_ticket(
            subject=spec.subject,
            description=spec.description,
            priority=int(spec.priority),
            status=_FD_STATUS[spec.status],
            group=spec.group,
            tags=tags,
            source=_FD_SOURCE[spec.channel],
            created_at=created,
            notify=notify,
            **extra,
        )
        return str(raw["id"])

    def customer_writes(self, ticket_id: str, text: str) -> None:
        self._sandbox.customer_reply(int(ticket_id), text)

    def agent_replies(self, ticket_id: str, text: str) -> None:
        sandbox = self._sandbox  # the reply endpoint answers as escbridge's agent; a human here
        sandbox._converse(int(ticket_id), {"body": text}, private=False, actor=sandbox.HUMAN_ID)

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None:
        current = list(self._sandbox.ticket(int(ticket_id))["tags"])
        self._sandbox.human_update(int(ticket_id), tags=[*current, *tags])

    def agent_solves(self, ticket_id: str) -> None:
        self._sandbox.human_update(int(ticket_id), status=_FD_STATUS[Status.SOLVED])

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}"

    def access_hint(self) -> str:
        return f"curl -u {TEST_API_KEY}:X {self.url}/api/v2/tickets/ID"
