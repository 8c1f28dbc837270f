"""The connector conformance suite, run on the Freshdesk connector against its emulator."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Collection, Iterator
from datetime import UTC, datetime

import pytest
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.sandbox import FreshdeskSandbox

from escbridge.connector import WebhookRequest
from escbridge.model import LevelMarker, Priority
from escbridge.testing import FakeClock
from escbridge.testing.conformance import (
    ConnectorConformance,
    HelpdeskTicket,
    LoopbackHarness,
    brief_sleep,
)

API_KEY = "fd-conformance-api-key-3b9e"
WRONG_KEY = "fd-revoked-api-key-0c4d"
SECRET = "fd-conformance-webhook-secret-81aa"
LEVEL_FIELD = "cf_escalation_level"


class FreshdeskHarness(LoopbackHarness):
    groups = ("Frontline", "Senior Support")

    def __init__(self) -> None:
        self.sandbox = FreshdeskSandbox(api_key=API_KEY, rate_limit=100_000)
        super().__init__(self.sandbox.app, flush=self.sandbox.webhooks.flush)
        self.sandbox.webhook_url = f"{self.hook_url}/webhooks/fd"
        self.sandbox.webhook_auth = {"mode": "basic", "username": "escbridge", "password": SECRET}
        # Webhook dedupe keys fall in time slots: one frozen "now" keeps a redelivery in its slot.
        self.clock = FakeClock(datetime.now(UTC))
        self._edits = itertools.count(1)

    def connector(self, *, valid_credentials: bool = True) -> FreshdeskConnector:
        config = FreshdeskConfig.model_validate(
            {
                "domain": "sandbox",
                "api_key": API_KEY if valid_credentials else WRONG_KEY,
                "api_url": self.api_url,
                "webhook_secret": SECRET,
                "level_field": "escalation_level",
            }
        )
        return FreshdeskConnector(config, instance="fd", sleep=brief_sleep, utcnow=self.clock)

    def secrets(self) -> Collection[str]:
        return (API_KEY, WRONG_KEY, SECRET)

    def create_ticket(
        self,
        *,
        tags: Collection[str] = (),
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
    ) -> str:
        marker = [LevelMarker.tag(level)] if level else []
        raw = self.sandbox.create_ticket(
            group=self.groups[0],
            priority=int(priority),
            tags=[*tags, *marker],
            custom_fields={LEVEL_FIELD: level},
        )
        return str(raw["id"])

    def human_edit(self, ticket_id: str, *, tags: Collection[str] = ()) -> None:
        # The emulated rule fires on tag changes: a new tag each time makes every edit count.
        current = self.sandbox.ticket(int(ticket_id))["tags"]
        added = [*tags, f"edit_{next(self._edits)}"]
        self.sandbox.human_update(int(ticket_id), tags=[*current, *added])

    def read(self, ticket_id: str) -> HelpdeskTicket:
        raw = self.sandbox.ticket(int(ticket_id))
        tags = frozenset(t.lower() for t in raw["tags"])
        group = next((g["name"] for g in self.sandbox.groups if g["id"] == raw["group_id"]), None)
        markers = {t for t in tags if LevelMarker.is_marker(t)}
        field = LevelMarker.level_of(raw["custom_fields"].get(LEVEL_FIELD))
        if field:
            markers.add(LevelMarker.tag(field))
        return HelpdeskTicket(
            tags=tags,
            priority=Priority(raw["priority"]),
            group=group,
            notes=tuple(n["body_text"] for n in self.sandbox.notes(int(ticket_id))),
            markers=tuple(sorted(markers)),
        )

    def forge(self, request: WebhookRequest) -> WebhookRequest:
        guessed = base64.b64encode(b"escbridge:a-guessed-secret").decode()
        headers = {**request.headers, "Authorization": f"Basic {guessed}"}
        return WebhookRequest.of(headers, request.body, request.query)


@pytest.fixture(scope="module")
def harness() -> Iterator[FreshdeskHarness]:
    with FreshdeskHarness() as running:
        yield running


class TestFreshdeskConformance(ConnectorConformance):
    pass
