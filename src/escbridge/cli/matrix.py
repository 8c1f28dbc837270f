"""`escbridge init`, `validate`, `explain` and `matrix`: the commands that need only the core.

They read files and print; a core-only install (no Flask, matplotlib or psycopg) runs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROBLEM,
    invalid,
    parse_time,
)
from escbridge.errors import (
    EscbridgeError,
    InvalidInputError,
    NotFound,
    Problem,
    StoreUnavailableError,
    TicketError,
)
from escbridge.matrix import Matrix, load_matrix
from escbridge.model import Decision, EscalationRecord, Ticket
from escbridge.policy import Engine
from escbridge.views import (
    matrix_html,
    matrix_json,
    matrix_markdown,
    matrix_mermaid,
    matrix_table,
)
from escbridge.wording import plural
from escbridge.yamlfile import parse_yaml, problems_from_validation

if TYPE_CHECKING:
    from escbridge.store import Store

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
            foreign = helpdesk_shape(clean)
            if foreign is not None:
                problems.append(doc.problem(prefix, foreign_ticket_message(foreign)))
                continue
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


#: Keys only a helpdesk's own ticket JSON has (escbridge's has none of them), by helpdesk.
_API_KEYS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Zendesk", frozenset({"requester_id", "submitter_id", "via", "satisfaction_rating"})),
    ("Freshdesk", frozenset({"responder_id", "fr_due_by", "source", "email_config_id"})),
    ("Zoho Desk", frozenset({"departmentId", "statusType", "ticketNumber", "webUrl"})),
)


def helpdesk_shape(item: dict[str, Any]) -> str | None:
    """Which helpdesk's API shape a ticket object has (None: not one we recognise), so that
    `explain FILE` says what it expects instead of listing twenty unknown keys."""
    if isinstance(item.get("ticket"), dict):
        return 'Zendesk ({"ticket": …} from Show Ticket)'
    keys = set(item)
    for name, marks in _API_KEYS:
        if keys & marks:
            return name
    return None


def foreign_ticket_message(helpdesk: str) -> str:
    return (
        f"this is a {helpdesk} ticket as its API returns it, not escbridge's ticket JSON "
        '(docs/matrix.md: "Ticket JSON for explain"); to explain it as it is, name the '
        "instance whose connector parses it: `escbridge explain FILE --instance NAME`, or "
        "fetch it live: `escbridge explain --instance NAME --ticket ID`"
    )


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
            f"error: {', '.join(str(target / n) for n in existing)} "
            f"{'already exists' if len(existing) == 1 else 'already exist'}; "
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
    """Check a matrix, or an escbridge.yaml with the matrix it names (told apart by what the
    file holds, not its name); print every problem with file:line, or a one-line summary."""
    from escbridge.config import DEFAULT_CONFIG_FILE, group_key_problems
    from escbridge.connector import default_registry

    path = Path(args.path) if args.path else _matrix_path(args)
    if not args.path and not args.matrix and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)  # after `init`: the config, its matrix and the routing
    if _holds_config(path):
        from escbridge.cli.connectors import validate_config

        return validate_config(path)
    try:
        matrix = load_matrix(path)
    except InvalidInputError as exc:
        return invalid(exc)
    misspelt = group_key_problems(matrix, default_registry().names())
    if misspelt:
        return invalid(InvalidInputError(misspelt))
    warnings = lint_matrix(matrix)
    for warning in [*warnings, *unset_secrets(matrix)]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{path}: ok — {plural(len(matrix.levels), 'level')}, "
        f"{plural(len(matrix.teams), 'team')}, {plural(len(matrix.rules), 'rule')}",
        file=_out(),
    )
    return EXIT_PROBLEM if warnings else EXIT_OK


def _holds_config(path: Path) -> bool:
    """Whether ``path`` is an escbridge.yaml (else it is read as a matrix, which reports any
    problem reading it)."""
    from escbridge.config import is_config

    try:
        return is_config(parse_yaml(path.read_text(encoding="utf-8"), str(path)).data)
    except (OSError, UnicodeDecodeError, InvalidInputError):
        return False


def unset_secrets(matrix: Matrix) -> list[str]:
    """The notification targets whose ``${VAR}`` is not set here: a warning for `validate`,
    which contacts nothing and may run where the secrets are not (CI); the worker refuses to
    start without them."""
    import os

    from escbridge.notify.model import environment_problems

    return environment_problems(matrix, os.environ)


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
    source = _explain_source(args)
    if source is not None:
        print(f"escbridge explain: {source}", file=sys.stderr)
        return EXIT_INVALID
    if args.instance is not None:
        return _explain_instance(args)
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
    unknown = _unrouted_instances(matrix, tickets, helpdesks, Path(args.config))
    if unknown:
        print(f"error: {unknown}", file=sys.stderr)
        return EXIT_INVALID
    engine = Engine(matrix, helpdesks)
    decisions = [engine.decide(t, [], now, explain=True) for t in tickets]
    return _print_decisions(args, tickets, decisions, matrix)


def _print_decisions(
    args: argparse.Namespace,
    tickets: Sequence[Ticket],
    decisions: Sequence[Decision],
    matrix: Matrix,
) -> int:
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
        print(f"{plural(len(decisions), 'ticket')}, {escalated} would escalate", file=out)
    return EXIT_OK


def _unrouted_instances(
    matrix: Matrix, tickets: Sequence[Ticket], helpdesks: dict[str, str], config_path: Path
) -> str | None:
    """Which helpdesk each ticket's instance is, when --helpdesk did not say: the instance's
    ``type:`` in escbridge.yaml (added to ``helpdesks``) or its own name when that is a
    helpdesk. A ticket of an instance nothing names would be explained as "no group" at every
    level — a silent no-op — so that is an error with the fix (None: all known)."""
    from escbridge.config import load_config, routing
    from escbridge.connector import default_registry
    from escbridge.errors import ConfigError

    installed = set(default_registry().names())
    types: dict[str, str] = {}
    if config_path.is_file():
        try:
            config = load_config(config_path, helpdesk_secrets=False)
        except ConfigError:
            pass  # explain FILE needs no config; `validate` says what is wrong with it
        else:
            types = {name: i.type for name, i in config.instances.items()}
    missing: list[str] = []
    for instance in dict.fromkeys(t.instance for t in tickets):
        if instance in helpdesks or instance in installed:
            continue
        if instance in types:
            helpdesks[instance] = types[instance]
        elif routing(matrix, instance, None).routes_nothing:
            missing.append(instance)
    if not missing:
        return None
    names = ", ".join(f"'{m}'" for m in missing)
    return (
        f"the tickets' instance {names} is neither a helpdesk nor an instance of {config_path} "
        f"— pass --helpdesk TYPE (or --helpdesk {missing[0]}=TYPE; installed: "
        f"{', '.join(sorted(installed))}), or --config naming it"
    )


def _helpdesk_map(values: Sequence[str], tickets: Sequence[Ticket]) -> dict[str, str] | str:
    """``--helpdesk zendesk`` (every ticket) or ``--helpdesk support-eu=zendesk`` (one instance)."""
    from escbridge.config import unknown_helpdesk
    from escbridge.connector import default_registry

    installed = default_registry().names()
    mapping: dict[str, str] = {}
    for value in values:
        instance, sep, helpdesk = value.partition("=")
        if not sep:
            helpdesk = instance
            mapping.update({t.instance: helpdesk for t in tickets})
        elif instance and helpdesk:
            mapping[instance] = helpdesk
        else:
            return f'"{value}" is not TYPE or INSTANCE=TYPE'
        if helpdesk not in installed:
            return unknown_helpdesk(helpdesk, installed)
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


# --- explain against a configured instance --------------------------------------------------


def _explain_source(args: argparse.Namespace) -> str | None:
    """What is wrong with how the ticket was named (None: FILE, or --instance with --ticket
    or FILE)."""
    if args.ticket_id is not None and args.instance is None:
        return "--ticket needs --instance NAME (the instance of escbridge.yaml to ask)"
    if args.ticket_id is not None and args.ticket is not None:
        return f"name a ticket FILE or --ticket {args.ticket_id}, not both"
    if args.ticket_id is None and args.ticket is None:
        return "name a ticket FILE, or --instance NAME --ticket ID to fetch one live"
    return None


def _explain_instance(args: argparse.Namespace) -> int:
    """Explain a ticket of a configured instance: fetched live (``--ticket``) through the
    connector exactly as a worker fetches it, or read from FILE as the helpdesk's API returns
    it, through the connector's own parser. Its escalation history comes from the store when
    there is one, so cooldown and daily caps count. Nothing is written anywhere."""
    import dataclasses

    import requests

    from escbridge.config import load_config
    from escbridge.processing import build_processor
    from escbridge.processing.plan import as_instance
    from escbridge.secrets import redact

    name = args.instance
    try:
        config = load_config(args.config)
    except InvalidInputError as exc:
        # Another instance's unset ${VAR} need not stop a read of this one.
        def elsewhere(path: str) -> bool:
            ours = path == f"instances.{name}" or path.startswith(f"instances.{name}.")
            return path.startswith("instances.") and not ours

        if not all(elsewhere(p.path) for p in exc.problems):
            return invalid(exc)
        try:
            config = load_config(args.config, helpdesk_secrets=False)
        except InvalidInputError as again:
            return invalid(again)
    if name not in config.instances:
        known = ", ".join(sorted(config.instances)) or "none"
        print(
            f"escbridge explain: unknown instance {name} in {args.config} (configured: {known})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    config = dataclasses.replace(
        config,
        instances={name: config.instances[name]},
        matrix_path=Path(args.matrix) if args.matrix else config.matrix_path,
    )
    try:
        processor = build_processor(config)
    except InvalidInputError as exc:
        return invalid(exc)
    except EscbridgeError as error:
        print(f"escbridge explain: {name}: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        engine = processor.engine
        assert isinstance(engine, Engine)
        connector = processor.connector(name)
        try:
            if args.ticket_id is not None:
                tickets = [as_instance(connector.fetch_ticket(str(args.ticket_id)), name)]
            else:
                tickets = _parse_api_tickets(Path(args.ticket), connector.parse_ticket, name)
        except InvalidInputError as exc:
            return invalid(exc)
        except NotFound:
            helpdesk = config.instances[name].type
            print(
                f"escbridge explain: ticket {args.ticket_id} not found on {name} ({helpdesk})",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        except (EscbridgeError, requests.RequestException) as error:
            why = redact(f"{type(error).__name__}: {error}", processor.secrets)
            print(f"escbridge explain: {name}: {why}", file=sys.stderr)
            return EXIT_PROBLEM
        histories = _stored_histories(processor.store, name, [t.id for t in tickets])
    finally:
        processor.store.close()
    now = args.at or datetime.now(UTC)
    decisions = [engine.decide(t, histories.get(t.id, []), now, explain=True) for t in tickets]
    return _print_decisions(args, tickets, decisions, engine.matrix)


def _parse_api_tickets(
    path: Path, parse: Callable[[Mapping[str, Any]], Ticket], instance: str
) -> list[Ticket]:
    """Tickets from a file of the helpdesk's own JSON (one object, an envelope such as
    Zendesk's ``{"ticket": …}``, or a list of them), each through the connector's parser."""
    from escbridge.processing.plan import as_instance

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TicketError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    doc = parse_yaml(text, str(path))
    items = doc.data if isinstance(doc.data, list) else [doc.data]
    tickets: list[Ticket] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        prefix: tuple[int, ...] = (i,) if isinstance(doc.data, list) else ()
        if not isinstance(item, dict):
            problems.append(doc.problem(prefix, "a ticket is a JSON object"))
            continue
        try:
            tickets.append(as_instance(parse(item), instance))
        except (ValueError, KeyError, TypeError, EscbridgeError) as error:
            problems.append(
                doc.problem(
                    prefix,
                    f"not a ticket as {instance}'s helpdesk API returns it ({error}); "
                    "escbridge's own ticket JSON is read without --instance",
                )
            )
    if problems:
        raise TicketError(problems)
    return tickets


def _stored_histories(
    store: Store, instance: str, ids: Sequence[str]
) -> dict[str, list[EscalationRecord]]:
    """The tickets' past escalations from the store (cooldown, daily cap, time at level);
    when it cannot be read, none, and a warning saying so."""
    from escbridge.store import safe_url
    from escbridge.store.history import store_exists

    if not store_exists(store.url):
        print(
            f"warning: the store {safe_url(store.url)} does not exist yet: explained without "
            "escalation history",
            file=sys.stderr,
        )
        return {}
    try:
        return store.histories(instance, list(ids))
    except StoreUnavailableError as error:  # StoreSchemaError too
        print(
            f"warning: explained without escalation history ({error})",
            file=sys.stderr,
        )
        return {}


def run_matrix(args: argparse.Namespace) -> int:
    """Print the matrix in one of MATRIX_FORMATS (table, Markdown, JSON, HTML, Mermaid)."""
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
    p.description = (
        "Check a matrix, or an escbridge.yaml (told apart by content): every section of the "
        "config, each instance's settings, the matrix it names, and that the matrix routes "
        "tickets on every instance. Problems point at file:line; nothing is contacted."
    )
    p.add_argument(
        "path",
        nargs="?",
        help="a matrix or an escbridge.yaml (default: --matrix, else escbridge.yaml when it "
        "exists here, else matrix.yaml)",
    )
    p.add_argument("--matrix", help="matrix file (same as PATH)")


def configure_explain_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run tickets through the engine and show, for every rule, why it fired or not. "
        "A FILE is escbridge's own ticket JSON (docs/matrix.md: Ticket JSON for explain); with "
        "--instance NAME it is the helpdesk's own (e.g. Zendesk's {\"ticket\": …}), read by "
        "that instance's connector; --instance NAME --ticket ID fetches the live ticket. "
        "Nothing is written anywhere."
    )
    p.add_argument(
        "ticket",
        nargs="?",
        metavar="FILE",
        help="a ticket JSON file, or a folder of them (escbridge's format; with --instance, "
        "the helpdesk's)",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="an instance of escbridge.yaml: --ticket ID is fetched from it, FILE read with "
        "its connector; its store gives the ticket's escalation history",
    )
    p.add_argument(
        "--ticket",
        dest="ticket_id",
        type=lambda text: text.strip().removeprefix("#"),  # "#81", as escbridge prints it
        metavar="ID",
        help="fetch this ticket live from --instance (read only)",
    )
    p.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml, for --instance")
    p.add_argument(
        "--matrix", help="matrix file (default: matrix.yaml; with --instance, escbridge.yaml's)"
    )
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
    p.description = (
        "Show the matrix as a table (the default), Markdown, JSON, an HTML page with the "
        "escalation chart, or a Mermaid flowchart."
    )
    p.add_argument("path", nargs="?", help="matrix file (default: --matrix or matrix.yaml)")
    p.add_argument("--matrix", help="matrix file (same as PATH)")
    p.add_argument(
        "--format",
        choices=list(MATRIX_FORMATS),
        default="table",
        help="table (default), markdown, json, html (the escalation chart and the matrix "
        "table, one self-contained page) or mermaid (paste into Markdown that renders it)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
