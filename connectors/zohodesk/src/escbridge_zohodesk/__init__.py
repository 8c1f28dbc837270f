"""escbridge connector for Zoho Desk (plugin ``zohodesk``).

``CreditsExhausted`` is exported for the sync loop: catch it, keep the cursor, and run again at
its ``resume_at``.
"""

from __future__ import annotations

from escbridge_zohodesk.config import ZohoDeskConfig
from escbridge_zohodesk.connector import ZohoDeskConnector, __version__
from escbridge_zohodesk.errors import (
    CreditsExhausted,
    TokenLimitReached,
    UnknownGroup,
    WrongDataCentre,
)

__all__ = [
    "CreditsExhausted",
    "TokenLimitReached",
    "UnknownGroup",
    "WrongDataCentre",
    "ZohoDeskConfig",
    "ZohoDeskConnector",
    "__version__",
]
