"""Shared helpers for the Zoho Desk connector tests (recorded-shaped payloads, a fake clock)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import responses
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector

from escbridge.connector import Runtime
from escbridge.testing import FakeClock

FIXTURES = Path(__file__).parents[2] / "fixtures" / "zohodesk"  # one place: tests/fixtures
DESK = "https://desk.zoho.eu/api/v1"
TOKEN_URL = "https://accounts.zoho.eu/oauth/v2/token"
JWKS_URL = "https://desk.zoho.eu/.well-known/jwks.json"
ORG_ID = "20065432"
CLIENT_ID = "1000.ESCBRIDGECLIENT"
CLIENT_SECRET = "zoho-client-secret-5f2a9c0d"
REFRESH_TOKEN = "1000.refresh.8e3b7d1a6c4f"
URL_TOKEN = "hook-url-token-4b9e2f7a1c3d"
WEBHOOK_ID = "55430000001230001"
AGENT_ID = "55430000000064999"
TICKET_ID = "55430000068840041"
SECRETS = (CLIENT_SECRET, REFRESH_TOKEN, URL_TOKEN)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def ticket_json(**changes: Any) -> dict[str, Any]:
    """The recorded ticket (reference §6), with ``changes`` applied (``cf`` is merged)."""
    raw: dict[str, Any] = copy.deepcopy(load("ticket.json"))
    cf = changes.pop("cf", None)
    raw.update(changes)
    if cf is not None:
        raw["cf"] = {**raw["cf"], **cf}
    return raw


class Clock(FakeClock):
    """``escbridge.testing.FakeClock`` starting on the day the fixtures were recorded."""

    def __init__(self, start: datetime = datetime(2026, 10, 5, 18, 0, tzinfo=UTC)) -> None:
        super().__init__(start)


def settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_centre": "eu",
        "org_id": ORG_ID,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "webhook_id": WEBHOOK_ID,
        "webhook_token": URL_TOKEN,
        "agent_id": AGENT_ID,
    }
    base.update(overrides)
    return base


def make_connector(clock: Clock, **overrides: Any) -> ZohoDeskConnector:
    return ZohoDeskConnector(
        ZohoDeskConfig.model_validate(settings(**overrides)),
        instance="support-eu",
        runtime=Runtime.simulated(clock),
    )


def token_reply(rsps: responses.RequestsMock, value: str = "1000.tok.one", **extra: Any) -> Any:
    body = {**load("token.json"), "access_token": value, **extra}
    return rsps.post(TOKEN_URL, json=body)


def desk_auth(call: Any) -> str | None:
    value = call.request.headers.get("Authorization")
    return str(value) if value is not None else None
