"""The registry that finds connector plugins by entry point.

The core never imports a connector by name: plugins register under the entry-point group
``escbridge.connectors`` and are loaded only when an instance in escbridge.yaml uses them, so one
broken plugin cannot stop the others (it is reported by name, with its error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from escbridge.config import InstanceConfig
from escbridge.connector.contract import Connector, ConnectorInfo
from escbridge.errors import ConfigError, PluginLoadError
from escbridge.wording import pip_install

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "escbridge.connectors"
#: The connectors escbridge ships, each its own distribution ``escbridge-NAME``.
SHIPPED = ("zendesk", "freshdesk", "zohodesk")


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
            raise ConfigError(instance.problems_from(exc, model)) from None

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
            if name in SHIPPED:
                how = f"install it: {pip_install(f'escbridge-{name}')}"
            else:
                how = (
                    f"escbridge's own connectors are {', '.join(SHIPPED)} "
                    f"({pip_install('escbridge-zendesk', checkout=False)} and so on); "
                    "any other comes from its own distribution"
                )
            raise PluginLoadError(name, f"not installed (installed: {installed}); {how}")
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
    its settings are invalid. ``overrides`` go to the constructor (``runtime=``, or a
    test's ``session=``, ``sleep=`` …).
    """
    return (registry or default_registry()).create(instance, **overrides)


__all__ = [
    "ENTRY_POINT_GROUP",
    "InstanceConfig",
    "Plugin",
    "PluginLoadError",
    "PluginStatus",
    "Registry",
    "create_connector",
    "default_registry",
]
