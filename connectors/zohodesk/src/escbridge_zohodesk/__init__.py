"""escbridge connector for Zoho Desk."""

from __future__ import annotations

from typing import ClassVar

from escbridge.connector import ConnectorInfo

__version__ = "0.1.0"


class ZohoDeskConnector:
    """Zoho Desk, spoken in escbridge's normalised vocabulary."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="zohodesk",
        version=__version__,
        display_name="Zoho Desk",
        signature_scheme="RS256 JWT (X-ZDesk-JWT) + URL secret",
    )
