"""Driving the connectors' helpdesk emulators: start one, fill it, act in it as people do.

`escbridge sandbox` and `escbridge demo` need more of an emulator than the connector contract's
``sandbox()`` (a Flask app): an address, tickets in the helpdesk's own JSON, a customer who
writes and an agent who edits, webhooks pointed at the receiver, and the escbridge.yaml settings
that reach it. A :class:`SandboxDriver` does that for one helpdesk, from helpdesk-neutral
:class:`TicketSpec` records.

A connector may ship its own driver as ``sandbox_driver()`` on its plugin class (the same
members as :class:`SandboxDriver`); for the three first-party connectors that do not (yet), the
drivers are here. Each imports only its own connector's emulator, lazily, when that plugin is
installed, so a missing connector is simply left out.

Time: emulators and connectors take their clocks as arguments; :class:`SimClock` gives them one
simulated "now" that runs at real speed and can jump ahead, so a demo spends hours of helpdesk
time in seconds without sleeping.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from escbridge.connector import CAP_SANDBOX, Registry
from escbridge.model import Channel, Priority, Status
from escbridge.sandbox import ServerThread

log = logging.getLogger(__name__)

__all__ = [
    "SandboxDriver",
    "SimClock",
    "TicketSpec",
    "available_drivers",
]

#: Shared secrets of the sandboxes: they guard nothing but loopback emulators.
SANDBOX_WEBHOOK_SECRET = "escbridge-sandbox-webhook-secret"
ZOHO_WEBHOOK_ID = "1892000000777001"
ZOHO_URL_TOKEN = "escbridge-sandbox-url-token"


class SimClock:
    """A simulated "now" that runs at real speed from a chosen start and can jump forward.

    ``now``/``wall`` are the simulated UTC time; ``monotonic`` is the real monotonic clock plus
    every jump made, so rate-limit windows and token lifetimes see the hours pass too (and it
    never goes below the real one). ``advance_to`` never goes back.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0 if start is None else start.timestamp() - time.time()
        self._jumped = 0.0

    def wall(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self._jumped

    def advance_to(self, when: datetime) -> None:
        with self._lock:
            delta = when.timestamp() - (time.time() + self._offset)
            if delta > 0:
                self._offset += delta
                self._jumped += delta


@dataclass(frozen=True)
class TicketSpec:
    """A ticket to create, in escbridge's vocabulary; drivers write it in the helpdesk's JSON.

    ``group`` is the helpdesk group's name (the caller takes it from the matrix); ``level`` is
    the escbridge level the ticket already sits at (its marker is written too).
    ``created_at`` None means "now" on the emulator's clock.
    """

    subject: str
    description: str
    priority: Priority = Priority.NORMAL
    channel: Channel = Channel.EMAIL
    status: Status = Status.OPEN
    tags: tuple[str, ...] = ()
    group: str | None = None
    level: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    first_response_at: datetime | None = None
    last_customer_reply_at: datetime | None = None
    due_at: datetime | None = None
    requester: str = "Carla Customer"


class SandboxDriver(Protocol):
    """One helpdesk emulator, started and driven for `escbridge sandbox` and `escbridge demo`."""

    helpdesk: str  # the connector type, e.g. "zendesk"
    display_name: str
    url: str  # where the emulator listens, once started

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        """Start the emulator on 127.0.0.1 (0: any free port) with these groups; its URL.

        ``options`` go to the emulator's constructor (limits, faults, clocks) over the defaults.
        """
        ...

    def stop(self) -> None: ...

    def instance_settings(self) -> dict[str, Any]:
        """The escbridge.yaml instance settings (with ``type``) that reach this emulator."""
        ...

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        """The URL the helpdesk posts to, given the receiver's base URL."""
        ...

    def connect_webhooks(self, url: str) -> None:
        """Make the emulator post its webhooks to ``url`` from now on."""
        ...

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        """A ticket as a customer opens it (a webhook when ``notify``); its id."""
        ...

    def customer_writes(self, ticket_id: str, text: str) -> None: ...

    def agent_replies(self, ticket_id: str, text: str) -> None:
        """A human agent answers the customer (the first response, where the helpdesk shows it)."""
        ...

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None: ...

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every webhook queued so far is delivered."""
        ...

    def ticket_url(self, ticket_id: str) -> str: ...

    def access_hint(self) -> str:
        """How to read a ticket of this emulator by hand (credentials included)."""
        ...

    def requests(self) -> int:
        """API requests the emulator has answered."""
        ...


# --- Zendesk --------------------------------------------------------------------------------------

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
class ZendeskDriver:
    helpdesk: str = "zendesk"
    display_name: str = "Zendesk"
    url: str = ""
    _sandbox: Any = None
    _server: ServerThread | None = None

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        from escbridge_zendesk.sandbox import ZendeskSandbox

        settings: dict[str, Any] = {
            "groups": tuple(dict.fromkeys(groups)),
            "account_limit": 5000,
            "update_limit": 2000,
            "incremental_limit": 1000,
            "wall_clock": clock.wall,
            "monotonic": clock.monotonic,
        }
        self._sandbox = ZendeskSandbox(**{**settings, **options})
        self._server = ServerThread(self._sandbox.app, port=port).start()
        self.url = self._server.url
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._sandbox is not None:
            self._sandbox.webhooks.close()

    def instance_settings(self) -> dict[str, Any]:
        from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET

        admin = self._sandbox.users[0]
        return {
            "type": "zendesk",
            "base_url": self.url,
            "email": admin.email,
            "api_token": admin.api_token,
            "webhook_secret": TEST_SIGNING_SECRET,
            "integration_user_id": admin.id,
            "incremental_per_minute": 1000,
        }

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        return f"{receiver_url}/webhooks/{instance}"

    def connect_webhooks(self, url: str) -> None:
        self._sandbox.webhook_url = url

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        from escbridge_zendesk.parse import format_time

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
            extra["metric_set"] = _zendesk_metrics(
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
        from escbridge_zendesk.parse import parse_time

        sandbox = self._sandbox
        after = sandbox.human_update(int(ticket_id), comment={"body": text, "public": True})
        created = parse_time(after["created_at"])
        answered = parse_time(after["updated_at"])
        assert created is not None and answered is not None

        def first_reply(t: dict[str, Any]) -> None:
            if not (t.get("metric_set") or {}).get("replies"):
                t["metric_set"] = _zendesk_metrics(created, answered, None)

        sandbox.tickets.update(int(ticket_id), first_reply, notify=False)

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None:
        self._sandbox.human_update(int(ticket_id), additional_tags=list(tags))

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self._sandbox.webhooks.flush(timeout))

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}.json"

    def access_hint(self) -> str:
        admin = self._sandbox.users[0]
        return f"curl -u {admin.email}/token:{admin.api_token} {self.url}/api/v2/tickets/ID.json"

    def requests(self) -> int:
        return int(self._sandbox.stats.requests)


def _zendesk_metrics(
    created: datetime, first_reply: datetime | None, customer_updated: datetime | None
) -> dict[str, Any]:
    from escbridge_zendesk.parse import format_time

    minutes = int((first_reply - created).total_seconds() // 60) if first_reply else None
    return {
        "replies": 1 if first_reply else 0,
        "reply_time_in_minutes": {"calendar": minutes, "business": minutes},
        "reopens": 0,
        "requester_updated_at": format_time(customer_updated) if customer_updated else None,
    }


# --- Freshdesk ------------------------------------------------------------------------------------

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
class FreshdeskDriver:
    helpdesk: str = "freshdesk"
    display_name: str = "Freshdesk"
    url: str = ""
    _sandbox: Any = None
    _server: ServerThread | None = None

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        from escbridge_freshdesk.sandbox import FreshdeskSandbox

        settings: dict[str, Any] = {
            "groups": tuple(dict.fromkeys(groups)),
            "custom_statuses": {6: "Waiting on Customer", _FD_ON_HOLD: "On Hold"},
            "rate_limit": 20000,
            "clock": clock.now,
            "monotonic": clock.monotonic,
        }
        self._sandbox = FreshdeskSandbox(**{**settings, **options})
        self._server = ServerThread(self._sandbox.app, port=port).start()
        self.url = self._server.url
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._sandbox is not None:
            self._sandbox.webhooks.close()

    def instance_settings(self) -> dict[str, Any]:
        from escbridge_freshdesk.sandbox import TEST_API_KEY

        return {
            "type": "freshdesk",
            "domain": self._sandbox.domain,
            "api_key": TEST_API_KEY,
            "api_url": self.url,
            "webhook_secret": SANDBOX_WEBHOOK_SECRET,
            "webhook_header": _FD_SECRET_HEADER,
        }

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        return f"{receiver_url}/webhooks/{instance}"

    def connect_webhooks(self, url: str) -> None:
        self._sandbox.webhook_url = url
        self._sandbox.webhook_auth = {
            "mode": "header",
            "name": _FD_SECRET_HEADER,
            "value": SANDBOX_WEBHOOK_SECRET,
        }

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        from escbridge_freshdesk.sandbox import fd_time

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

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self._sandbox.webhooks.flush(timeout))

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}"

    def access_hint(self) -> str:
        from escbridge_freshdesk.sandbox import TEST_API_KEY

        return f"curl -u {TEST_API_KEY}:X {self.url}/api/v2/tickets/ID"

    def requests(self) -> int:
        return int(self._sandbox.stats.requests)


# --- Zoho Desk ------------------------------------------------------------------------------------

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
class ZohoDeskDriver:
    helpdesk: str = "zohodesk"
    display_name: str = "Zoho Desk"
    url: str = ""
    _desk: Any = None
    _server: ServerThread | None = None
    _groups: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> dept, team

    def start(
        self, clock: SimClock, groups: Sequence[str], *, port: int = 0, **options: Any
    ) -> str:
        from escbridge_zohodesk.connector import ZohoDeskConnector
        from escbridge_zohodesk.sandbox import emulator

        app = ZohoDeskConnector.sandbox(
            **{"clock": clock.wall, "search_full_items": True, **options}
        )
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
        self._server = ServerThread(app, port=port).start()
        self.url = self._server.url
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._desk is not None:
            self._desk.dispatcher.close()

    def instance_settings(self) -> dict[str, Any]:
        from escbridge_zohodesk import sandbox as zoho

        return {
            "type": "zohodesk",
            "data_centre": self._desk.data_centre,
            "org_id": zoho.SANDBOX_ORG_ID,
            "client_id": zoho.SANDBOX_CLIENT_ID,
            "client_secret": zoho.SANDBOX_CLIENT_SECRET,
            "refresh_token": zoho.SANDBOX_REFRESH_TOKEN,
            "sandbox": True,
            "desk_url": self.url,
            "webhook_id": ZOHO_WEBHOOK_ID,
            "webhook_token": ZOHO_URL_TOKEN,
            "agent_id": zoho.ESCBRIDGE_AGENT,
        }

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        return f"{receiver_url}/webhooks/{instance}?token={ZOHO_URL_TOKEN}"

    def connect_webhooks(self, url: str) -> None:
        self._desk.webhooks.clear()
        self._desk.register_webhook(url, webhook_id=ZOHO_WEBHOOK_ID)

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        from escbridge_zohodesk.parse import format_time
        from escbridge_zohodesk.sandbox import HUMAN_AGENT

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
            "tags": list(spec.tags),
            "cf": {
                "cf_escalation_level": f"escbridge_{spec.level}" if spec.level else None,
                "cf_overdue_2h_triggered": "false",
            },
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
        from escbridge_zohodesk.sandbox import HUMAN_AGENT

        now = self._desk.now_iso()
        self._desk.tickets.update(
            ticket_id,
            lambda t: t.update(modifiedTime=now, modifiedBy=HUMAN_AGENT),
            actor=HUMAN_AGENT,
        )

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None:
        from escbridge_zohodesk.sandbox import HUMAN_AGENT

        now = self._desk.now_iso()

        def mutate(t: dict[str, Any]) -> None:
            t.update(tags=[*(t.get("tags") or []), *tags], modifiedTime=now, modifiedBy=HUMAN_AGENT)

        self._desk.tickets.update(ticket_id, mutate, actor=HUMAN_AGENT)

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self._desk.dispatcher.flush(timeout))

    def ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/api/v1/tickets/{ticket_id}"

    def access_hint(self) -> str:
        return (
            f"OAuth: POST {self.url}/oauth/v2/token (refresh grant, sandbox client), then "
            f"GET {self.url}/api/v1/tickets/ID with 'Authorization: Zoho-oauthtoken …' and "
            "'orgId'"
        )

    def requests(self) -> int:
        return int(self._desk.stats.requests)


# --- finding them ---------------------------------------------------------------------------------

_BUILT_IN: Mapping[str, type[Any]] = {
    "zendesk": ZendeskDriver,
    "freshdesk": FreshdeskDriver,
    "zohodesk": ZohoDeskDriver,
}


def available_drivers(
    registry: Registry | None = None, only: Iterable[str] | None = None
) -> list[SandboxDriver]:
    """A driver for every installed connector plugin that has a sandbox, in name order.

    A plugin's own ``sandbox_driver()`` wins over the built-in one; a plugin that fails to load
    or has neither is left out (logged).
    """
    from escbridge.connector import PluginLoadError, default_registry

    registry = registry or default_registry()
    wanted = set(only) if only is not None else None
    drivers: list[SandboxDriver] = []
    for name in registry.names():
        if wanted is not None and name not in wanted:
            continue
        try:
            plugin = registry.load(name)
        except PluginLoadError as error:
            log.warning("no sandbox for %s: %s", name, error)
            continue
        if CAP_SANDBOX not in plugin.info.capabilities:
            continue
        factory = getattr(plugin.cls, "sandbox_driver", None) or _BUILT_IN.get(name)
        if factory is None:
            log.info("connector %s has a sandbox but no driver for the demo", name)
            continue
        drivers.append(factory())
    return drivers


def group_names(rungs: Iterable[Any], instance: str, helpdesk: str) -> list[str]:
    """The groups a matrix routes to on one helpdesk, in ladder order (the first is frontline)."""
    names = [rung.group_for(instance, helpdesk) for rung in rungs]
    return [n for n in dict.fromkeys(names) if n]
