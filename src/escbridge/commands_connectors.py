"""Moved to :mod:`escbridge.cli.connectors`; this alias goes once no test imports it.

(tests/core/test_connector_registry.py and tests/connectors/zendesk/test_zendesk_e2e.py)
"""

from escbridge.cli.connectors import run_check, run_connectors

__all__ = ["run_check", "run_connectors"]
