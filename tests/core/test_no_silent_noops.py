"""No silent no-ops (issue 17): a setup that can escalate nothing says so, typos are refused.

The first hour of a new admin, as the issue found it: the starter matrix routes to Zendesk
groups only, the account is a Freshdesk one, and `check` said READY while `sync --dry-run`
said "skipped 92", ``"ok": true``. Here every command that can see it refuses to call that
fine, says which instance and which levels, and counts what it skipped by reason; a typo in
any section of escbridge.yaml, in a helpdesk type or in a matrix ``groups:`` key is one line
naming file:line and the key, the same way in every command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from matrix_helpers import LADDER, rule_yaml

from escbridge.cli import main
from escbridge.cli.sync import format_report
from escbridge.config import routing, unknown_helpdesk
from escbridge.connector import ConnectorInfo, TicketPage, default_registry
from escbridge.matrix import Matrix, parse_matrix
from escbridge.model import EscalationRecord, Status, Ticket
from escbridge.policy import Engine
from escbridge.processing import Outcome, Processor
from escbridge.sandbox.driver import SimClock, TicketSpec, available_drivers
from escbridge.store import Store
from escbridge.sync import Syncer, SyncOptions, skip_reason
from escbridge.testing import FakeClock

NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)  # a Wednesday, inside the ladder's office hours
INSTALLED = ", ".join(default_registry().names())


def starter_matrix() -> str:
    """The matrix `escbridge init` writes (its groups are Zendesk's only)."""
    return (resources.files("escbridge") / "templates" / "matrix.yaml").read_text("utf-8")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_text(instances: dict[str, dict[str, Any]], store: str, **sections: Any) -> str:
    data = {"store": store, "matrix": "matrix.yaml", "instances": instances, **sections}
    return yaml.safe_dump(data, sort_keys=False)


ZENDESK = {
    "type": "zendesk",
    "subdomain": "acme",
    "email": "escbridge@acme.example",
    "api_token": "token-123456",
}
FRESHDESK = {"type": "freshdesk", "domain": "acme.freshdesk.com", "api_key": "key-1234567"}


# --- the first hour, against the Freshdesk emulator --------------------------------


@pytest.fixture
def freshdesk(tmp_path: Path, _sqlite_template: Path) -> Iterator[tuple[Path, list[str]]]:
    """The starter matrix and an escbridge.yaml whose one instance is the Freshdesk
    emulator, holding five open tickets; the config's path and the tickets."""
    drivers = available_drivers(only=["freshdesk"])
    if not drivers:
        pytest.skip("the freshdesk connector (with its [sandbox] extra) is not installed")
    [driver] = drivers
    clock = SimClock(datetime.now(UTC))
    driver.start(clock, ["Frontline"])
    try:
        tickets = [
            driver.create_ticket(
                TicketSpec(
                    subject=f"I want to speak to a manager ({n})",
                    description="Please put me through to a supervisor.",
                    created_at=clock.now() - timedelta(days=3),
                ),
                notify=False,
            )
            for n in range(5)
        ]
        shutil.copyfile(_sqlite_template, tmp_path / "escbridge.db")
        write(tmp_path / "matrix.yaml", starter_matrix())
        config = write(
            tmp_path / "escbridge.yaml",
            config_text({"support-fd": driver.instance_settings()}, "sqlite:///escbridge.db"),
        )
        yield config, tickets
    finally:
        driver.stop()


NOTHING_ROUTED = (
    "support-fd (freshdesk): the matrix routes nothing here — no group for freshdesk at "
    "levels l2, l3 and team billing; add `freshdesk: GROUP` (or `support-fd: GROUP`) under "
    "their groups:"
)


def test_the_starter_matrix_on_a_freshdesk_account_is_refused_by_every_command(
    freshdesk: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, tickets = freshdesk

    assert main(["validate", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: {NOTHING_ROUTED}\n"
    assert "ok" not in captured.out

    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"  problem: {NOTHING_ROUTED}\n" in out
    assert out.rstrip().endswith("NOT READY")

    assert main(["sync", "--config", str(config), "--dry-run", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False
    assert summary["scanned"] == summary["skipped"] == len(tickets)
    why = {"no group for freshdesk at any level": len(tickets)}
    assert summary["skipped_by_reason"] == why
    instance = summary["instances"]["support-fd"]
    assert instance["skipped_by_reason"] == why
    assert instance["routing"] == NOTHING_ROUTED
    assert summary["would_escalate"] == []


def test_a_group_for_freshdesk_at_one_level_is_a_warning_not_a_failure(
    freshdesk: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = freshdesk
    matrix = config.parent / "matrix.yaml"
    write(matrix, starter_matrix().replace("{zendesk: Team Leads}", "{freshdesk: Frontline}"))

    assert main(["validate", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "warning: support-fd (freshdesk): no group for freshdesk at level l3 and team billing "
        "— a ticket a rule sends there stays where it is\n"
    )
    assert captured.out.startswith(f"{config}: ok — 1 instance: support-fd (freshdesk); ")

    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "  warning: support-fd (freshdesk): no group for freshdesk at level l3" in out
    assert out.rstrip().endswith("READY")


# --- validate knows the config ---------------------------------------------------------------


def test_validate_tells_a_config_from_a_matrix_by_what_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "matrix.yaml", LADDER + "rules:\n" + rule_yaml("{tags: [vip]}"))
    named_like_a_matrix = write(
        tmp_path / "settings.yaml", config_text({"support": ZENDESK}, "sqlite:///e.db")
    )
    assert main(["validate", str(named_like_a_matrix)]) == 0
    assert capsys.readouterr().out == (
        f"{named_like_a_matrix}: ok — 1 instance: support (zendesk); matrix "
        f"{tmp_path.resolve() / 'matrix.yaml'}: 3 levels, 2 teams, 1 rule\n"
    )
    assert main(["validate", str(tmp_path / "matrix.yaml")]) == 0
    assert "levels: is required" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "line"),
    [
        (
            {"processing": {"poll_second": 1}},
            "escbridge.yaml:10 processing.poll_second: is not a known key here — "
            "did you mean poll_seconds?",
        ),
        (
            {"instance": {}},
            "escbridge.yaml:9 instance: is not a known key here — did you mean instances?",
        ),
    ],
    ids=["processing", "top-level"],
)
def test_a_config_typo_fails_the_same_way_in_every_command(
    section: dict[str, Any],
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "matrix.yaml", starter_matrix())
    write(
        tmp_path / "escbridge.yaml", config_text({"support": ZENDESK}, "sqlite:///e.db", **section)
    )
    commands: Sequence[list[str]] = (
        ["validate", "escbridge.yaml"],
        ["check"],
        ["sync", "--dry-run", "--json"],
        ["worker", "--drain"],
        ["serve", "--port", "0"],
    )
    for command in commands:
        assert main(command) == 2, command
        captured = capsys.readouterr()
        assert line in captured.out + captured.err, command
        assert "Traceback" not in captured.out + captured.err


def test_a_typo_in_an_instance_setting_is_refused_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "matrix.yaml", starter_matrix())
    settings = {**ZENDESK, "subdomian": "acme"}
    del settings["subdomain"]
    config = write(
        tmp_path / "escbridge.yaml", config_text({"support": settings}, "sqlite:///e.db")
    )
    assert main(["validate", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: {config}:8 instances.support.subdomian: is not a known key here — "
        "did you mean subdomain?\n"
    )


# --- unknown helpdesk types, wherever one can be named -------------------------------------------


def test_an_unknown_instance_type_is_refused_by_validate_check_and_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "matrix.yaml", starter_matrix())
    write(
        tmp_path / "escbridge.yaml",
        config_text({"support": {**ZENDESK, "type": "zendsk"}}, "sqlite:///e.db"),
    )
    line = (
        "escbridge.yaml:5 instances.support.type: unknown helpdesk 'zendsk' — "
        f"installed: {INSTALLED}"
    )
    for command in (["validate", "escbridge.yaml"], ["check"], ["sync", "--dry-run", "--json"]):
        assert main(command) == 2, command
        captured = capsys.readouterr()
        assert line in captured.out + captured.err, command


def test_explain_refuses_an_unknown_helpdesk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = write(tmp_path / "matrix.yaml", starter_matrix())
    ticket = write(
        tmp_path / "t.json",
        json.dumps(
            {
                "id": "7",
                "instance": "support-eu",
                "subject": "I want a manager",
                "created_at": "2026-03-11T09:00:00Z",
                "updated_at": "2026-03-11T09:00:00Z",
            }
        ),
    )
    for value in ("zendsk", "support-eu=zendsk"):
        args = ["explain", str(ticket), "--matrix", str(matrix), "--helpdesk", value]
        assert main(args) == 2
        assert capsys.readouterr().err == (
            f"error: --helpdesk: unknown helpdesk 'zendsk' — installed: {INSTALLED}\n"
        )


def test_a_misspelt_helpdesk_in_the_matrix_groups_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = write(
        tmp_path / "matrix.yaml",
        starter_matrix().replace("{zendesk: Managers}", "{zendsk: Managers}"),
    )
    assert main(["validate", str(matrix)]) == 2
    line = next(n for n, text in enumerate(matrix.read_text().splitlines(), 1) if "zendsk" in text)
    assert capsys.readouterr().err == (
        f"error: {matrix}:{line} levels[2].groups.zendsk: unknown helpdesk 'zendsk' — "
        f"installed: {INSTALLED} (an instance's name? validate escbridge.yaml, which knows them)\n"
    )
    # an instance's name is no misspelling, and in a config it is known
    write(matrix, starter_matrix().replace("{zendesk: Managers}", "{zendesk-eu: Managers}"))
    assert main(["validate", str(matrix)]) == 0
    capsys.readouterr()
    config = write(tmp_path / "escbridge.yaml", config_text({"support": ZENDESK}, "sqlite:///e.db"))
    assert main(["validate", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"error: {matrix}:{line} levels[2].groups.zendesk-eu: unknown helpdesk 'zendesk-eu' — "
        f"installed: {INSTALLED}; instances configured: support\n"
    )


def test_unknown_helpdesk_is_one_wording() -> None:
    assert unknown_helpdesk("zendsk", ["zohodesk", "zendesk", "freshdesk"]) == (
        "unknown helpdesk 'zendsk' — installed: freshdesk, zendesk, zohodesk"
    )


# --- sync counts what it skipped, by reason ------------------------------------------------------


def ladder(rules: str) -> Matrix:
    return parse_matrix(LADDER + "rules:\n" + rules)


def ticket(ticket_id: str, **fields: Any) -> Ticket:
    return Ticket(
        id=ticket_id,
        instance="fd",
        subject=fields.pop("subject", "Order is late"),
        created_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(hours=1),
        group="Frontline",
        **fields,
    )


@dataclass
class Desk:
    """A helpdesk of one page of tickets; a dry run only lists them."""

    tickets: list[Ticket]
    info: ClassVar[ConnectorInfo] = ConnectorInfo(name="desk", version="1", display_name="Desk")

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        yield TicketPage(self.tickets, "1", True)


def dry_run(matrix: Matrix, tickets: list[Ticket], url: str, helpdesk: str = "freshdesk") -> Any:
    engine = Engine(matrix, {"fd": helpdesk})
    processor = Processor(Store(url), engine, {"fd": Desk(tickets)}, clock=FakeClock(NOW))  # type: ignore[dict-item]
    try:
        return Syncer(processor, SyncOptions(dry_run=True)).run()
    finally:
        processor.store.close()


def test_a_dry_run_counts_skips_by_reason_and_says_why_each_would_escalate(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    shutil.copyfile(_sqlite_template, tmp_path / "s.db")
    url = f"sqlite:///{tmp_path / 's.db'}"
    matrix = ladder(
        rule_yaml("{keywords: [manager]}", rule_id="ask-manager")
        + rule_yaml("{tags: [vip]}", rule_id="vip", to="next")
        + rule_yaml("{tags: [invoice]}", rule_id="invoice", kind="functional", to="billing")
    )
    tickets = [
        ticket("1", subject="Get me a manager"),  # escalates to l2
        ticket("2"),  # no rule matched
        ticket("3"),  # no rule matched
        ticket("4", tags=["vip"], level="l3"),  # already at the top level
        ticket("5", tags=["invoice"]),  # billing has no group on freshdesk
        ticket("6", status=Status.PENDING),
    ]
    report = dry_run(matrix, tickets, url)

    result = report.instances["fd"]
    assert result.skipped_by == {
        "no rule matched": 3,
        "already at the top level": 1,
        "no group for freshdesk at team billing": 1,
    }
    assert report.ok, "some destinations have a group: a partial matrix is not a failure"
    data = report.as_json()
    assert data["skipped_by_reason"] == {
        "no rule matched": 3,
        "already at the top level": 1,
        "no group for freshdesk at team billing": 1,
    }
    [would] = data["would_escalate"]
    assert would["rule"] == "ask-manager"
    assert would["reasons"] == ['"manager" appears in the subject']
    text = format_report(report)
    assert (
        "  skipped 5: 3 no rule matched, 1 already at the top level, "
        "1 no group for freshdesk at team billing\n"
    ) in text
    assert '      why: "manager" appears in the subject\n' in text


def test_a_run_on_a_helpdesk_the_matrix_never_routes_to_is_not_ok(
    tmp_path: Path, _sqlite_template: Path
) -> None:
    shutil.copyfile(_sqlite_template, tmp_path / "s.db")
    url = f"sqlite:///{tmp_path / 's.db'}"
    report = dry_run(
        ladder(rule_yaml("{keywords: [manager]}")),
        [ticket("1", subject="Get me a manager"), ticket("2")],
        url,
        helpdesk="zohodesk",
    )
    result = report.instances["fd"]
    assert result.skipped_by == {"no group for zohodesk at any level": 2}
    assert not report.ok
    text = format_report(report)
    assert (
        "  NOTHING CAN ESCALATE: fd (zohodesk): the matrix routes nothing here — no group for "
        "zohodesk at levels l2, l3 and teams billing, security;"
    ) in text
    assert "  skipped 2: 2 no group for zohodesk at any level\n" in text


def test_skip_reasons_name_what_the_engine_said() -> None:
    matrix = ladder(
        rule_yaml("{keywords: [manager]}", rule_id="ask-manager")
        + rule_yaml("{keywords: [vip]}", rule_id="to-l1", to="l1")
    )
    engine = Engine(matrix, {"fd": "freshdesk"})

    def reason(t: Ticket, history: Sequence[EscalationRecord] = ()) -> str:
        decision = engine.decide(t, list(history), NOW)
        assert not decision.escalate
        return skip_reason(Outcome("unchanged", "fd", t.id, decision, t), "freshdesk")

    assert reason(ticket("1")) == "no rule matched"
    assert reason(ticket("2", status=Status.SOLVED)) == "ticket is solved (not open)"
    just_now = EscalationRecord(at=NOW - timedelta(minutes=5), to="team", rule_id="other")
    assert reason(ticket("3", subject="manager please"), [just_now]) == "cooldown"
    assert reason(ticket("4", subject="vip")) == "already where the matching rule goes"
    assert reason(ticket("5", subject="manager", level="l3")) == (
        "already above where the matching rule goes"
    )
    assert skip_reason(Outcome("busy", "fd", "6")) == "being processed by a worker"


def test_routing_is_read_as_the_engine_reads_groups() -> None:
    matrix = ladder(rule_yaml("{tags: [x]}"))
    eu = routing(matrix, "support-eu", "zendesk")
    assert (eu.routed, eu.unrouted) == (
        ("level l2", "level l3", "team billing", "team security"),
        (),
    )
    assert eu.problem() is None and eu.warning() is None
    fd = routing(matrix, "fd", "freshdesk")
    assert fd.routed == ("level l2", "level l3")
    assert fd.problem() is None
    assert fd.warning() == (
        "fd (freshdesk): no group for freshdesk at teams billing, security — a ticket a rule "
        "sends there stays where it is"
    )
    assert routing(matrix, "zo", "zohodesk").routes_nothing
