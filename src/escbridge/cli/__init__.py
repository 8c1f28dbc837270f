"""The `escbridge` command: argument parsing and printing only; the work happens elsewhere.

Exit codes: 0 ok, 1 a rule or ticket problem (the command ran and found one), 2 invalid input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TextIO

from escbridge import __version__
from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, Runner, parse_time
from escbridge.errors import InvalidInputError, Problem, TicketError
from escbridge.matrix import Matrix, load_matrix
from escbridge.model import Decision, Ticket
from escbridge.policy import Engine
from escbridge.render import (
    matrix_html,
    matrix_json,
    matrix_markdown,
    matrix_mermaid,
    matrix_table,
)
from escbridge.yamlfile import parse_yaml, problems_from_validation


def _out() -> TextIO:
    return sys.stdout


# --- helpers shared by commands --------------------------------------------------------


def load_tickets(path: Path) -> list[Ticket]:
    """Tickets from a JSON file (one object or a list) or every *.json in a folder.

    Keys starting with ``_`` are comments and ignored. Errors name the file, line and field.
    """
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise TicketError([Problem(str(path), None, "", "folder has no *.json ticket files")])
    tickets: list[Ticket] = []
    problems: list[Problem] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(Problem(str(file), None, "", f"cannot read: {exc.strerror}"))
            continue
        try:
            doc = parse_yaml(text, str(file))
        except InvalidInputError as exc:
            problems.extend(exc.problems)
            continue
        items = doc.data if isinstance(doc.data, list) else [doc.data]
        for i, item in enumerate(items):
            prefix: tuple[int, ...] = (i,) if isinstance(doc.data, list) else ()
            if not isinstance(item, dict):
                problems.append(doc.problem(prefix, "a ticket is a JSON object"))
                continue
            clean = {k: v for k, v in item.items() if not str(k).startswith("_")}
            try:
                tickets.append(Ticket.model_validate(clean))
            except ValueError as exc:
                from pydantic import ValidationError

                if not isinstance(exc, ValidationError):
                    raise
                problems.extend(problems_from_validation(doc, exc, prefix))
    if problems:
        raise TicketError(problems)
    return tickets


def _matrix_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "matrix", None) or "matrix.yaml")


def _fail(exc: InvalidInputError) -> int:
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_INVALID


# --- commands ----------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    """Write a commented starter escbridge.yaml and matrix.yaml."""
    target = Path(args.directory)
    target.mkdir(parents=True, exist_ok=True)
    files = {"escbridge.yaml": "escbridge.yaml", "matrix.yaml": "matrix.yaml"}
    existing = [name for name in files if (target / name).exists()]
    if existing and not args.force:
        print(
            f"error: {', '.join(str(target / n) for n in existing)} already exist(s); "
            "use --force to overwrite",
            file=sys.stderr,
        )
        return EXIT_INVALID
    package = resources.files("escbridge") / "templates"
    for name, template in files.items():
        (target / name).write_text((package / template).read_text(encoding="utf-8"))
        print(f"wrote {target / name}", file=_out())
    print("next: edit them, then run `escbridge validate`", file=_out())
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    """Check a matrix; print every problem with file:line, or a one-line summary."""
    path = Path(args.path) if args.path else _matrix_path(args)
    try:
        matrix = load_matrix(path)
    except InvalidInputError as exc:
        return _fail(exc)
    warnings = lint_matrix(matrix)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{path}: ok — {len(matrix.levels)} levels, {len(matrix.teams)} teams, "
        f"{len(matrix.rules)} rules",
        file=_out(),
    )
    return EXIT_PROBLEM if warnings else EXIT_OK


def lint_matrix(matrix: Matrix) -> list[str]:
    """Valid but suspicious: rules that can never lead anywhere."""
    warnings = []
    first = matrix.levels[0]
    for rule in matrix.rules:
        target = rule.target.rung
        if target is not None and target.kind == "level" and target.rank == first.rank:
            where = f"{matrix.source}:{rule.line}" if rule.line else matrix.source
            warnings.append(
                f"{where} rule {rule.id} routes to the first level {first.id}, "
                "where every ticket starts: it can never escalate anything"
            )
    return warnings


def run_explain(args: argparse.Namespace) -> int:
    """Run tickets through the engine and show, for every rule, why it fired or not."""
    try:
        matrix = load_matrix(_matrix_path(args))
        tickets = load_tickets(Path(args.ticket))
    except InvalidInputError as exc:
        return _fail(exc)
    now = args.at or datetime.now(UTC)
    helpdesks = _helpdesk_map(args.helpdesk or [], tickets)
    if isinstance(helpdesks, str):
        print(f"error: --helpdesk: {helpdesks}", file=sys.stderr)
        return EXIT_INVALID
    engine = Engine(matrix, helpdesks)
    decisions = [engine.decide(t, [], now, explain=True) for t in tickets]
    out = _out()
    if args.json:
        payload = [d.model_dump(mode="json") for d in decisions]
        json.dump(payload if len(payload) > 1 else payload[0], out, indent=2, ensure_ascii=False)
        out.write("\n")
        return EXIT_OK
    for ticket, decision in zip(tickets, decisions, strict=True):
        _print_decision(ticket, decision, matrix, out, verbose=not args.brief)
    if len(decisions) > 1:
        escalated = sum(d.escalate for d in decisions)
        print(f"{len(decisions)} tickets, {escalated} would escalate", file=out)
    return EXIT_OK


def _helpdesk_map(values: Sequence[str], tickets: Sequence[Ticket]) -> dict[str, str] | str:
    """``--helpdesk zendesk`` (every ticket) or ``--helpdesk support-eu=zendesk`` (one instance)."""
    mapping: dict[str, str] = {}
    for value in values:
        instance, sep, helpdesk = value.partition("=")
        if not sep:
            mapping.update({t.instance: instance for t in tickets})
        elif instance and helpdesk:
            mapping[instance] = helpdesk
        else:
            return f'"{value}" is not TYPE or INSTANCE=TYPE'
    return mapping


def _print_decision(
    ticket: Ticket, decision: Decision, matrix: Matrix, out: TextIO, *, verbose: bool
) -> None:
    at = decision.at.strftime("%Y-%m-%d %H:%M %Z")
    current = matrix.rung(decision.from_level)
    where = f"{current.id} ({current.name})" if current else "?"
    print(f"#{ticket.id} {ticket.subject!r} [{ticket.instance}] at {at} — now at {where}", file=out)
    if decision.escalate and decision.actions and decision.destination:
        a = decision.actions
        print(f"  ESCALATE {decision.summary.removeprefix('escalate ')}", file=out)
        changes = [f"group → {a.group}"]
        if a.priority is not None:
            changes.append(f"priority {ticket.priority.label} → {a.priority.label}")
        changes.append(
            "tags " + " ".join([*(f"+{t}" for t in a.tags_add), *(f"-{t}" for t in a.tags_remove)])
        )
        if a.unassign:
            changes.append("unassign")
        if a.customer_update:
            changes.append("customer update")
        print("    " + "; ".join(changes), file=out)
    else:
        print(f"  no escalation — {decision.summary.removeprefix('no escalation: ')}", file=out)
    if not verbose:
        return
    for outcome in decision.outcomes:
        mark = "✓" if outcome.matched else "✗"
        fired = outcome.matched and outcome.rule_id == decision.rule_id
        tail = (
            " ← fired" if fired else (f" (not used: {outcome.blocked})" if outcome.blocked else "")
        )
        print(f"    {mark} {outcome.rule_id}{tail}", file=out)
        for line in outcome.details:
            print(f"        {line}", file=out)
    print(file=out)


def run_matrix(args: argparse.Namespace) -> int:
    """Print the matrix as a table, Markdown or JSON."""
    try:
        matrix = load_matrix(Path(args.path) if args.path else _matrix_path(args))
    except InvalidInputError as exc:
        return _fail(exc)
    render = MATRIX_FORMATS[args.format]
    text = render(matrix)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=_out())
    else:
        _out().write(text)
    return EXIT_OK


MATRIX_FORMATS: dict[str, Callable[[Matrix], str]] = {
    "table": matrix_table,
    "markdown": matrix_markdown,
    "json": matrix_json,
    "html": matrix_html,
    "mermaid": matrix_mermaid,
}


# --- parser ------------------------------------------------------------------------------


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``selected``, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="escbridge",
        description="Enforce one escalation matrix on Zendesk, Freshdesk and Zoho Desk.",
    )
    parser.add_argument("--version", action="version", version=f"escbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="write a commented starter escbridge.yaml and matrix.yaml")
    p.add_argument("directory", nargs="?", default=".", help="where to write (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(run=run_init)

    p = sub.add_parser("validate", help="check a matrix; errors point at file:line")
    p.add_argument("path", nargs="?", help="matrix file (default: --matrix or matrix.yaml)")
    p.add_argument("--matrix", help="matrix file (same as PATH)")
    p.set_defaults(run=run_validate)

    p = sub.add_parser(
        "explain", help="run tickets through the engine and show why each rule fired or not"
    )
    p.add_argument("ticket", help="a normalised ticket JSON file, or a folder of them")
    p.add_argument("--matrix", help="matrix file (default: matrix.yaml)")
    p.add_argument(
        "--at", type=parse_time, help="evaluate at this time (ISO 8601; default: now, UTC)"
    )
    p.add_argument(
        "--helpdesk",
        action="append",
        metavar="[INSTANCE=]TYPE",
        help="which helpdesk type (zendesk, freshdesk, zohodesk) the tickets' instance is, "
        "for the matrix's per-helpdesk groups; repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    p.add_argument("--brief", action="store_true", help="only the decision, not every rule")
    p.set_defaults(run=run_explain)

    p = sub.add_parser("matrix", help="show the matrix as a table, Markdown or JSON")
    p.add_argument("path", nargs="?", help="matrix file (default: --matrix or matrix.yaml)")
    p.add_argument("--matrix", help="matrix file (same as PATH)")
    p.add_argument("--format", choices=list(MATRIX_FORMATS), default="table")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(run=run_matrix)

    for name, help_text, module, configure, run_name in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if selected is not None and selected != name:
            continue  # import the modules behind a command only when it runs
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            if not module.startswith("escbridge_webhooks"):
                raise
            p.set_defaults(run=_missing_distribution(name, exc))
            continue
        getattr(loaded, configure)(p)
        p.set_defaults(run=getattr(loaded, run_name))
    return parser


# Commands whose work lives in other modules (and, for `serve`, another distribution).
COMMANDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("connectors", "list the installed connector plugins and their capabilities",
     "escbridge.commands_connectors", "configure_connectors_parser", "run_connectors"),
    ("check", "prove credentials and reachability, resolve groups, per instance",
     "escbridge.commands_connectors", "configure_check_parser", "run_check"),
    ("serve", "webhook receiver with an embedded worker pool",
     "escbridge_webhooks.serve", "configure_serve_parser", "run_serve"),
    ("worker", "process the inbox (claim, fetch, decide, apply, record)",
     "escbridge.processing", "configure_worker_parser", "run_worker"),
    ("jobs", "list dead letters and retries; replay them",
     "escbridge.store.commands", "configure_jobs_parser", "run_jobs"),
    ("db", "manage the store's schema (db upgrade)",
     "escbridge.store.commands", "configure_db_parser", "run_db"),
    ("report", "escalation trends by level, rule, group, helpdesk, channel",
     "escbridge.report", "configure_report_parser", "run_report"),
    ("sync", "scan helpdesks for time-based escalations (--dry-run, --loop)",
     "escbridge.sync", "configure_sync_parser", "run_sync"),
    ("sandbox", "run the built-in helpdesk emulators, seeded with tickets",
     "escbridge.sandbox_cli", "configure_sandbox_parser", "run_sandbox"),
    ("demo", "everything end to end against the sandbox helpdesks, no credentials",
     "escbridge.demo", "configure_demo_parser", "run_demo"),
)  # fmt: skip


def _missing_distribution(command: str, error: ImportError) -> Runner:
    def run(_args: argparse.Namespace) -> int:
        print(
            f"escbridge {command} needs the escbridge-webhooks distribution ({error}).\n"
            "Install it with: pip install escbridge-webhooks",
            file=sys.stderr,
        )
        return EXIT_INVALID

    return run


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    selected = next((w for w in words if not w.startswith("-")), None)
    args = build_parser(selected).parse_args(words)
    run: Runner = args.run
    try:
        return run(args)
    except BrokenPipeError:  # `escbridge explain … | head`
        return EXIT_OK
