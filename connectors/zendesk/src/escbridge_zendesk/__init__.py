"""escbridge connector for Zendesk.

Registered under the entry-point group ``escbridge.connectors`` as ``zendesk``; the core finds it
there and never imports it by name. Flask is needed only by ``sandbox`` (imported lazily).
"""

from __future__ import annotations

from escbridge_zendesk.config import ZendeskConfig
from escbridge_zendesk.connector import ZendeskConnector, __version__
from escbridge_zendesk.webhook import TRIGGER_BODY

__all__ = ["TRIGGER_BODY", "ZendeskConfig", "ZendeskConnector", "__version__"]
