"""The connector conformance suite, run on the Zendesk connector against its emulator."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import pytest
from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET, ZendeskSandbox
from escbridge_zendesk.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

from escbridge.connector import Runtime, WebhookRequest
from escbridge.model import LevelMarker, Priority
from escbridge.testing.conformance import (
    ConnectorConformance,
    HelpdeskTicket,
    LoopbackHarness,
    brief_sleep,
)

ADMIN_EMAIL, ADMIN_TOKEN = "escbridge@sandbox.example", "sandbox-admin-token-7d1c"
WRONG_TOKEN = "revoked-token-55e0a9"


class ZendeskHarness(LoopbackHarness):
    groups = ("Support", "Tier 2")

    def __init__(self) -> None:
        self.sandbox = ZendeskSandbox(
            admin_token=ADMIN_TOKEN, account_limit=100_000, update_limit=100_000
        )
        super().__init__(self.sandbox.app, flush=self.sandbox.webhooks.flush)
        self.sandbox.webhook_url = f"{self.hook_url}/webhooks/eu"

    def connector(self, *, valid_credentials: bool = True) -> ZendeskConnector:
        config = ZendeskConfig.model_validate(
            {
                "base_url": self.api_url,
                "sandbox": True,
                "email": ADMIN_EMAIL,
                "api_token": ADMIN_TOKEN if valid_credentials else WRONG_TOKEN,
                "webhook_secret": TEST_SIGNING_SECRET,
            }
        )
        return ZendeskConnector(config, instance="eu", runtime=Runtime(sleep=brief_sleep))

    def secrets(self) -> Collection[str]:
        return (ADMIN_TOKEN, WRONG_TOKEN, TEST_SIGNING_SECRET)

    def create_ticket(
        self,
        *,
        tags: Collection[str] = (),
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
    ) -> str:
        marker = [LevelMarker.tag(level)] if level else []
        raw = self.sandbox.create_ticket(
            group=self.groups[0], priority=priority.label, tags=[*tags, *marker]
        )
        return str(raw["id"])

    def human_edit(self, ticket_id: str, *, tags: Collection[str] = ()) -> None:
        self.sandbox.human_update(
            int(ticket_id),
            additional_tags=list(tags),
            comment={"body": "We are looking into it.", "public": True},
        )

    def read(self, ticket_id: str) -> HelpdeskTicket:
        raw = self.sandbox.ticket(int(ticket_id))
        tags = frozenset(raw["tags"])
        group = next((g["name"] for g in self.sandbox.groups if g["id"] == raw["group_id"]), None)
        return HelpdeskTicket(
            tags=tags,
            priority=Priority.parse(raw["priority"] or "normal"),
            group=group,
            notes=tuple(c["body"] for c in raw["_comments"] if not c["public"]),
            markers=tuple(sorted(t for t in tags if LevelMarker.is_marker(t))),
        )

    def forge(self, request: WebhookRequest) -> WebhookRequest:
        timestamp = request.header(TIMESTAMP_HEADER) or ""
        headers = {
            **request.headers,
            SIGNATURE_HEADER: sign("a-guessed-secret", timestamp, request.body),
        }
        return WebhookRequest.of(headers, request.body, request.query)


@pytest.fixture(scope="module")
def harness() -> Iterator[ZendeskHarness]:
    with ZendeskHarness() as running:
        yield running


class TestZendeskConformance(ConnectorConformance):
    pass
