"""Moved to :mod:`escbridge.sandbox.driver`; this alias goes once no test imports it.

(tests/core/test_sync_sandboxes.py)
"""

from escbridge.sandbox.driver import SandboxDriver, SimClock, TicketSpec, available_drivers

__all__ = ["SandboxDriver", "SimClock", "TicketSpec", "available_drivers"]
