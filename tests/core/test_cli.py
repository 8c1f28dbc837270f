"""The `escbridge` command for a matrix admin: init, validate, explain, matrix.

Exit codes: 0 ok, 1 a rule or ticket problem, 2 invalid input. Commands are run in-process
through ``main`` (one subprocess proves the installed entry point).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from matrix_helpers import LADDER, rule_yaml

from escbridge.cli import build_parser, main
from escbridge.config import load_config
from escbridge.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MATRIX = ROOT / "examples" / "matrix.yaml"
AT = "2026-03-11T15:00:00Z"

TICKET = {
    "id": 7,
    "instance": "support-eu",
    "subject": "I want a manager",
    "group": "Support",
    "created_at": "2026-03-11T14:00:00Z",
    "updated_at": "2026-03-11T14:30:00Z",
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def small_matrix(tmp_path: Path) -> Path:
    return write(
        tmp_path / "matrix.yaml",
        LADDER + "rules:\n" + rule_yaml("{keywords: [manager]}", rule_id="ask-manager"),
    )


def ticket_file(tmp_path: Path, **fields: object) -> Path:
    return write(tmp_path / "ticket.json", json.dumps({**TICKET, **fields}))


# --- help -------------------------------------------------------------------------------------


def subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_the_installed_command_prints_help() -> None:
    exe = Path(sys.executable).parent / "escbridge"
    result = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: escbridge")
    for command in ("init", "validate", "explain", "matrix"):
        assert command in result.stdout


def test_the_issue_commands_exist() -> None:
    assert {"init", "validate", "explain", "matrix"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: escbridge {command}")


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "usage: escbridge" in capsys.readouterr().err


# --- a core-only install ------------------------------------------------------------------------

# What `pip install escbridge` (no extras, no connector, no receiver) lacks.
OPTIONAL = ("flask", "werkzeug", "matplotlib", "psycopg", "escbridge_webhooks", "escbridge_zendesk")
CORE_ONLY = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from escbridge.cli import main
code = main(sys.argv[1:])
loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set({OPTIONAL!r}))
print("optional modules loaded:", loaded)
sys.exit(code)
"""


def core_only(*args: str) -> subprocess.CompletedProcess[str]:
    """``escbridge ARGS`` in a fresh interpreter where no optional distribution can be imported."""
    return subprocess.run(
        [sys.executable, "-c", CORE_ONLY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_core_only_install_validates_and_explains(tmp_path: Path) -> None:
    matrix = str(small_matrix(tmp_path))
    validated = core_only("validate", matrix)
    assert validated.returncode == 0, validated.stderr
    assert "ok — 3 levels" in validated.stdout
    assert "optional modules loaded: []" in validated.stdout

    ticket = str(ticket_file(tmp_path))
    explained = core_only(
        "explain", ticket, "--matrix", matrix, "--at", AT, "--helpdesk", "zendesk", "--brief"
    )
    assert explained.returncode == 0, explained.stderr
    assert "ESCALATE l1 → l2" in explained.stdout
    assert "optional modules loaded: []" in explained.stdout

    helped = core_only("--help")
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr


def test_serve_without_the_receiver_says_how_to_install_it(tmp_path: Path) -> None:
    served = core_only("serve", "--config", str(tmp_path / "escbridge.yaml"))
    assert served.returncode == 2
    # Said as for a package index, where a user's escbridge came from, and as for a checkout.
    assert "Install it: pip install escbridge-webhooks (from a checkout: make dist, then " in (
        served.stderr
    )
    assert "pip install --find-links dist/ escbridge-webhooks)" in served.stderr


# --- init -------------------------------------------------------------------------------------


class TestInit:
    def test_init_writes_both_files_and_the_matrix_validates(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["init", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert f"wrote {tmp_path / 'escbridge.yaml'}" in out
        assert f"wrote {tmp_path / 'matrix.yaml'}" in out
        assert "escbridge validate" in out
        assert main(["validate", str(tmp_path / "matrix.yaml")]) == 0
        assert len(load_matrix(tmp_path / "matrix.yaml").rules) >= 1
        env = {"ZENDESK_API_TOKEN": "token", "ZENDESK_WEBHOOK_SECRET": "secret"}
        load_config(tmp_path / "escbridge.yaml", env=env)

    def test_init_then_validate_in_the_current_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Right after `init` (no tokens in the environment yet) `validate` checks the config,
        its matrix and the routing; the unset secrets are named, not fatal: nothing is
        contacted, and the commands that do contact a helpdesk refuse them."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("ZENDESK_API_TOKEN", raising=False)
        monkeypatch.delenv("ZENDESK_WEBHOOK_SECRET", raising=False)
        assert main(["init"]) == 0
        assert main(["validate"]) == 1  # the starter's placeholders are still there
        err = capsys.readouterr().err
        assert "${ZENDESK_API_TOKEN} is not set here" in err
        assert "instances.support.subdomain: 'your-subdomain' is the starter's placeholder" in err
        config = tmp_path / "escbridge.yaml"
        text = config.read_text(encoding="utf-8")
        text = text.replace("your-subdomain", "acme").replace("your-company", "acme")
        config.write_text(text, encoding="utf-8")
        assert main(["validate"]) == 0
        out = capsys.readouterr().out
        assert "escbridge.yaml: ok — 1 instance: support (zendesk)" in out
        assert "3 levels, 1 team, 3 rules" in out
        assert main(["check"]) == 2  # check talks to the helpdesk: the token must be there
        assert "ZENDESK_API_TOKEN" in capsys.readouterr().out

    def test_init_refuses_to_overwrite(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        mine = write(tmp_path / "matrix.yaml", "# my matrix\n")
        assert main(["init", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{mine} already exists; use --force to overwrite" in err
        assert mine.read_text() == "# my matrix\n"
        assert not (tmp_path / "escbridge.yaml").exists()

    def test_init_force_overwrites(self, tmp_path: Path) -> None:
        mine = write(tmp_path / "matrix.yaml", "# my matrix\n")
        assert main(["init", str(tmp_path), "--force"]) == 0
        assert mine.read_text() != "# my matrix\n"
        assert (tmp_path / "escbridge.yaml").exists()


# --- validate ---------------------------------------------------------------------------------


class TestValidate:
    def test_a_valid_matrix(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = small_matrix(tmp_path)
        assert main(["validate", str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"{path}: ok — 3 levels, 2 teams, 1 rule\n"
        assert captured.err == ""

    def test_the_example_matrix_is_clean(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["validate", str(EXAMPLE_MATRIX)]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert "ok — 3 levels, 2 teams, 13 rules" in captured.out

    def test_an_invalid_matrix_exits_2_with_every_problem_on_stderr(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(
            tmp_path / "matrix.yaml",
            LADDER
            + "rules:\n"
            + rule_yaml("{idle: {over: 2 hourss}}", rule_id="a")
            + rule_yaml("{tags: [x]}", rule_id="b", to="l9"),
        )
        assert main(["validate", "--matrix", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == [
            f'error: {path}:42 rules[0].when.idle.over: "2 hourss" is not a duration '
            "(e.g. 90m, 2h, 1d 4h)",
            f'error: {path}:45 rules[1].to: "l9" is not a destination '
            "(one of next, l1, l2, l3, team billing, team security)",
        ]

    def test_a_missing_file_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
        assert "nope.yaml: cannot read" in capsys.readouterr().err

    def test_a_rule_that_can_never_fire_exits_1_with_a_warning(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(
            tmp_path / "matrix.yaml",
            LADDER + "rules:\n" + rule_yaml("{tags: [x]}", rule_id="pointless", to="l1"),
        )
        assert main(["validate", str(path)]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"warning: {path}:39 rule pointless routes to the first level l1, "
            "where every ticket starts: it can never escalate anything\n"
        )


# --- explain ----------------------------------------------------------------------------------


class TestExplain:
    def test_explain_one_ticket(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(small_matrix(tmp_path))]
        assert main([*args, "--at", AT, "--helpdesk", "zendesk"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "#7 'I want a manager' [support-eu] at 2026-03-11 15:00 UTC — now at l1 (Frontline)",
            "  ESCALATE l1 → l2 (Senior support, group Senior Support) by rule ask-manager",
            "    group → Senior Support; priority normal → high; tags +escbridge_l2",
            "    ✓ ask-manager ← fired",
            '        ✓ "manager" appears in the subject',
            "",
        ]

    def test_brief_shows_only_the_decision(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        args = ["explain", str(ticket_file(tmp_path, subject="Hello"))]
        args += ["--matrix", str(small_matrix(tmp_path)), "--at", AT, "--brief"]
        assert main([*args, "--helpdesk", "zendesk"]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "#7 'Hello' [support-eu] at 2026-03-11 15:00 UTC — now at l1 (Frontline)",
            "  no escalation — no rule matched",
        ]

    def test_helpdesk_per_instance(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        args = ["explain", str(ticket_file(tmp_path, group="Frontline"))]
        args += ["--matrix", str(small_matrix(tmp_path)), "--at", AT]
        assert main([*args, "--helpdesk", "support-eu=freshdesk", "--brief"]) == 0
        assert "group Team Leads" in capsys.readouterr().out

    def test_a_ticket_of_an_instance_nothing_names_is_refused_with_the_fix(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Explained as "no group at any level" it would be a silent no-op (issue 17)."""
        monkeypatch.chdir(tmp_path)
        args = ["explain", str(ticket_file(tmp_path))]
        args += ["--matrix", str(small_matrix(tmp_path)), "--at", AT, "--brief"]
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert (
            "instance 'support-eu' is neither a helpdesk nor an instance of escbridge.yaml" in err
        )
        assert "--helpdesk support-eu=TYPE" in err

    def test_the_config_says_which_helpdesk_an_instance_is(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        matrix = small_matrix(tmp_path)
        write(
            tmp_path / "escbridge.yaml",
            f"matrix: {matrix}\ninstances:\n  support-eu:\n    type: zendesk\n"
            "    subdomain: acme\n    email: a@b.c\n    api_token: ${UNSET_TOKEN_FOR_TEST}\n",
        )
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(matrix), "--at", AT]
        assert main([*args, "--brief"]) == 0
        assert "ESCALATE l1 → l2" in capsys.readouterr().out

    def test_json_output_parses(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(small_matrix(tmp_path))]
        assert main([*args, "--at", AT, "--helpdesk", "zendesk", "--json"]) == 0
        decision = json.loads(capsys.readouterr().out)
        assert decision["ticket_id"] == "7"
        assert decision["escalate"] is True
        assert decision["rule_id"] == "ask-manager"
        assert decision["destination"]["group"] == "Senior Support"
        assert decision["actions"]["priority"] == "high"
        assert decision["at"] == "2026-03-11T15:00:00Z"
        assert decision["outcomes"][0]["details"] == ['✓ "manager" appears in the subject']

    def test_at_without_a_zone_is_utc(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(small_matrix(tmp_path))]
        assert main([*args, "--at", "2026-03-11T15:00", "--helpdesk", "zendesk", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["at"] == "2026-03-11T15:00:00Z"

    def test_a_bad_time_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["explain", str(ticket_file(tmp_path)), "--at", "yesterday"])
        assert exited.value.code == 2
        assert '"yesterday" is not a time (e.g. 2026-03-11T15:00:00Z)' in capsys.readouterr().err

    def test_an_invalid_ticket_exits_2_with_file_line_and_field(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(
            tmp_path / "ticket.json",
            '{\n  "id": 7,\n  "priority": "hihg",\n  "created_at": "2026-03-11T14:00:00Z",\n'
            '  "updated_at": "2026-03-11T14:30:00"\n}\n',
        )
        assert main(["explain", str(path), "--matrix", str(small_matrix(tmp_path))]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {path}:3 priority: 'hihg' is not a priority "
            "(one of low, normal, high, urgent)",
            f"error: {path}:5 updated_at: needs a timezone (e.g. 2026-03-11T09:30:00Z)",
        ]

    def test_an_invalid_matrix_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        matrix_path = write(tmp_path / "matrix.yaml", "levels: []\n")
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(matrix_path)]
        assert main(args) == 2
        assert f"error: {matrix_path}:1 levels:" in capsys.readouterr().err

    def test_a_bad_helpdesk_value_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        args = ["explain", str(ticket_file(tmp_path)), "--matrix", str(small_matrix(tmp_path))]
        assert main([*args, "--helpdesk", "support-eu="]) == 2
        assert 'error: --helpdesk: "support-eu=" is not TYPE or INSTANCE=TYPE' in (
            capsys.readouterr().err
        )

    def test_an_empty_folder_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        folder = tmp_path / "tickets"
        folder.mkdir()
        assert main(["explain", str(folder), "--matrix", str(small_matrix(tmp_path))]) == 2
        assert "folder has no *.json ticket files" in capsys.readouterr().err


# --- matrix -----------------------------------------------------------------------------------


class TestMatrixCommand:
    def test_table(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["matrix", str(small_matrix(tmp_path))]) == 0
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[0] == "Test matrix"
        assert lines[2].split() == ["id", "level", "/", "team", "responsible", "group", "min",
                                    "priority", "expected"]  # fmt: skip
        l2 = next(line for line in lines if line.startswith("l2 "))
        assert "Senior support [L2]" in l2
        assert "zendesk: Senior Support, freshdesk: Team Leads" in l2
        assert "high" in l2
        assert "resolution 8h (business time)" in l2
        billing = next(line for line in lines if line.startswith("billing "))
        assert "Billing specialists [team (rank L2)]" in billing
        rule = next(line for line in lines if line.startswith("ask-manager "))
        assert "level l2" in rule
        assert lines[-1] == (
            "Limits: cooldown 30m per ticket, at most 3 escalations per ticket per 24h"
        )

    def test_markdown(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = small_matrix(tmp_path)
        assert main(["matrix", "--matrix", str(path), "--format", "markdown"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("# Test matrix\n\n## Levels and teams\n\n| id | level / team |")
        assert "## Rules" in out
        assert (
            "| ask-manager | ask-manager | level l2 "
            "| zendesk: Senior Support, freshdesk: Team Leads "
            "| resolution 8h (business time) |"
        ) in out
        assert "**Limits:** cooldown 30m per ticket" in out

    def test_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["matrix", str(small_matrix(tmp_path)), "--format", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["name"] == "Test matrix"
        assert [lv["id"] for lv in data["levels"]] == ["l1", "l2", "l3"]
        assert data["levels"][1]["min_priority"] == "high"
        assert data["levels"][1]["resolution_seconds"] == 8 * 3600
        assert [(t["id"], t["rank"]) for t in data["teams"]] == [("billing", 1), ("security", 2)]
        assert data["rules"] == [
            {
                "id": "ask-manager",
                "name": "ask-manager",
                "kind": "hierarchical",
                "to": "l2",
                "priority": None,
                "tags": [],
                "unassign": False,
                "customer_update": False,
                "line": 39,
            }
        ]
        assert data["limits"] == {"cooldown_seconds": 1800.0, "daily_cap": 3}

    def test_the_example_matrix_in_every_format(self, capsys: pytest.CaptureFixture[str]) -> None:
        for fmt in ("table", "markdown", "json"):
            assert main(["matrix", str(EXAMPLE_MATRIX), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert out.count("supervisor-requested") == 3

    def test_an_unknown_format_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["matrix", str(EXAMPLE_MATRIX), "--format", "pdf"])
        assert exited.value.code == 2
        assert "invalid choice: 'pdf'" in capsys.readouterr().err

    def test_an_invalid_matrix_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = write(tmp_path / "matrix.yaml", "levels: [}\n")
        assert main(["matrix", str(path)]) == 2
        assert f"error: {path}:1: not valid YAML" in capsys.readouterr().err
