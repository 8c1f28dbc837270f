"""The connector plugin contract and the registry that finds plugins by entry point.

The core never imports a connector by name: plugins register under the entry-point group
``escbridge.connectors`` and are loaded only when an instance in escbridge.yaml uses them, so one
broken plugin cannot stop the others (it is reported by name, with its error).

A plugin's entry point names a class that has a ``ConnectorInfo`` as ``info`` (with the pydantic
model of its settings as ``info.config_model``) and is constructed as
``cls(config, instance=<instance name>, **overrides)``, where ``overrides`` are for tests
(``session=``, ``sleep=``, …). The README's "Writing a connector" has a worked example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from escbridge.config import InstanceConfig
from escbridge.errors import ConfigError, ConnectorLoadError
from escbridge.model import Actions, Ticket, TicketEvent

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "escbridge.connectors"

# Capabilities a plugin may declare in ConnectorInfo.capabilities (free text is allowed too).
CAP_BULK_UPDATE = "bulk_update"  # apply_many uses a real bulk API
CAP_SAFE_UPDATE = "safe_update"  # apply detects concurrent edits (409) instead of overwriting
CAP_EVENT_WEBHOOKS = "event_webhooks"  # platform event subscriptions
CAP_TRIGGER_WEBHOOKS = "trigger_webhooks"  # webhooks sent by a helpdesk rule/trigger
CAP_INCREMENTAL_SYNC = "incremental_sync"  # iter_tickets resumes from a cursor
CAP_SANDBOX = "sandbox"  # sandbox() emulates the helpdesk
# apply() on a ticket that already carries the level marker writes only what is still missing
# (a connector that needs several calls per escalation, e.g. Freshdesk's PUT + note); the
# processing layer calls it when it recovers an escalation that landed before a crash.
CAP_RESUMABLE_APPLY = "resumable_apply"


@dataclass(frozen=True)
class ConnectorInfo:
    """What a plugin is and can do, shown by `escbridge connectors`."""

    name: str
    version: str
    display_name: str
    capabilities: frozenset[str] = field(default_factory=frozenset)
    signature_scheme: str = ""
    config_model: type[BaseModel] | None = None


ConflictHandler = Callable[[Ticket], Actions | None]
"""Called by ``apply`` with the re-fetched ticket after a 409: the actions to write now, or None
when, on the fresh ticket, nothing is to be done any more."""


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of writing one escalation.

    ``ok`` and not ``skipped``: written (``actions`` is what was written after any re-decision,
    ``version`` the new concurrency stamp). ``skipped``: a re-decision after a conflict said there
    is nothing left to do. Not ``ok``: ``error`` says why; ``retryable`` says whether trying the
    same thing later may work (``conflict`` marks a concurrent edit).
    """

    ticket_id: str
    ok: bool
    error: str | None = None
    retryable: bool = False
    actions: Actions | None = None
    version: str | None = None
    conflicts: int = 0
    skipped: bool = False
    conflict: bool = False


@dataclass(frozen=True)
class TicketPage:
    """One page of a sync scan: tickets and the cursor to resume from after them."""

    tickets: Sequence[Ticket]
    cursor: str | None
    done: bool


@dataclass(frozen=True)
class CheckReport:
    """What `escbridge check` shows for one instance: ready, or exactly what is wrong."""

    ok: bool
    identity: str = ""
    missing_groups: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # facts worth knowing that are not problems (e.g. sync mode)


@runtime_checkable
class Connector(Protocol):
    """What every helpdesk plugin offers, in the normalised vocabulary (see ARCHITECTURE.md).

    Errors: calls that reach the helpdesk raise the typed errors of ``escbridge.http``
    (AuthError, NotFound, RateLimited, TransientError, …); webhook checks raise
    ``WebhookAuthError`` / ``WebhookPayloadError``.
    """

    info: ClassVar[ConnectorInfo]
    instance: str

    def check(self, groups: Collection[str]) -> CheckReport:
        """Prove credentials and reachability; resolve every group name given."""
        ...

    def fetch_ticket(self, ticket_id: str) -> Ticket: ...

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        """Open tickets changed since ``cursor`` (or ``since`` when there is no cursor yet)."""
        ...

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        """Write one escalation, guarded against concurrent edits.

        On a conflict, with ``on_conflict``: re-fetch, ask it for fresh actions, retry (bounded).
        Without it: raise ``escbridge.http.Conflict`` so the caller re-fetches and re-decides.
        """
        ...

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        """Bulk form; one ApplyResult per item, in the same order."""
        ...

    def parse_ticket(self, raw: Mapping[str, Any]) -> Ticket: ...

    def verify_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]
    ) -> None: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[TicketEvent]: ...

    def is_own_change(self, event: TicketEvent) -> bool: ...

    @classmethod
    def sandbox(cls, **options: Any) -> Any:
        """A Flask app emulating the helpdesk (no credentials needed: it is a classmethod)."""
        ...


# --------------------------------------------------------------------------- registry


class PluginLoadError(ConnectorLoadError):
    """One plugin could not be loaded; the others still work."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"connector plugin '{plugin}': {reason}")


@dataclass(frozen=True)
class Plugin:
    """A loaded connector plugin: its class and where it came from."""

    name: str
    target: str
    distribution: str | None
    cls: Any
    info: ConnectorInfo

    def validate(self, instance: InstanceConfig) -> BaseModel:
        """The instance's settings as the plugin's config model; file:line problems if wrong."""
        model = self.info.config_model
        if model is None:
            raise PluginLoadError(self.name, "declares no config_model in its ConnectorInfo")
        try:
            return model.model_validate(instance.settings)
        except PydanticValidationError as exc:
            raise ConfigError(instance.problems_from(exc)) from None

    def create(self, instance: InstanceConfig, **overrides: Any) -> Connector:
        config = self.validate(instance)
        connector: Connector = self.cls(config, instance=instance.name, **overrides)
        return connector


@dataclass(frozen=True)
class PluginStatus:
    """One installed plugin as `escbridge connectors` shows it: loaded, or its error."""

    name: str
    target: str
    distribution: str | None
    plugin: Plugin | None = None
    error: str | None = None


class Registry:
    """Connector plugins found through entry points (injectable for tests)."""

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        self._eps: dict[str, metadata.EntryPoint] = {}
        self._duplicates: dict[str, list[str]] = {}
        for ep in entry_points:
            if ep.name in self._eps:
                self._duplicates.setdefault(ep.name, [_dist(self._eps[ep.name])]).append(_dist(ep))
                continue
            self._eps[ep.name] = ep
        self._loaded: dict[str, Plugin] = {}

    def names(self) -> list[str]:
        """Installed plugin names, without importing any of them."""
        return sorted(self._eps)

    def load(self, name: str) -> Plugin:
        """Import one plugin; PluginLoadError (with the reason) when missing or broken."""
        if name in self._loaded:
            return self._loaded[name]
        ep = self._eps.get(name)
        if ep is None:
            installed = ", ".join(self.names()) or "none"
            raise PluginLoadError(
                name,
                f"not installed (installed: {installed}); "
                f"install it with: pip install escbridge-{name}",
            )
        if name in self._duplicates:
            log.warning(
                "connector '%s' is provided by several distributions (%s); using %s",
                name,
                ", ".join(self._duplicates[name]),
                _dist(ep),
            )
        try:
            cls = ep.load()
        except Exception as exc:  # any import-time failure of a third-party module
            raise PluginLoadError(name, f"failed to import {ep.value}: {_describe(exc)}") from exc
        info = getattr(cls, "info", None)
        if not isinstance(info, ConnectorInfo):
            raise PluginLoadError(name, f"{ep.value} has no ConnectorInfo as 'info'")
        plugin = Plugin(name, ep.value, _dist(ep) or None, cls, info)
        self._loaded[name] = plugin
        return plugin

    def load_many(
        self, names: Iterable[str]
    ) -> tuple[dict[str, Plugin], dict[str, PluginLoadError]]:
        """Load only the plugins named (those configured); failures are returned, not raised."""
        ok: dict[str, Plugin] = {}
        failed: dict[str, PluginLoadError] = {}
        for name in dict.fromkeys(names):
            try:
                ok[name] = self.load(name)
            except PluginLoadError as exc:
                failed[name] = exc
        return ok, failed

    def statuses(self) -> list[PluginStatus]:
        """Every installed plugin, loaded one by one; a broken one is reported, not raised."""
        out = []
        for name in self.names():
            ep = self._eps[name]
            try:
                plugin = self.load(name)
            except PluginLoadError as exc:
                out.append(PluginStatus(name, ep.value, _dist(ep) or None, error=exc.reason))
            else:
                out.append(PluginStatus(name, ep.value, plugin.distribution, plugin=plugin))
        return out

    def create(self, instance: InstanceConfig, **overrides: Any) -> Connector:
        """Build the connector for one configured instance (validating its settings)."""
        return self.load(instance.type).create(instance, **overrides)


def _dist(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ""
    return f"{dist.metadata['Name']} {dist.version}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_default: Registry | None = None


def default_registry() -> Registry:
    """The registry over the installed distributions (built once per process)."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def create_connector(
    instance: InstanceConfig, *, registry: Registry | None = None, **overrides: Any
) -> Connector:
    """The connector for one instance of escbridge.yaml.

    Raises PluginLoadError when its plugin is missing or broken and ConfigError (file:line) when
    its settings are invalid. ``overrides`` go to the constructor (tests: ``session=``, ``sleep=``).
    """
    return (registry or default_registry()).create(instance, **overrides)


__all__ = [
    "CAP_BULK_UPDATE",
    "CAP_EVENT_WEBHOOKS",
    "CAP_INCREMENTAL_SYNC",
    "CAP_RESUMABLE_APPLY",
    "CAP_SAFE_UPDATE",
    "CAP_SANDBOX",
    "CAP_TRIGGER_WEBHOOKS",
    "ENTRY_POINT_GROUP",
    "ApplyResult",
    "CheckReport",
    "ConflictHandler",
    "Connector",
    "ConnectorInfo",
    "InstanceConfig",
    "Plugin",
    "PluginLoadError",
    "PluginStatus",
    "Registry",
    "TicketPage",
    "create_connector",
    "default_registry",
]
