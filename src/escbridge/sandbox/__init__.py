"""The helpdesk emulators' shared machinery, the drivers that run them, and the demo.

- :mod:`.emulator`: what every connector's emulator is built on (records, limiter, webhook
  sender, a loopback server) — no Flask, so the core imports it without the web stack;
- :mod:`.faults`: network faults (lost answers, late completions, slow answers, 5xx, 429,
  connection resets) as a WSGI middleware every emulator installs, scriptable from tests,
  `escbridge sandbox --fault` and ``/__sandbox/faults``;
- :mod:`.app`: the Flask side of an emulator (JSON errors, Basic-auth hook, control routes),
  imported only by the connectors' sandboxes, behind their ``[sandbox]`` extra;
- :mod:`.driver`: :class:`SandboxDriver`, what `escbridge sandbox` and `escbridge demo` need of
  an emulator, and :class:`SimClock`, the simulated time they share;
- :mod:`.backlog`: a realistic backlog and a set of running, seeded emulators;
- :mod:`.demo`: the simulated support day behind `escbridge demo`.
"""

from __future__ import annotations

from escbridge.sandbox.emulator import (
    Change,
    Delivery,
    RecordStore,
    SandboxStats,
    ServerThread,
    WebhookDispatcher,
    quiet_werkzeug,
    serve,
)
from escbridge.sandbox.faults import FaultPlan, FaultRule

__all__ = [
    "Change",
    "Delivery",
    "FaultPlan",
    "FaultRule",
    "RecordStore",
    "SandboxStats",
    "ServerThread",
    "WebhookDispatcher",
    "quiet_werkzeug",
    "serve",
]
