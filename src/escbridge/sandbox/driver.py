"""Driving the connectors' helpdesk emulators: start one, fill it, act in it as people do.

`escbridge sandbox` and `escbridge demo` need more of an emulator than the connector contract's
``sandbox()`` (a Flask app): an address, tickets in the helpdesk's own JSON, a customer who
writes and an agent who edits, webhooks pointed at the receiver, and the escbridge.yaml settings
that reach it. A :class:`SandboxDriver` does that for one helpdesk, from helpdesk-neutral
:class:`TicketSpec` records.

Each connector ships its own driver: ``sandbox_driver()``, a classmethod of its plugin class,
returns one (the members of :class:`SandboxDriver`). Drivers are found through the plugin
registry like everything else about a connector, so a missing connector is simply left out and
the core names none of them.

Time: emulators and connectors take their clocks as arguments; :class:`SimClock` gives them one
simulated "now" that runs at real speed and can jump ahead, so a demo spends hours of helpdesk
time in seconds without sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from escbridge.connector import CAP_SANDBOX, Registry
from escbridge.model import Channel, Priority, Status
from escbridge.sandbox.emulator import SandboxStats, ServerThread, WebhookDispatcher
from escbridge.sandbox.faults import FaultPlan

log = logging.getLogger(__name__)

__all__ = [
    "EmulatorDriver",
    "SandboxDriver",
    "SimClock",
    "TicketSpec",
    "available_drivers",
]

#: The shared webhook secret of the sandboxes: it guards nothing but loopback emulators.
SANDBOX_WEBHOOK_SECRET = "escbridge-sandbox-webhook-secret"


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
        """Make the emulator post its webhooks to ``url`` from now on.

        Raises ValueError when the helpdesk refuses the URL, as Zoho Desk does when its
        validation GET gets no 200 (no receiver answers there yet).
        """
        ...

    def create_ticket(self, spec: TicketSpec, *, notify: bool = True) -> str:
        """A ticket as a customer opens it (a webhook when ``notify``); its id."""
        ...

    def customer_writes(self, ticket_id: str, text: str) -> None: ...

    def agent_replies(self, ticket_id: str, text: str) -> None:
        """A human agent answers the customer (the first response, where the helpdesk shows it)."""
        ...

    def agent_adds_tags(self, ticket_id: str, tags: Sequence[str]) -> None: ...

    def agent_solves(self, ticket_id: str) -> None:
        """A human agent marks the ticket solved (the helpdesk fires its webhook)."""
        ...

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


class EmulatorDriver:
    """What every :class:`SandboxDriver` does the same way, for a connector's driver to subclass.

    It serves the emulator's WSGI app on a loopback port (:meth:`serve`), stops it and its
    webhook sender, waits for webhooks, counts requests, and posts webhooks to the receiver's
    ``/webhooks/<instance>``. What is left to the subclass is the helpdesk's knowledge: its
    settings, its ticket JSON, and what its customers and agents do.
    """

    helpdesk: str = ""
    display_name: str = ""
    url: str = ""
    _server: ServerThread | None = None
    _webhooks: WebhookDispatcher | None = None
    _stats: SandboxStats | None = None
    #: the served emulator's network faults (``escbridge sandbox --fault``), once started
    faults: FaultPlan | None = None

    def serve(
        self, app: Any, *, port: int, webhooks: WebhookDispatcher, stats: SandboxStats
    ) -> str:
        """Start ``app`` on 127.0.0.1:``port`` (0: any free port); its URL."""
        self._webhooks, self._stats = webhooks, stats
        plan = getattr(app, "extensions", {}).get("escbridge_faults")
        self.faults = plan if isinstance(plan, FaultPlan) else None
        self._server = ServerThread(app, port=port).start()
        self.url = self._server.url
        return self.url

    def stop(self) -> None:
        if self.faults is not None:
            self.faults.close()  # no client waits on a slow or hanging answer any more
        if self._server is not None:
            self._server.stop()
        if self._webhooks is not None:
            self._webhooks.close()

    def webhook_url(self, receiver_url: str, instance: str) -> str:
        return f"{receiver_url}/webhooks/{instance}"

    def flush(self, timeout: float = 10.0) -> bool:
        return self._webhooks.flush(timeout) if self._webhooks is not None else True

    def requests(self) -> int:
        return self._stats.requests if self._stats is not None else 0


# --- finding them ---------------------------------------------------------------------------------


def available_drivers(
    registry: Registry | None = None, only: Iterable[str] | None = None
) -> list[SandboxDriver]:
    """A driver for every installed connector plugin that has a sandbox, in name order.

    Each comes from its plugin class's ``sandbox_driver()`` (part of the connector contract for
    a plugin that declares the sandbox capability); a plugin that fails to load, has no driver
    (NotImplementedError), or whose emulator's web stack (its ``[sandbox]`` extra) is not
    installed, is left out (logged).
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
        try:
            drivers.append(plugin.cls.sandbox_driver())
        except NotImplementedError:
            log.debug("connector %s has a sandbox but no driver here: not started", name)
        except ImportError as error:  # the emulator's web stack is the connector's extra
            package = (plugin.distribution or f"escbridge-{name}").split()[0]  # "name version"
            log.warning("no sandbox for %s: %s (install %s[sandbox])", name, error, package)
    return drivers


def group_names(rungs: Iterable[Any], instance: str, helpdesk: str) -> list[str]:
    """The groups a matrix routes to on one helpdesk, in ladder order (the first is frontline)."""
    names = [rung.group_for(instance, helpdesk) for rung in rungs]
    return [n for n in dict.fromkeys(names) if n]
