"""Helpers for the receiver's tests: a config with one Zendesk instance, and signed deliveries.

Deliveries are signed with the Zendesk connector's production signer (``escbridge_zendesk.
webhook.sign``) and checked by its production verifier, as bolt-python's adapter tests do.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench_loader import benchmark
from escbridge_zendesk.parse import format_time
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET
from escbridge_zendesk.webhook import (
    INVOCATION_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from flask import Flask
from flask.testing import FlaskClient

from escbridge.config import Config, parse_config
from escbridge.connector.kit import is_loopback_url
from escbridge.processing import Processor
from escbridge.store import Store

SECRET = TEST_SIGNING_SECRET
API_TOKEN = "zendesk-api-token-never-logged"
OWN_USER = 9001  # the integration user escbridge writes as
METRICS_TOKEN = "scrape-token-0123456789abcdef"  # the receivers of these tests guard /metrics
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}  # what Prometheus sends
HUMAN = 9003

#: VIP tickets go to L2 ("Tier 2" in the Zendesk sandbox).
MATRIX = """\
version: 1
name: webhook tests
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support}
  - id: l2
    name: Senior support
    groups: {zendesk: Tier 2}
    min_priority: high
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions:
      priority: high
      note: "Escalated to {{ destination.name }}: VIP customer."
"""


def write_config(
    directory: Path,
    store_url: str,
    *,
    base_url: str = "http://127.0.0.1:9",
    own_user: int | None = OWN_USER,
    processing: str = "",
) -> Path:
    """escbridge.yaml + matrix.yaml in ``directory``; secrets come from the environment."""
    (directory / "matrix.yaml").write_text(MATRIX, encoding="utf-8")
    own = f"    integration_user_id: {own_user}\n" if own_user is not None else ""
    own += "    sandbox: true\n" if is_loopback_url(base_url) else ""  # a loopback emulator
    path = directory / "escbridge.yaml"
    path.write_text(
        f"store: {store_url}\n"
        "matrix: matrix.yaml\n"
        "instances:\n"
        "  eu:\n"
        "    type: zendesk\n"
        f"    base_url: {base_url}\n"
        "    email: escbridge@sandbox.example\n"
        "    api_token: ${ZENDESK_API_TOKEN}\n"
        "    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}\n"
        f"{own}" + processing,
        encoding="utf-8",
    )
    return path


ENV = {"ZENDESK_API_TOKEN": API_TOKEN, "ZENDESK_WEBHOOK_SECRET": SECRET}


def load(path: Path) -> Config:
    return parse_config(path.read_text(encoding="utf-8"), str(path), path.parent, env=ENV)


def event_body(
    ticket_id: str | int = 123,
    *,
    actor: str | int = HUMAN,
    kind: str = "ticket.priority_changed",
    event_id: str | None = None,
) -> bytes:
    """A Zendesk event-subscription delivery (the shape the sandbox and Zendesk send)."""
    return json.dumps(
        {
            "account_id": 18525119,
            "detail": {"id": str(ticket_id), "actor_id": str(actor), "status": "OPEN"},
            "event": {"current": "HIGH", "previous": "NORMAL"},
            "id": event_id or str(uuid.uuid4()),
            "subject": f"zen:ticket:{ticket_id}",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "type": f"zen:event-type:{kind}",
            "zendesk_event_version": "2022-11-06",
        }
    ).encode()


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    at: datetime | None = None,
    invocation: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers Zendesk sends with ``body``."""
    timestamp = format_time(at or datetime.now(UTC))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    if invocation:
        headers[INVOCATION_HEADER] = invocation
    headers.update(extra or {})
    return headers


def json_of(response: Any) -> dict[str, Any]:
    data = response.get_json()
    assert isinstance(data, dict), response.data
    return data


@dataclass
class Rig:
    """A receiver app, its test client and the store behind it."""

    app: Flask
    client: FlaskClient
    processor: Processor

    @property
    def store(self) -> Store:
        return self.processor.store

    def pending(self) -> int:
        return self.store.job_counts()["pending"]


MakeRig = Callable[..., Rig]


class LogLines:
    """The JSON lines logged during a test, as the production formatter writes them."""

    def __init__(self, stream: io.StringIO) -> None:
        self._stream = stream

    @property
    def text(self) -> str:
        return self._stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


def webhook_bench() -> ModuleType:
    """benchmarks/webhooks.py, loaded once: its ``gunicorn()`` starts the shipped configuration
    and ``free_port()`` finds a port, for the tests that need a real server."""
    return benchmark("webhooks")
