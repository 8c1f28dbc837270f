"""The world of the notification tests: a matrix whose targets point at the local sinks, a
fake helpdesk, a processor with its notifier, on the ``store`` fixture (SQLite and PostgreSQL).

Imported by name (``from notify_harness import ...``) from the tests of this folder.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from escbridge.matrix import parse_matrix
from escbridge.model import TicketEvent
from escbridge.notify.deliver import Notifier
from escbridge.policy import Engine
from escbridge.processing import ProcessingConfig, Processor
from escbridge.sandbox.sinks import HttpSink, SmtpSink
from escbridge.store import NOTIFY_STATES, Store
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

SECRET = "whsec-local-0123456789abcdef"
SLACK_TOKEN = "xoxb-local-token-0123456789"
SMTP_USER = "escbridge"
SMTP_PASSWORD = "smtp-secret-4711"

MATRIX = """\
version: 1
name: notification tests
levels:
  - id: l1
    name: Frontline
    groups: {{"*": Frontline}}
  - id: l2
    name: Senior support
    groups: {{"*": Senior}}
    response: 4h
    notify: {l2}
  - id: l3
    name: Management
    groups: {{"*": Managers}}
    notify: {l3}
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {{tags: [vip]}}
    to: l2
  - id: legal
    name: Legal threat
    kind: hierarchical
    when: {{keywords: [lawyer]}}
    to: l3
notify:
  targets:
    leads-slack:
      slack: {{webhook_url: "${{SLACK_URL}}"}}
    leads-bot:
      slack: {{token: "${{SLACK_TOKEN}}", channel: C0LEADS, api_url: "{slack_api}"}}
    managers-teams:
      teams: {{url: "${{TEAMS_URL}}"}}
    managers-mail:
      email:
        host: 127.0.0.1
        port: {smtp_port}
        security: starttls
        username: {smtp_user}
        password: "${{SMTP_PASSWORD}}"
        from: "escbridge <escbridge@example.com>"
        to: [lead@example.com, manager@example.com]
    audit:
      webhook: {{url: "{hook}", secret: "${{HOOK_SECRET}}"}}
{extra}"""

EVERY_TARGET = "[leads-slack, leads-bot, managers-teams, managers-mail, audit]"
#: Where the (fake) helpdesk's agent view shows a ticket: the link every message carries.
AGENT_VIEW = "https://helpdesk.example.com/agent/tickets/"

#: The sink's path of each HTTP target.
PATHS = {"leads-slack": "/slack", "managers-teams": "/teams", "audit": "/hook"}


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only the throw-away certificate
    cafile: Path  # the certificate, for a client in another process


@dataclass
class World:
    store: Store
    helpdesk: FakeHelpdesk
    clock: FakeClock
    http: HttpSink
    smtp: SmtpSink
    processor: Processor
    environ: dict[str, str]
    matrix_text: str

    def escalate(self, ticket_id: str, **ticket: Any) -> None:
        """A ticket arrives (its webhook) and the worker processes it: recorded and escalated."""
        self.helpdesk.add(ticket_id, **ticket)
        self.processor.enqueue(
            TicketEvent(instance="fake", ticket_id=ticket_id, dedupe_key=f"evt-{ticket_id}")
        )
        outcomes = self.processor.run_once().outcomes
        assert outcomes.get("escalated") == 1, outcomes

    def deliver(self) -> Any:
        report = self.processor.notify_once()
        assert report is not None
        return report

    def states(self) -> dict[str, str]:
        """target -> state of its rows (every row of one target in one state)."""
        found: dict[str, set[str]] = {}
        for row in self.store.notifications(NOTIFY_STATES, limit=None):
            found.setdefault(row.target, set()).add(row.state)
        return {target: "/".join(sorted(states)) for target, states in found.items()}


class LinkedConnector(FakeConnector):
    """The fake helpdesk's connector, knowing its agent view's links (as real ones do)."""

    def agent_url(self, ticket_id: str) -> str | None:
        return f"{AGENT_VIEW}{ticket_id}"


class ShortReads(requests.Session):
    """A session whose first ``times`` requests have a short read timeout: the requests a
    test's sink holds, so the client gives up first (the sink answers only once released:
    the order is fixed). Later requests keep the senders' own timeouts, so a slow machine
    cannot turn an answered request into a lost one."""

    def __init__(self, times: int = 1, read_timeout: float = 0.5) -> None:
        super().__init__()
        self.times = times
        self.read_timeout = read_timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.times > 0:
            self.times -= 1
            connect, _ = kwargs.get("timeout") or (5.0, 20.0)
            kwargs["timeout"] = (connect, self.read_timeout)
        return super().request(*args, **kwargs)


def matrix_text(
    http: HttpSink,
    smtp: SmtpSink,
    *,
    l2: str = EVERY_TARGET,
    l3: str = "[audit]",
    extra: str = "",
) -> str:
    return MATRIX.format(
        l2=l2,
        l3=l3,
        slack_api=http.slack_api,
        smtp_port=smtp.port,
        smtp_user=SMTP_USER,
        hook=http.url(PATHS["audit"]),
        extra=extra,
    )


def environ(http: HttpSink) -> dict[str, str]:
    return {
        "SLACK_URL": http.url(PATHS["leads-slack"]),
        "SLACK_TOKEN": SLACK_TOKEN,
        "TEAMS_URL": http.url(PATHS["managers-teams"]),
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "HOOK_SECRET": SECRET,
    }


def build_world(
    store: Store,
    tmp_path: Path,
    http: HttpSink,
    smtp: SmtpSink,
    client_tls: ssl.SSLContext,
    *,
    clock: FakeClock | None = None,
    session: requests.Session | None = None,
    **matrix: str,
) -> World:
    text = matrix_text(http, smtp, **matrix)
    env = environ(http)
    parsed = parse_matrix(text, "matrix.yaml")
    clock = clock or FakeClock()
    helpdesk = FakeHelpdesk(tmp_path / "helpdesk.db")
    notifier = Notifier(
        store,
        parsed.notify,
        environ=env,
        backoff=lambda attempt: 60.0 * attempt,
        ssl_context=client_tls,
        session=session,
        clock=clock,
    )
    processor = Processor(
        store,
        Engine(parsed),
        {"fake": LinkedConnector(helpdesk)},
        settings=ProcessingConfig(),
        clock=clock,
        rng=random.Random(7),
        worker_id="test-worker",
        notifier=notifier,
    )
    return World(store, helpdesk, clock, http, smtp, processor, env, text)
