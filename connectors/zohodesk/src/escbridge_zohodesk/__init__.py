"""escbridge connector for Zoho Desk (plugin ``zohodesk``).

When the portal's daily API credits are spent, calls raise ``escbridge.errors.RateLimited`` with
``resume_at``: the sync loop keeps the cursor and runs again then.
"""

from __future__ import annotations

from escbridge_zohodesk.config import ZohoDeskConfig
from escbridge_zohodesk.connector import ZohoDeskConnector, __version__

__all__ = ["ZohoDeskConfig", "ZohoDeskConnector", "__version__"]
