"""Zendesk own changes when the webhook names no actor (a trigger body without
``{{current_user.id}}``, api-audit.md row 13): the worker compares the ticket it fetches with
the version escbridge's own update answered with. Sandbox served on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from escbridge_zendesk import ZendeskConfig, ZendeskConnector
from escbridge_zendesk.sandbox import TEST_SIGNING_SECRET, ZendeskSandbox

from escbridge.matrix import parse_matrix
from escbridge.model import TicketEvent
from escbridge.policy import Engine
from escbridge.processing import Processor
from escbridge.sandbox import ServerThread, serve
from escbridge.store import Store, upgrade

MATRIX = """\
version: 1
name: zendesk own changes
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support}
  - id: l2
    name: Senior support
    groups: {zendesk: Tier 2}
limits:
  cooldown: 30m
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
    actions: {priority: high, note: "Escalated: VIP customer."}
"""


@pytest.fixture
def served() -> Iterator[tuple[ZendeskSandbox, ServerThread]]:
    sb = ZendeskSandbox()
    with serve(sb.app) as server:
        yield sb, server
    sb.webhooks.close()


@pytest.fixture
def worker(served: tuple[ZendeskSandbox, ServerThread], tmp_path: Path) -> Iterator[Processor]:
    _, server = served
    config = ZendeskConfig.model_validate(
        {
            "base_url": server.url,
            "sandbox": True,
            "email": "escbridge@sandbox.example",
            "api_token": "sandbox-admin-token",
            "webhook_secret": TEST_SIGNING_SECRET,
        }
    )
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    store = Store(url)
    engine = Engine(parse_matrix(MATRIX, "matrix.yaml"), helpdesks={"eu": "zendesk"})
    yield Processor(store, engine, {"eu": ZendeskConnector(config, instance="eu")})
    store.close()


def hint(ticket_id: int, key: str) -> TicketEvent:
    """A trigger delivery that names the ticket but not who changed it."""
    return TicketEvent(instance="eu", ticket_id=str(ticket_id), dedupe_key=key, actor=None)


def test_the_echo_of_escbridges_update_is_dropped_a_later_edit_is_not(
    served: tuple[ZendeskSandbox, ServerThread], worker: Processor
) -> None:
    sb, _ = served
    created = sb.create_ticket(tags=["vip"], at=datetime.now(UTC) - timedelta(hours=1))
    worker.enqueue(hint(created["id"], "customer"))
    assert worker.run_once().outcomes == {"escalated": 1}

    worker.enqueue(hint(created["id"], "echo"))  # fired by escbridge's own update
    assert worker.run_once().outcomes == {"own_change": 1}

    sb.human_update(created["id"], priority="urgent")  # a person, afterwards
    worker.enqueue(hint(created["id"], "person"))
    assert worker.run_once().outcomes == {"unchanged": 1}  # decided on, never dropped
    assert len(worker.store.escalations(instance="eu")) == 1


def test_check_says_whom_escbridge_writes_as_and_remembers_it(worker: Processor) -> None:
    connector = worker.connectors["eu"]
    report = connector.check([])
    assert report.ok, report
    assert any(n.startswith("escbridge writes as escbridge <") for n in report.notes), report
    assert any("(user 9001)" in n for n in report.notes)
    own = TicketEvent(instance="eu", ticket_id="1", dedupe_key="k", actor="9001")
    assert connector.own_change_known(own) is True  # learned by check: the door knows it now
