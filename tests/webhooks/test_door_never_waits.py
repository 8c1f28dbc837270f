"""The webhook door never waits on a helpdesk (issue 14, item 1).

Who escbridge writes as is learned at start-up in a background thread per instance. While the
helpdesks' APIs hang or answer 429 ``Retry-After: 60``, genuine deliveries of Zendesk,
Freshdesk and Zoho Desk are answered 202 and the door makes no API call at all: every call the
APIs see comes from the learning threads (``escbridge-identity-<instance>``). Once the
identity is known, the worker drops the own changes stored meanwhile and the door itself
answers them 200 ``ignored``.

The APIs are one ``responses`` mock; "hanging" is a handler that blocks until the test
releases it, and the connectors' retry sleeps block on a gate the test opens at the end, so
every interleaving is fixed by the test, not by timing.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from escbridge_webhooks import create_app
from escbridge_zendesk.parse import format_time
from escbridge_zendesk.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from flask.testing import FlaskClient

from escbridge.config import Config, parse_config
from escbridge.connector import BaseConnector, Runtime, create_connector
from escbridge.processing import Processor, build_processor
from escbridge.testing import FakeClock

GUARD = 30.0  # a failure guard only: nothing waits this long when the code is right

ZD_SECRET = "zendesk-webhook-secret-for-door-tests"
FD_SECRET = "freshdesk-webhook-secret-door"
ZO_URL_TOKEN = "zoho-url-token-4b9e2f7a1c3d"
ZO_ORG = "20065432"
ZO_WEBHOOK = "55430000001230001"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "desk-door-test"

#: (instance, the API user/agent escbridge writes as, a person) per helpdesk.
OWN = {"zd": "9001", "fd": "67013469919", "zo": "55430000000064999"}
OWN_EMAIL = "escbridge@acme.example"
HUMAN = {"zd": "9003", "fd": "hannah@acme.example", "zo": "55430000000064111"}

API = {
    "zd": re.compile(r"https://acme\.zendesk\.com/.*"),
    "fd": re.compile(r"https://acme\.freshdesk\.com/.*"),
    "zo": re.compile(r"https://(desk|accounts)\.zoho\.eu/(?!\.well-known).*"),
}
JWKS_URL = "https://desk.zoho.eu/.well-known/jwks.json"

CONFIG = f"""\
store: STORE
matrix: matrix.yaml
instances:
  zd:
    type: zendesk
    subdomain: acme
    email: {OWN_EMAIL}
    api_token: zendesk-api-token-door
    webhook_secret: {ZD_SECRET}
  fd:
    type: freshdesk
    domain: acme
    api_key: freshdesk-api-key-door
    webhook_secret: {FD_SECRET}
  zo:
    type: zohodesk
    data_centre: eu
    org_id: "{ZO_ORG}"
    client_id: 1000.DOORCLIENT
    client_secret: zoho-client-secret-door
    refresh_token: 1000.refresh.door
    webhook_id: "{ZO_WEBHOOK}"
    webhook_token: {ZO_URL_TOKEN}
    token_cache: ""
"""

MATRIX = """\
version: 1
name: door tests
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support, freshdesk: Support, zohodesk: Support}
  - id: l2
    name: Senior support
    groups: {zendesk: Tier 2, freshdesk: Tier 2, zohodesk: Tier 2}
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
"""


@dataclass
class Helpdesks:
    """Every helpdesk API behind one mock: ``mode`` is ``hang``, ``throttle`` or ``answer``."""

    mode: str
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (thread, method, url)
    learning: dict[str, threading.Event] = field(
        default_factory=lambda: {name: threading.Event() for name in API}
    )

    def install(self, rsps: responses.RequestsMock) -> None:
        keys = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        rsps.get(JWKS_URL, json={"keys": [{**keys, "kid": KID, "use": "sig", "alg": "RS256"}]})
        for name, pattern in API.items():
            for method in ("GET", "POST", "PUT", "PATCH"):
                rsps.add_callback(method, pattern, callback=self._answer(name))

    def _answer(self, name: str) -> Any:
        def answer(request: Any) -> tuple[int, dict[str, str], str]:
            thread = threading.current_thread().name
            self.calls.append((thread, request.method, request.url))
            if thread.startswith("escbridge-identity-"):
                self.learning[name].set()
            if self.mode == "hang":
                self.release.wait(GUARD)
                return 503, {}, "{}"
            if self.mode == "throttle":
                return 429, {"Retry-After": "60"}, json.dumps({"error": "too many requests"})
            return whoami(name, request.method, request.url)

        return answer

    def by_the_door(self) -> list[tuple[str, str, str]]:
        """The calls not made by a learning thread (the door runs in the test's thread)."""
        return [c for c in self.calls if not c[0].startswith("escbridge-identity-")]


def whoami(name: str, method: str, url: str) -> tuple[int, dict[str, str], str]:
    """A healthy API: who the credentials belong to; any other resource is not found."""
    if name == "zd" and "/users/me" in url:
        user = {"id": int(OWN["zd"]), "name": "escbridge", "email": OWN_EMAIL, "role": "admin"}
        return 200, {}, json.dumps({"user": user})
    if name == "fd" and "/agents/me" in url:
        agent = {"id": int(OWN["fd"]), "contact": {"name": "escbridge", "email": OWN_EMAIL}}
        return 200, {}, json.dumps(agent)
    if name == "zo" and method == "POST" and "/oauth/v2/token" in url:
        token = {
            "access_token": "1000.door.access",
            "api_domain": "https://www.zohoapis.eu",
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        return 200, {}, json.dumps(token)
    if name == "zo" and url.endswith("/myinfo"):
        return 200, {}, json.dumps({"id": OWN["zo"], "emailId": OWN_EMAIL, "firstName": "esc"})
    return 404, {}, json.dumps({"error": "not found"})


@dataclass
class Door:
    """The receiver on the three helpdesks, its processor, and what the test controls."""

    client: FlaskClient
    processor: Processor
    api: Helpdesks
    clock: FakeClock
    gate: threading.Event

    def connector(self, name: str) -> BaseConnector[Any, Any]:
        found = self.processor.connectors[name]
        assert isinstance(found, BaseConnector)
        return found

    def deliver(self, name: str, ticket_id: int, actor: str | None) -> tuple[int, dict[str, Any]]:
        path, body, headers = DELIVERIES[name](ticket_id, actor)
        response = self.client.post(path, data=body, headers=headers)
        return response.status_code, response.get_json()


def zendesk_delivery(ticket_id: int, actor: str | None) -> tuple[str, bytes, dict[str, str]]:
    detail: dict[str, Any] = {"id": str(ticket_id), "status": "OPEN"}
    if actor is not None:
        detail["actor_id"] = actor
    body = json.dumps(
        {
            "detail": detail,
            "event": {"current": "HIGH", "previous": "NORMAL"},
            "id": str(uuid.uuid4()),
            "subject": f"zen:ticket:{ticket_id}",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "type": "zen:event-type:ticket.priority_changed",
            "zendesk_event_version": "2022-11-06",
        }
    ).encode()
    stamp = format_time(datetime.now(UTC))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(ZD_SECRET, stamp, body),
    }
    return "/webhooks/zd", body, headers


def freshdesk_delivery(ticket_id: int, actor: str | None) -> tuple[str, bytes, dict[str, str]]:
    data: dict[str, Any] = {"ticket": {"id": ticket_id}, "event": "{ticket_action:updated}"}
    if actor is not None:
        data["performer"] = actor
    auth = base64.b64encode(f"{FD_SECRET}:X".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {auth}"}
    return "/webhooks/fd", json.dumps(data).encode(), headers


def zoho_delivery(ticket_id: int, actor: str | None) -> tuple[str, bytes, dict[str, str]]:
    payload: dict[str, Any] = {"id": str(ticket_id), "status": "Open", "ticketNumber": "1161"}
    if actor is not None:
        payload["modifiedBy"] = actor
    event = {
        "eventType": "Ticket_Update",
        "orgId": ZO_ORG,
        "eventTime": str(int(datetime.now(UTC).timestamp() * 1000)),
        "payload": payload,
        "prevState": {"id": str(ticket_id), "status": "On Hold"},
    }
    now = datetime.now(UTC).timestamp()
    claims = {
        "iss": f"orgId:{ZO_ORG}",
        "aud": f"webhookId:{ZO_WEBHOOK}",
        "iat": int(now),
        "exp": int(now + 300),
    }
    token = jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": KID})
    headers = {"Content-Type": "application/json", "X-ZDesk-JWT": token}
    return f"/webhooks/zo?token={ZO_URL_TOKEN}", json.dumps([event]).encode(), headers


DELIVERIES = {"zd": zendesk_delivery, "fd": freshdesk_delivery, "zo": zoho_delivery}


def load_config(directory: Path, store_url: str) -> Config:
    (directory / "matrix.yaml").write_text(MATRIX, encoding="utf-8")
    path = directory / "escbridge.yaml"
    path.write_text(CONFIG.replace("STORE", store_url), encoding="utf-8")
    return parse_config(path.read_text(encoding="utf-8"), str(path), directory, env={})


def open_door(config: Config, api: Helpdesks) -> Door:
    """The receiver as `create_app` builds it, its connectors on a runtime the test drives:
    a fake monotonic clock (for back-offs) and retry sleeps that wait for ``gate``."""
    clock, gate = FakeClock(), threading.Event()
    runtime = Runtime(clock=clock.monotonic, sleep=lambda _seconds: gate.wait(GUARD) and None)
    processor = build_processor(config)
    for name, instance in config.instances.items():
        processor.connectors[name] = create_connector(instance, runtime=runtime)
    app = create_app(config, processor=processor)  # starts learning who escbridge writes as
    return Door(app.test_client(), processor, api, clock, gate)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def close(door: Door) -> None:
    """Stop the learning threads, then let whatever they wait on go (in that order, so they
    end instead of trying again)."""
    for name in API:
        door.connector(name).identity.stop(timeout=0)
    door.api.release.set()
    door.gate.set()
    for name in API:
        assert door.connector(name).identity.stop(timeout=GUARD), f"{name} learner did not end"
    door.processor.store.close()


@pytest.mark.parametrize("mode", ["hang", "throttle"])
def test_genuine_deliveries_get_202_while_every_api_hangs_or_throttles(
    mode: str, rsps: responses.RequestsMock, sqlite_url: str, tmp_path: Path
) -> None:
    api = Helpdesks(mode)
    api.install(rsps)
    door = open_door(load_config(tmp_path, sqlite_url), api)
    try:
        for name in API:  # each learning thread has asked its helpdesk and is stuck on it
            assert api.learning[name].wait(GUARD), f"{name}: identity not being learned"
            assert door.connector(name).identity.known is None

        answers = {
            name: [door.deliver(name, 101, HUMAN[name]), door.deliver(name, 102, OWN[name])]
            for name in API
        }

        for name, replies in answers.items():
            assert [status for status, _ in replies] == [202, 202], (name, replies)
            assert all(body["status"] == "queued" for _, body in replies)
        assert api.by_the_door() == []  # not one API call while answering
        assert not api.release.is_set()  # ... and the hanging calls are still hanging
        assert door.processor.store.job_counts()["pending"] == 6

        # The APIs recover; once the back-off has passed, the worker learns who escbridge
        # writes as and drops the own changes it stored meanwhile; genuine ones go on to be
        # read from the helpdesk.
        for name in API:
            door.connector(name).identity.stop(timeout=0)
        api.mode = "answer"
        api.release.set()
        door.gate.set()
        for name in API:
            assert door.connector(name).identity.stop(timeout=GUARD)
        door.clock.advance(timedelta(minutes=10))
        api.calls.clear()

        report = door.processor.run_once()

        assert report.claimed == 6 and report.outcomes.get("own_change") == 3
        store = door.processor.store
        for name in API:
            assert door.connector(name).identity.known is not None
            (own,) = store.jobs(("done",), instance=name, ticket_id="102")
            assert own.outcome == "own_change"
            (genuine,) = store.jobs(("done", "pending", "failed"), instance=name, ticket_id="101")
            assert genuine.outcome != "own_change" and genuine.attempts == 1  # processed
        # The own changes were dropped without reading their ticket.
        assert not [url for _, _, url in api.calls if re.search(r"/tickets/102\b", url)]
    finally:
        close(door)


def test_once_the_identity_is_known_the_door_drops_own_changes_itself(
    rsps: responses.RequestsMock, sqlite_url: str, tmp_path: Path
) -> None:
    api = Helpdesks("answer")
    api.install(rsps)
    door = open_door(load_config(tmp_path, sqlite_url), api)
    try:
        for name in API:
            who = door.connector(name).identity.join(GUARD)
            assert who is not None and who.id == OWN[name], name
        api.calls.clear()

        for name in API:
            assert door.deliver(name, 201, OWN[name]) == (
                200,
                {"status": "ignored", "reason": "own change"},
            )
            status, body = door.deliver(name, 202, HUMAN[name])
            assert (status, body["status"]) == (202, "queued")
        # Freshdesk rules may name the performer by e-mail: also escbridge's own.
        assert door.deliver("fd", 203, OWN_EMAIL)[0] == 200
        # An event that names no actor is stored: the worker compares the ticket.
        assert door.deliver("fd", 204, None)[0] == 202

        assert api.by_the_door() == []
        assert door.processor.store.job_counts()["pending"] == 4
    finally:
        close(door)
