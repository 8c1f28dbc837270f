"""`escbridge explain --instance NAME --ticket ID`: a live ticket, explained, nothing written.

Each test runs the command as an admin does, against a helpdesk emulator on 127.0.0.1 reached
through the connector the escbridge.yaml names (the same fetch a worker makes). Also: a ticket
file in the helpdesk's own JSON read through the connector's parser, the clear refusal of one
given without an instance, and the documented example of escbridge's own ticket JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from escbridge.cli import main
from escbridge.cli.matrix import load_tickets
from escbridge.matrix import load_matrix
from escbridge.model import Priority
from escbridge.sandbox.backlog import config_yaml, default_matrix_path
from escbridge.sandbox.driver import SandboxDriver, SimClock, TicketSpec, available_drivers
from escbridge.store import Store, upgrade

HELPDESKS = ("zendesk", "freshdesk", "zohodesk")
START = datetime(2026, 3, 11, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday morning
#: the page that documents "Ticket JSON for explain" (the format `explain FILE` reads)
MATRIX_PAGE = Path(__file__).resolve().parents[2] / "docs" / "matrix.md"


@dataclass
class Desk:
    helpdesk: str
    driver: SandboxDriver
    clock: SimClock
    config: Path
    store: str

    def flagged(self) -> str:
        """A ticket the matrix sends to l2 at once (an agent asked for a policy exception)."""
        matrix = load_matrix(default_matrix_path())
        group = matrix.levels[0].group_for(self.helpdesk, self.helpdesk)
        now = self.clock.now()
        return self.driver.create_ticket(
            TicketSpec(
                subject="Refund 45 days after purchase",
                description="Can I still get my money back?",
                tags=("policy_exception",),
                group=group,
                priority=Priority.NORMAL,
                created_at=now - timedelta(minutes=5),
                first_response_at=now - timedelta(minutes=4),
            ),
            notify=False,
        )

    def explain(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        at = self.clock.now().isoformat()
        code = main(["explain", "--config", str(self.config), "--at", at, *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture(params=HELPDESKS)
def desk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Desk]:
    """One helpdesk's emulator, an escbridge.yaml reaching it and an upgraded SQLite store."""
    name: str = request.param
    drivers = available_drivers(only=[name])
    if not drivers:
        pytest.skip(f"the {name} connector is not installed")
    [driver] = drivers
    clock = SimClock(START)
    matrix = load_matrix(default_matrix_path())
    groups = [g for r in matrix.rungs if (g := r.group_for(name, name))]
    driver.start(clock, groups)
    store = f"sqlite:///{tmp_path / 'escbridge.db'}"
    config = tmp_path / "escbridge.yaml"
    config.write_text(
        config_yaml({name: driver.instance_settings()}, default_matrix_path(), store),
        encoding="utf-8",
    )
    try:
        yield Desk(name, driver, clock, config, store)
    finally:
        driver.stop()


def test_a_live_ticket_is_fetched_and_explained_and_nothing_is_written(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(desk.store)
    ticket = desk.flagged()

    code, out, err = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket)

    assert code == 0, err
    assert f"#{ticket} 'Refund 45 days after purchase' [{desk.helpdesk}]" in out
    assert "ESCALATE l1 → l2" in out and "by rule policy-exception" in out
    assert "✓ policy-exception ← fired" in out
    assert err == ""  # the store was read for the ticket's history, with nothing to warn about
    code, out, _ = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket, "--json")
    assert code == 0 and json.loads(out)["rule_id"] == "policy-exception"
    # read only: the ticket carries no level marker, and the store recorded nothing
    with Store(desk.store) as store:
        assert store.escalations() == [] and store.job_counts()["pending"] == 0
    code, out, _ = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket)
    assert "now at l1" in out and "ESCALATE" in out


def test_another_instance_without_its_secrets_does_not_stop_explaining_this_one(
    desk: Desk, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ESCBRIDGE_TEST_UNSET_TOKEN", raising=False)
    other = (
        "  other:\n    type: zendesk\n    subdomain: acme\n    email: a@acme.example\n"
        "    api_token: ${ESCBRIDGE_TEST_UNSET_TOKEN}\n"
    )
    desk.config.write_text(desk.config.read_text(encoding="utf-8") + other, encoding="utf-8")
    upgrade(desk.store)
    ticket = desk.flagged()

    code, out, err = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket)
    assert code == 0 and "ESCALATE" in out, err

    code, _, err = desk.explain(capsys, "--instance", "other", "--ticket", ticket)
    assert code == 2 and "ESCBRIDGE_TEST_UNSET_TOKEN" in err


def test_the_history_in_the_store_counts_and_a_missing_store_is_said(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket = desk.flagged()

    code, out, err = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket)

    assert code == 0 and "ESCALATE" in out
    assert "does not exist yet" in err and "without escalation history" in err
    assert not Path(desk.store.removeprefix("sqlite:///")).exists()  # not created by reading


def test_an_unknown_ticket_is_one_line_and_exit_1(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(desk.store)
    missing = "999999" if desk.helpdesk != "zohodesk" else "999999999999999"

    code, out, err = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", missing)

    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        f"escbridge explain: ticket {missing} not found on {desk.helpdesk} ({desk.helpdesk})"
    ]


def test_unknown_instance_and_half_named_tickets_are_invalid_input(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = desk.explain(capsys, "--instance", "support-moon", "--ticket", "1")
    assert code == 2
    assert f"unknown instance support-moon in {desk.config} (configured: {desk.helpdesk})" in err

    code, _, err = desk.explain(capsys, "--ticket", "1")
    assert code == 2 and "--ticket needs --instance NAME" in err

    code, _, err = desk.explain(capsys, "ticket.json", "--instance", desk.helpdesk, "--ticket", "1")
    assert code == 2 and "not both" in err

    code, _, err = desk.explain(capsys)
    assert code == 2 and "--instance NAME --ticket ID" in err


@pytest.mark.parametrize("desk", ["zendesk"], indirect=True)  # the connector's typed AuthError
def test_refused_credentials_are_one_line_and_exit_1(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    text = desk.config.read_text(encoding="utf-8")
    token = desk.driver.instance_settings()["api_token"]
    desk.config.write_text(text.replace(token, "not-the-token"), encoding="utf-8")
    ticket = desk.flagged()

    code, out, err = desk.explain(capsys, "--instance", desk.helpdesk, "--ticket", ticket)

    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("escbridge explain: zendesk: AuthError")
    assert "not-the-token" not in err and "Traceback" not in err


def _zendesk_show_ticket(desk: Desk, ticket: str) -> dict[str, Any]:
    """Show Ticket as Zendesk's API returns it: ``{"ticket": {…}}``."""
    settings = desk.driver.instance_settings()
    answer = requests.get(
        f"{settings['base_url']}/api/v2/tickets/{ticket}.json",
        auth=(f"{settings['email']}/token", settings["api_token"]),
        timeout=10,
    )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("desk", ["zendesk"], indirect=True)  # the envelope the issue names
def test_a_ticket_file_as_zendesk_returns_it_is_read_by_the_connector_with_instance(
    desk: Desk, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ticket = desk.flagged()
    raw = tmp_path / "show-ticket.json"
    raw.write_text(json.dumps(_zendesk_show_ticket(desk, ticket)), encoding="utf-8")

    code, out, err = desk.explain(capsys, str(raw), "--instance", "zendesk", "--brief")
    assert code == 0, err
    assert f"#{ticket} 'Refund 45 days after purchase' [zendesk]" in out
    assert "by rule policy-exception" in out

    # without an instance, the file is refused with what is expected instead
    matrix = str(default_matrix_path())
    code = main(["explain", str(raw), "--matrix", matrix, "--helpdesk", "zendesk"])
    err = capsys.readouterr().err
    assert code == 2
    assert 'Zendesk ({"ticket": …} from Show Ticket)' in err
    assert "not escbridge's ticket JSON" in err and "--instance NAME" in err


def test_the_documented_example_of_escbridge_ticket_json_is_read_by_explain(
    tmp_path: Path,
) -> None:
    """docs/matrix.md documents the format `explain FILE` reads; its example must parse."""
    text = MATRIX_PAGE.read_text(encoding="utf-8")
    section = text.split("## Ticket JSON for explain", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, "docs/matrix.md's ticket JSON section has a ```json example"
    example = tmp_path / "ticket.json"
    example.write_text(block.group(1), encoding="utf-8")

    [ticket] = load_tickets(example)

    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == set(type(ticket).model_fields), "every field documented, no other"
    assert ticket.id == "1001" and ticket.tags == frozenset({"vip"})
