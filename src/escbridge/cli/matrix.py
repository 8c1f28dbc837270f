"""`escbridge init`, `validate`, `explain` and `matrix`: the commands that need only the core.

They read files and print; a core-only install (no Flask, matplotlib or psycopg) runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TextIO

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, invalid, parse_time
from escbridge.errors import InvalidInputError, Problem, TicketError
from escbridge.matrix import Matrix, load_matrix
from escbridge.model import Decision, Ticket
from escbridge.policy import Engine
from escbridge.views import (
    matrix_html,
    matrix_json,
    matrix_markdown,
    matrix_mermaid,
    matrix_table,
)
from escbridge.yamlfile import parse_yaml, problems_from_validation

__all__ = [
    "MATRIX_FORMATS",
    "configure_explain_parser",
    "configure_init_parser",
    "configure_matrix_parser",
    "configure_validate_parser",
    "lint_matrix",
    "load_tickets",
    "run_explain",
    "run_init",
    "run_matrix",
    "run_validate",
]


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
        return invalid(exc)
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
        return invalid(exc)
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
        return invalid(exc)
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


# --- arguments ---------------------------------------------------------------------------------


def configure_init_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", default=".", help="where to write (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def configure_validate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="matrix file (default: --matrix or matrix.yaml)")
    p.add_argument("--matrix", help="matrix file (same as PATH)")


def configure_explain_parser(p: argparse.ArgumentParser) -> None:
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


def configure_matrix_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="matrix file (default: --matrix or matrix.yaml)")
    p.add_argument("--matrix", help="matrix file (same as PATH)")
    p.add_argument("--format", choices=list(MATRIX_FORMATS), default="table")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
