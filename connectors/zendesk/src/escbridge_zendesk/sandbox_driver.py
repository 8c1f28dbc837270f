"""The Zendesk emulator driven for `escbridge sandbox` and `escbridge demo`.

Found by the core through :meth:`ZendeskConnector.sandbox_driver
<escbridge_zendesk.connector.ZendeskConnector.sandbox_driver>`; see
:mod:`escbridge.sandbox.driver` for the members a driver has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from escbridge.model import Channel, Status
from escbridge.sandbox.driver import EmulatorDriver, SimClock, TicketSpec
from escbridge_zendesk.parse import format_time, parse_time
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET, ZendeskSandbox

__all__ = ["ZendeskDriver"]

_ZD_STATUS = {
    Status.NEW: "new",
    Status.OPEN: "open",
    Status.PENDING: "pending",
    Status.ON_HOLD: "hold",
    Status.SOLVED: "solved",
    Status.CLOSED: "closed",
}
_ZD_CHANNEL = {
    Channel.EMAIL: "email",
    Channel.WEB: "web",
    Channel.CHAT: "chat",
    Channel.PHONE: "voice",
    Channel.SOCIAL: "twitter",
    Channel.API: "api",
    Channel.OTHER: "any_channel",
}


@dataclass
class ZendeskDriver(EmulatorDriver):
    helpdesk: str = "zendesk"
    display_name: str = "Zendesk"
    _sandbox: Any = None

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        settings: dict[str, Any] = {
            "groups": tuple(dict.fromkeys(groups)),
            "account_limit": 5000,
            "update_limit": 2000,
            "incremental_limit": 1000,
            "wall_clock": clock.wall,
            "monotonic": clock.monotonic,
        }
        sandbox = self._sandbox = ZendeskSandbox(**{**settings, **options})
        return self.serve(sandbox.app, port=port, webhooks=sandbox.webhooks, stats=sandbox.stats)

    def instance_settings(self) -> dict[str, Any]:
        admin = self._sandbox.users[0]
        return {
            "type": "zendesk",
            "base_url": self.url,
            "sandbox": True,  # loopback: allowed only for an emulator
            "email": admin.email,
            "api_token": admin.api_token,
            "webhook_secret": TEST_SIGNING_SECRET,
            "integration_user_id": admin.id,
            "incremental_per_minute": 1000,
        }

    def connect_webhooks(self, url: str) -> None:
        self._sandbox.webhook_url = url

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        tags = [*spec.tags, *([f"escbridge_{spec.level}"] if spec.level else [])]
        extra: dict[str, Any] = {
            "via": {"channel": _ZD_CHANNEL[spec.channel], "source": {"from": {}, "to": {}}}
        }
        if spec.updated_at is not None:
            extra["updated_at"] = format_time(spec.updated_at)
            extra["generated_timestamp"] = int(spec.updated_at.timestamp())
        if spec.due_at is not None:
            extra["due_at"] = format_time(spec.due_at)
        if spec.first_response_at is not None or spec.last_customer_reply_at is not None:
            # Zendesk keeps these in the ticket's metric set; the emulator serves it with the
            # ticket, where the connector reads it.
            extra["metric_set"] = zendesk_metrics(
                spec.created_at or datetime.fromtimestamp(self._sandbox._now(), UTC),
                spec.first_response_at,
                spec.last_customer_reply_at,
            )
        raw = self._sandbox.create_ticket(
            subject=spec.subject,
            description=spec.description,
            priority=spec.priority.label,
            status=_ZD_STATUS[spec.status],
            group=spec.group,
            tags=tags,
            at=spec.created_at,
            notify=notify,
            **extra,
        )
        return str(raw["id"])

    def customer_writes(self, ticket_id: str, text: str) -> None:
        sandbox = self._sandbox
        sandbox._update(  # the customer's own reply; the sandbox has no public helper for it
            int(ticket_id), {"comment": {"body": text, "public": True}}, sandbox.CUSTOMER_ID,
            single=False,
        )  # fmt: skip

    def agent_replies(self, ticket_id: str, text: str) -> None:
        sandbox = self._sandbox
        after = sandbox.human_update(int(ticket_id), comment={"body": text, "public": True})
        created = parse_time(after["created_at"])
        answered = parse_time(after["updated_at"])
        assert created is not None and answered is not None

        def first_reply(t: dict[str, Any]) -> None:
            if not (t.get("metric_set") or {}).get("replies"):
                t["metric_set"] = zendesk_metrics(created, answered, None)

        sandbox.tickets.update(int(ticket_id), first_reply, notify=False)

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None:
        self._sandbox.human_update(int(ticket_id), additional_tags=list(tags))

    def agent_solves(self, ticket_id: str) -> None:
        self._sandbox.human_update(int(ticket_id), status=_ZD_STATUS[Status.SOLVED])

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}.json"

    def access_hint(self) -> str:
        admin = self._sandbox.users[0]
        return f"curl -u {admin.email}/token:{admin.api_token} {self.url}/api/v2/tickets/ID.json"


def zendesk_metrics(
    created: datetime, first_reply: datetime | None, customer_updated: datetime | None
) -> dict[str, Any]:
    """Zendesk's ticket metric set, as far as the connector reads it (also the benchmarks')."""
    minutes = int((first_reply - created).total_seconds() // 60) if first_reply else None
    return {
        "replies": 1 if first_reply else 0,
        "reply_time_in_minutes": {"calendar": minutes, "business": minutes},
        "reopens": 0,
        "requester_updated_at": format_time(customer_updated) if customer_updated else None,
    }
