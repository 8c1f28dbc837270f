"""escbridge connector for Acme Desk — the worked example of a third-party plugin.

Installed, it registers under the entry-point group ``escbridge.connectors`` as ``acmedesk``;
``tests/examples`` runs escbridge's connector conformance suite on it.
"""

from escbridge_acmedesk.connector import AcmeDeskConfig, AcmeDeskConnector, __version__

__all__ = ["AcmeDeskConfig", "AcmeDeskConnector", "__version__"]
