"""escbridge connector for Freshdesk (API v2 + automation-rule webhooks)."""

from __future__ import annotations

from escbridge_freshdesk.config import FreshdeskConfig
from escbridge_freshdesk.connector import CAP_RESUMABLE_APPLY, FreshdeskConnector, __version__

__all__ = [
    "CAP_RESUMABLE_APPLY",
    "FreshdeskConfig",
    "FreshdeskConnector",
    "__version__",
]
