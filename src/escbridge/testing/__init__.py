"""Test support shipped with escbridge, for its own tests and for connector authors.

- ``FakeClock``: wall and monotonic time that move only when a test says so;
- ``FakeHelpdesk`` / ``FakeConnector``: an in-process helpdesk and a connector over it, with
  fault injection (``escbridge.testing.fakes``);
- ``escbridge.testing.wsgi``: ``WebhookCatcher`` (a loopback receiver recording the webhooks
  an emulator sends) and ``Outage`` (an emulator answering every request with a 5xx);
- ``escbridge.testing.conformance``: the pytest suite every connector plugin must pass
  (imported on demand: it needs pytest).

One fake clock and one fake connector for the whole project, instead of one per test module.
"""

from __future__ import annotations

from escbridge.testing.clock import FakeClock
from escbridge.testing.fakes import FakeConnector, FakeHelpdesk

__all__ = ["FakeClock", "FakeConnector", "FakeHelpdesk"]
