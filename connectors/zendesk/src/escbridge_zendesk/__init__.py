"""escbridge connector for Zendesk."""

from __future__ import annotations

from typing import ClassVar

from escbridge.connector import ConnectorInfo

__version__ = "0.1.0"


class ZendeskConnector:
    """Zendesk, spoken in escbridge's normalised vocabulary."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="zendesk",
        version=__version__,
        display_name="Zendesk",
        signature_scheme="HMAC-SHA256 (X-Zendesk-Webhook-Signature)",
    )
