"""examples/acmedesk, a third-party connector: installed, found by entry point, conformant."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from escbridge_acmedesk import AcmeDeskConfig, AcmeDeskConnector
from escbridge_acmedesk.connector import SIGNATURE_HEADER, signature
from escbridge_acmedesk.sandbox import AcmeDeskSandbox

from escbridge.cli import main
from escbridge.config import load_config
from escbridge.connector import ApplyResult, Registry, WebhookRequest, create_connector
from escbridge.model import Actions, LevelMarker, Priority, Ticket
from escbridge.testing.conformance import (
    ConnectorConformance,
    HelpdeskTicket,
    LoopbackHarness,
    brief_sleep,
)

API_KEY = "acme-conformance-key-5e1f"
WRONG_KEY = "acme-revoked-key-77b2"
WEBHOOK_SECRET = "acme-conformance-webhook-secret-c0de"


# --8<-- [start:harness]
class AcmeHarness(LoopbackHarness):
    groups = ("Frontline", "Second Line")
    connector_class: type[AcmeDeskConnector] = AcmeDeskConnector

    def __init__(self) -> None:
        self.sandbox = AcmeDeskSandbox(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET)
        super().__init__(self.sandbox.app, flush=self.sandbox.webhooks.flush)
        self.sandbox.webhook_url = f"{self.hook_url}/webhooks/acme"

    def connector(self, *, valid_credentials: bool = True) -> AcmeDeskConnector:
        config = AcmeDeskConfig(
            url=self.api_url,
            api_key=API_KEY if valid_credentials else WRONG_KEY,  # type: ignore[arg-type]
            webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
        )
        return self.connector_class(config, instance="acme", sleep=brief_sleep)

    def secrets(self) -> Collection[str]:
        return (API_KEY, WRONG_KEY, WEBHOOK_SECRET)

    def create_ticket(
        self,
        *,
        tags: Collection[str] = (),
        priority: Priority = Priority.NORMAL,
        level: str | None = None,
    ) -> str:
        marker = [LevelMarker.tag(level)] if level else []
        raw = self.sandbox.create_ticket(
            priority=priority.label, labels=[*tags, *marker], team=self.groups[0]
        )
        return str(raw["id"])

    def human_edit(self, ticket_id: str, *, tags: Collection[str] = ()) -> None:
        self.sandbox.human_edit(
            int(ticket_id),
            {"add_labels": list(tags), "notes": [{"text": "On it.", "private": False}]},
        )

    def read(self, ticket_id: str) -> HelpdeskTicket:
        raw = self.sandbox.ticket(int(ticket_id))
        labels = frozenset(raw["labels"])
        team = next((t["name"] for t in self.sandbox.teams if t["id"] == raw["team_id"]), None)
        return HelpdeskTicket(
            tags=labels,
            priority=Priority.parse(raw["priority"]),
            group=team,
            notes=tuple(n["text"] for n in raw["_notes"] if n["private"]),
            markers=tuple(sorted(t for t in labels if LevelMarker.is_marker(t))),
        )

    def forge(self, request: WebhookRequest) -> WebhookRequest:
        headers = {**request.headers, SIGNATURE_HEADER: signature("guessed", request.body)}
        return WebhookRequest.of(headers, request.body, request.query)
        # --8<-- [end:harness]


# --8<-- [start:suite]
@pytest.fixture(scope="module")
def harness() -> Iterator[AcmeHarness]:
    with AcmeHarness() as running:
        yield running


class TestAcmeDeskConformance(ConnectorConformance):
    pass
    # --8<-- [end:suite]


EXAMPLE_CONFIG = Path(__file__).parents[2] / "examples" / "acmedesk" / "escbridge.yaml"
ROUTED_TO_ACME = """\
version: 1
name: Acme routing
levels:
  - id: l1
    name: Frontline
    groups: {acmedesk: Frontline}
  - id: l2
    name: Second line
    groups: {acmedesk: Second Line}
rules:
  - id: urgent
    name: Urgent tickets
    kind: hierarchical
    when: {priority: {at_least: urgent}}
    to: l2
"""


def test_the_installed_plugin_is_found_by_its_entry_point_and_built_from_escbridge_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/acmedesk/escbridge.yaml, as docs/connectors.md shows it: valid, and it builds."""
    plugin = Registry().load("acmedesk")
    assert plugin.cls is AcmeDeskConnector and plugin.distribution is not None
    assert plugin.distribution.startswith("escbridge-acmedesk ")

    monkeypatch.setenv("ACME_API_KEY", API_KEY)
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", WEBHOOK_SECRET)
    (tmp_path / "escbridge.yaml").write_bytes(EXAMPLE_CONFIG.read_bytes())
    (tmp_path / "matrix.yaml").write_text(ROUTED_TO_ACME, encoding="utf-8")
    assert main(["validate", str(tmp_path / "escbridge.yaml")]) == 0
    config = load_config(tmp_path / "escbridge.yaml")
    connector = create_connector(config.instances["acme"])
    assert isinstance(connector, AcmeDeskConnector) and connector.instance == "acme"
    assert API_KEY not in repr(connector)


def test_the_settings_every_connector_has_reach_its_api_client() -> None:
    config = AcmeDeskConfig(
        url="http://127.0.0.1:9",
        api_key=API_KEY,  # type: ignore[arg-type]
        webhook_secret=WEBHOOK_SECRET,  # type: ignore[arg-type]
        connect_timeout=2,
        read_timeout=7,
        max_attempts=2,
        conflict_retries=1,
    )
    connector = AcmeDeskConnector(config, instance="acme")
    assert connector.api.timeout == (2, 7)
    assert connector.api.policy.max_attempts == 2
    assert connector.conflict_retries == 1


# --- the suite has teeth: connectors that break the contract fail it -------------------------


# --8<-- [start:careless]
class LowersPriorities(AcmeDeskConnector):
    def _prepare(self, ticket: Ticket, actions: Actions) -> Any:
        prepared = super()._prepare(ticket, actions)
        if not isinstance(prepared, ApplyResult) and actions.priority is not None:
            prepared.body["priority"] = actions.priority.label
        return prepared


class NotesTwice(AcmeDeskConnector):
    def _prepare(self, ticket: Ticket, actions: Actions) -> Any:
        return super()._prepare(ticket.model_copy(update={"level": None}), actions)


class LastWriterWins(AcmeDeskConnector):
    def _prepare(self, ticket: Ticket, actions: Actions) -> Any:
        prepared = super()._prepare(ticket, actions)
        if not isinstance(prepared, ApplyResult):
            del prepared.body["if_revision"]
        return prepared


class TrustsAnyone(AcmeDeskConnector):
    def verify_request(self, request: WebhookRequest) -> None:
        return None


@pytest.mark.parametrize(
    ("careless", "test"),
    [
        (LowersPriorities, ConnectorConformance.test_a_priority_is_never_lowered),
        (
            NotesTwice,
            ConnectorConformance.test_applying_the_same_escalation_twice_leaves_one_note_and_one_marker,
        ),
        (
            LastWriterWins,
            ConnectorConformance.test_a_concurrent_edit_reaches_on_conflict_with_the_fresh_ticket,
        ),
        (TrustsAnyone, ConnectorConformance.test_forged_and_unauthenticated_webhooks_are_refused),
    ],
)
def test_the_suite_fails_a_connector_that_breaks_the_contract(
    harness: AcmeHarness, careless: type[AcmeDeskConnector], test: Callable[..., None]
) -> None:
    broken = copy.copy(harness)  # the same emulator, another connector class
    broken.connector_class = careless
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        test(ConnectorConformance(), broken)
    # --8<-- [end:careless]
