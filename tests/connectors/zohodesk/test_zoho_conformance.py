"""The connector conformance suite, run on the Zoho Desk connector against its emulator."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.parse import format_time, parse_time
from escbridge_zohodesk.sandbox import (
    HUMAN_AGENT,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ORG_ID,
    SANDBOX_REFRESH_TOKEN,
    create_app,
    emulator,
)

from escbridge.connector import WebhookRequest
from escbridge.model import LevelMarker, Priority
from escbridge.testing.conformance import (
    ConnectorConformance,
    HelpdeskTicket,
    LoopbackHarness,
    brief_sleep,
)

URL_TOKEN = "zoho-conformance-url-token-6f2d"
WRONG_REFRESH_TOKEN = "1000.revoked-refresh.9a8b7c6d5e"
HOOK_ID = "1892000000777001"
LEVEL_FIELD = "cf_escalation_level"
# Desk's portal has no Urgent: escbridge writes High for it.
ZOHO_PRIORITY = {Priority.LOW: "Low", Priority.NORMAL: "Medium", Priority.HIGH: "High"}
ZOHO_PRIORITY[Priority.URGENT] = "High"
FROM_ZOHO = {"Low": Priority.LOW, "Medium": Priority.NORMAL, "High": Priority.HIGH}


def url_token(query: Mapping[str, str]) -> int:
    """Desk's validation GET of the webhook URL, answered as escbridge's receiver does."""
    return 200 if query.get("token") == URL_TOKEN else 401


class ZohoHarness(LoopbackHarness):
    """Desk's emulator; the connector keeps its level marker as a tag (the default)."""

    groups = ("L1 Support", "L2 Support")
    has_tags = True

    def __init__(self) -> None:
        app = create_app(daily_credits=1_000_000, max_concurrent=100)
        self.desk = emulator(app)
        super().__init__(app, flush=self.desk.dispatcher.flush, validate=url_token)
        self.desk.register_webhook(
            f"{self.hook_url}/webhooks/zoho?token={URL_TOKEN}", webhook_id=HOOK_ID
        )
        self._connector: ZohoDeskConnector | None = None

    def connector(self, *, valid_credentials: bool = True) -> ZohoDeskConnector:
        """One connector for all tests: Desk grants ten access tokens per ten minutes."""
        if valid_credentials and self._connector is not None:
            return self._connector
        config = ZohoDeskConfig.model_validate(
            {
                "data_centre": "com",
                "org_id": SANDBOX_ORG_ID,
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "refresh_token": SANDBOX_REFRESH_TOKEN
                if valid_credentials
                else WRONG_REFRESH_TOKEN,
                "sandbox": True,
                "desk_url": self.api_url,
                "webhook_id": HOOK_ID,
                "webhook_token": URL_TOKEN,
            }
        )
        connector = ZohoDeskConnector(config, instance="zoho", sleep=brief_sleep)
        if valid_credentials:
            self._connector = connector
        return connector

    def secrets(self) -> Collection[str]:
        return (SANDBOX_CLIENT_SECRET, SANDBOX_REFRESH_TOKEN, WRONG_REFRESH_TOKEN, URL_TOKEN)

    def create_ticket(
        self,
        *,
        tags: Collection[str] = (),
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
    ) -> str:
        raw = self.desk.add_ticket(
            departmentId=self.desk.department_id("Support"),
            teamId=self.desk.team_id(self.groups[0]),
            priority=ZOHO_PRIORITY[priority],
            tags=[*tags, *([LevelMarker.tag(level)] if level else [])],
        )
        return str(raw["id"])

    def human_edit(self, ticket_id: str, *, tags: Collection[str] = ()) -> None:
        """Carol tags the ticket and changes its status in Desk."""
        for name in tags:
            self.desk.tag(name)

        def edit(ticket: dict[str, Any]) -> None:
            before = parse_time(str(ticket["modifiedTime"])) or datetime.now(UTC)
            later = max(datetime.now(UTC), before + timedelta(seconds=1))
            status = "On Hold" if ticket["status"] != "On Hold" else "Open"
            ticket.update(status=status, modifiedBy=HUMAN_AGENT, modifiedTime=format_time(later))
            ticket["tags"] = [*ticket.get("tags", []), *tags]

        self.desk.tickets.update(ticket_id, edit, actor=HUMAN_AGENT)

    def read(self, ticket_id: str) -> HelpdeskTicket:
        raw = self.desk.tickets.get(ticket_id)
        assert raw is not None
        team = self.desk.teams.get(str(raw.get("teamId") or ""))
        tags = frozenset(str(t).lower() for t in raw.get("tags") or ())
        field = LevelMarker.level_of((raw.get("cf") or {}).get(LEVEL_FIELD))
        markers = {t for t in tags if LevelMarker.is_marker(t)}
        markers |= {LevelMarker.tag(field)} if field else set()
        return HelpdeskTicket(
            tags=tags,
            priority=FROM_ZOHO[raw["priority"]],
            group=team["name"] if team else None,
            notes=tuple(
                str(c["content"])
                for c in self.desk.comments.get(ticket_id, [])
                if not c["isPublic"]
            ),
            markers=tuple(sorted(markers)),
        )

    def forge(self, request: WebhookRequest) -> WebhookRequest:
        return WebhookRequest.of(request.headers, request.body, {"token": "a-guessed-token"})


@pytest.fixture(scope="module")
def harness() -> Iterator[ZohoHarness]:
    with ZohoHarness() as running:
        yield running


class TestZohoDeskConformance(ConnectorConformance):
    pass
