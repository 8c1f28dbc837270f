"""Connectors: the contract a helpdesk plugin meets, the registry that finds plugins, and the
toolkit they are built with.

- ``contract``: the ``Connector`` protocol, its results (``ApplyResult``, ``TicketPage``,
  ``CheckReport``, ``ConnectorInfo``, capabilities), the conflict semantics, ``WebhookRequest``;
- ``registry``: plugins found by entry point (``escbridge.connectors``), loaded one by one;
- ``base``: ``BaseConnector``, with ``apply``/``apply_many`` written once;
- ``kit``: ``Runtime``, ``GroupDirectory``, ``poll_job``, ``check_identity``, ``SlidingWindow``,
  ``Identity``/``SelfIdentity`` (who escbridge writes as, learned in the background).

docs/connectors.md ("Writing a connector") walks through ``examples/acmedesk``, a plugin built
on them and tested with the conformance suite (``escbridge.testing.conformance``).
"""

from __future__ import annotations

from escbridge.config import InstanceConfig
from escbridge.connector.base import BaseConnector
from escbridge.connector.contract import (
    CAP_BULK_UPDATE,
    CAP_EVENT_WEBHOOKS,
    CAP_INCREMENTAL_SYNC,
    CAP_RESUMABLE_APPLY,
    CAP_SAFE_UPDATE,
    CAP_SANDBOX,
    CAP_TRIGGER_WEBHOOKS,
    ApplyResult,
    CheckReport,
    ConflictHandler,
    Connector,
    ConnectorInfo,
    Headers,
    TicketPage,
    WebhookRequest,
)
from escbridge.connector.kit import (
    ConnectorSettings,
    Group,
    GroupDirectory,
    Identity,
    Runtime,
    SelfIdentity,
    SlidingWindow,
    check_identity,
    poll_job,
)
from escbridge.connector.registry import (
    ENTRY_POINT_GROUP,
    Plugin,
    PluginLoadError,
    PluginStatus,
    Registry,
    create_connector,
    default_registry,
)

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
    "BaseConnector",
    "CheckReport",
    "ConflictHandler",
    "Connector",
    "ConnectorInfo",
    "ConnectorSettings",
    "Group",
    "GroupDirectory",
    "Headers",
    "Identity",
    "InstanceConfig",
    "Plugin",
    "PluginLoadError",
    "PluginStatus",
    "Registry",
    "Runtime",
    "SelfIdentity",
    "SlidingWindow",
    "TicketPage",
    "WebhookRequest",
    "check_identity",
    "create_connector",
    "default_registry",
    "poll_job",
]
