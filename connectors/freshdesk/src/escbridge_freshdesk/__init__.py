"""escbridge connector for Freshdesk."""

from __future__ import annotations

from typing import ClassVar

from escbridge.connector import ConnectorInfo

__version__ = "0.1.0"


class FreshdeskConnector:
    """Freshdesk, spoken in escbridge's normalised vocabulary."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="freshdesk",
        version=__version__,
        display_name="Freshdesk",
        signature_scheme="shared secret (basic auth or header)",
    )
