"""The `escbridge` command: lazy dispatch to one module per command family.

Only the module of the command being run is imported, so `escbridge validate` needs nothing
beyond the core (no Flask, matplotlib or psycopg) and starts fast. Each module parses its
arguments and prints; the work happens in the domain modules, which know nothing of argparse.

Exit codes (:mod:`escbridge.cli._common`): 0 ok, 1 a rule or ticket problem (the command ran and
found one), 2 invalid input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from escbridge import __version__
from escbridge.cli._common import EXIT_OK, EXIT_PROBLEM, ArgumentParser, Runner
from escbridge.errors import error_summary

__all__ = ["COMMANDS", "DEBUG_ENV", "build_parser", "main", "version_text"]

#: Set (to anything) to see the traceback of an unexpected error instead of its one line.
DEBUG_ENV = "ESCBRIDGE_DEBUG"
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C

# (command, help, module, its configure function, its run function), in the order of --help.
COMMANDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("init", "write a commented starter escbridge.yaml and matrix.yaml",
     "escbridge.cli.matrix", "configure_init_parser", "run_init"),
    ("validate", "check a matrix; errors point at file:line",
     "escbridge.cli.matrix", "configure_validate_parser", "run_validate"),
    ("explain", "run tickets through the engine and show why each rule fired or not",
     "escbridge.cli.matrix", "configure_explain_parser", "run_explain"),
    ("matrix", "show the matrix as a table, Markdown, JSON, an HTML chart or Mermaid",
     "escbridge.cli.matrix", "configure_matrix_parser", "run_matrix"),
    ("connectors", "list the installed connector plugins and their capabilities",
     "escbridge.cli.connectors", "configure_connectors_parser", "run_connectors"),
    ("check", "prove credentials and reachability, resolve groups, per instance",
     "escbridge.cli.connectors", "configure_check_parser", "run_check"),
    ("serve", "webhook receiver with an embedded worker pool",
     "escbridge.cli.serve", "configure_serve_parser", "run_serve"),
    ("worker", "process the inbox (claim, fetch, decide, apply, record)",
     "escbridge.cli.worker", "configure_worker_parser", "run_worker"),
    ("status", "per instance: readiness, queue, dead letters, last sync, leases, schema",
     "escbridge.cli.status", "configure_status_parser", "run_status"),
    ("history", "everything escbridge knows of one ticket: events, escalations, notes, jobs",
     "escbridge.cli.history", "configure_history_parser", "run_history"),
    ("jobs", "list dead letters, retries and notifications; replay them",
     "escbridge.cli.store", "configure_jobs_parser", "run_jobs"),
    ("notify", "send a sample notification to a matrix target (notify test TARGET)",
     "escbridge.cli.notify", "configure_notify_parser", "run_notify"),
    ("due", "the open tickets due next by time (idle, SLA, time at level) and when",
     "escbridge.cli.store", "configure_due_parser", "run_due"),
    ("db", "manage the store's schema (db upgrade)",
     "escbridge.cli.store", "configure_db_parser", "run_db"),
    ("report", "escalation trends by level, rule, group, helpdesk, channel",
     "escbridge.cli.report", "configure_report_parser", "run_report"),
    ("sync", "scan helpdesks for time-based escalations (--dry-run, --loop)",
     "escbridge.cli.sync", "configure_sync_parser", "run_sync"),
    ("sandbox", "run the built-in helpdesk emulators, seeded with tickets",
     "escbridge.cli.sandbox", "configure_sandbox_parser", "run_sandbox"),
    ("demo", "everything end to end against the sandbox helpdesks, no credentials",
     "escbridge.cli.sandbox", "configure_demo_parser", "run_demo"),
    ("completion", "print the bash or zsh completion script (escbridge completion bash)",
     "escbridge.cli.completion", "configure_completion_parser", "run_completion"),
)  # fmt: skip


def version_text() -> str:
    """``escbridge 0.2.0 (freshdesk 0.2.0, zendesk 0.2.0, webhooks 0.2.0)``: the core and every
    installed plugin distribution, as a bug report needs them (read from their metadata)."""
    from importlib import metadata

    from escbridge.connector.registry import ENTRY_POINT_GROUP

    parts = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        parts.append(f"{ep.name} {dist.version}" if dist is not None else ep.name)
    with contextlib.suppress(metadata.PackageNotFoundError):  # the receiver is optional
        parts.append(f"webhooks {metadata.version('escbridge-webhooks')}")
    return f"escbridge {__version__} ({', '.join(parts) or 'no connector installed'})"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed distributions only when asked (not on every run)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS, help=help
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def build_parser(selected: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    """The whole command line; only the ``selected`` command's module is imported and wired
    (``every``: all of them, for the completion script)."""
    parser = ArgumentParser(
        prog="escbridge",
        description="Enforce one escalation matrix on Zendesk, Freshdesk and Zoho Desk.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version of escbridge and its plugins"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, module, configure, run in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if name != selected and not every:
            continue  # listed in --help; its module is imported only when it runs
        loaded = importlib.import_module(module)
        getattr(loaded, configure)(p)
        p.set_defaults(run=getattr(loaded, run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    selected = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(selected)
    args, extra = parser.parse_known_args(words)
    if extra:  # named by the command they were given to, not by `escbridge`
        parser.prog = f"escbridge {selected}"
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run: Runner = args.run
    try:
        return run(args)
    except BrokenPipeError:  # `escbridge explain … | head`
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C in a command that does not handle it: no traceback
        print(f"escbridge {selected}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug in escbridge, not the admin's input
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"escbridge {selected}: unexpected error ({error_summary(error)}) — a bug in "
            f"escbridge, not in your input; {DEBUG_ENV}=1 shows the traceback for a report",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
