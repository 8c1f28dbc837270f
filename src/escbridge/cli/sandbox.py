"""`escbridge sandbox` and `escbridge demo`: the built-in helpdesk emulators, by hand or scripted.

The work is in :mod:`escbridge.sandbox` (emulators, backlog, the demo's simulated day); this
module parses arguments, prints, and waits for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TextIO

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, invalid, run_until_signal
from escbridge.errors import InvalidInputError
from escbridge.matrix import load_matrix
from escbridge.sandbox.backlog import DEFAULT_TICKETS, SandboxSet, config_yaml, default_matrix_path
from escbridge.sandbox.emulator import quiet_werkzeug
from escbridge.sandbox.faults import FaultPlan, parse_fault

__all__ = ["configure_demo_parser", "configure_sandbox_parser", "run_demo", "run_sandbox"]


# --- `escbridge sandbox` -------------------------------------------------------------------------


def configure_sandbox_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start the helpdesk emulator of every installed connector on 127.0.0.1, seeded with "
        "realistic tickets, and print the escbridge.yaml that reaches them. Runs until Ctrl-C."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="first port; the emulators take consecutive ports (default: any free ports)",
    )
    parser.add_argument(
        "--tickets",
        type=int,
        default=DEFAULT_TICKETS,
        metavar="N",
        help=f"tickets seeded in each helpdesk (default {DEFAULT_TICKETS})",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="CONNECTOR",
        help="only this connector's emulator (repeatable; default: every installed one)",
    )
    parser.add_argument(
        "--matrix",
        help="matrix whose groups the emulators get (default: the demo matrix)",
    )
    parser.add_argument(
        "--write-config",
        metavar="FILE",
        help="write the escbridge.yaml for the emulators to FILE",
    )
    parser.add_argument(
        "--store",
        default="sqlite:///escbridge-sandbox.db",
        help="store URL written into that escbridge.yaml (default sqlite:///escbridge-sandbox.db)",
    )
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="the receiver's base URL (e.g. http://127.0.0.1:8000): the emulators post their "
        "webhooks to URL/webhooks/<instance>",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated backlog")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="'METHOD PATH=KIND[,OPTION=VALUE...]'",
        help="a network fault in every emulator whose paths match (repeatable), e.g. "
        "'PUT /api/v2/tickets/*=lost_answer' or 'POST /api/v2/tickets/*/notes=late,delay=8'; "
        "kinds: lost_answer late slow error throttle reset; options: times (or always), "
        "probability, status, answer (504|reset|hang), delay, retry_after. A running "
        "emulator takes more at POST /__sandbox/faults",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the faults' probability draws"
    )


def run_sandbox(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[SandboxSet], None] | None = None,
) -> int:
    """`escbridge sandbox`: serve until SIGINT/SIGTERM (or ``stop``); 2 on invalid input."""
    out = out or sys.stdout
    if args.tickets < 0 or not 0 <= args.port <= 65535:
        print("escbridge sandbox: --tickets and --port must not be negative", file=sys.stderr)
        return EXIT_INVALID
    faults = list(getattr(args, "fault", None) or [])
    try:
        for spec in faults:
            parse_fault(spec)
    except ValueError as error:
        print(f"escbridge sandbox: --fault: {error}", file=sys.stderr)
        return EXIT_INVALID
    matrix_path = Path(args.matrix) if args.matrix else default_matrix_path()
    try:
        matrix = load_matrix(matrix_path)
    except InvalidInputError as error:
        return invalid(error)
    quiet_werkzeug()  # one line per API call would drown what the command prints
    stop = stop or threading.Event()
    with contextlib.ExitStack() as stack:
        sandboxes = SandboxSet(
            matrix, tickets=args.tickets, only=args.only, port=args.port, seed=args.seed
        )
        try:
            stack.enter_context(sandboxes)
        except OSError as error:
            print(f"escbridge sandbox: cannot start the emulators: {error}", file=sys.stderr)
            return EXIT_PROBLEM
        if not sandboxes.running:
            print(
                "escbridge sandbox: no installed connector has a sandbox (install "
                "escbridge-zendesk[sandbox], escbridge-freshdesk[sandbox] or "
                "escbridge-zohodesk[sandbox])",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        if args.webhook_url:
            sandboxes.connect_webhooks(args.webhook_url)
        _script_faults(sandboxes, faults, getattr(args, "fault_seed", 0))
        text = config_yaml(sandboxes.instances(), matrix_path.resolve(), args.store)
        if args.write_config:
            Path(args.write_config).write_text(text, encoding="utf-8")
        _describe(sandboxes, text, args, out)
        stack.enter_context(run_until_signal("stopping the emulators", on_stop=stop.set))
        if ready is not None:
            ready(sandboxes)
        stop.wait()
    return EXIT_OK


def _script_faults(sandboxes: SandboxSet, specs: list[str], seed: int) -> None:
    """Give every running emulator the ``--fault`` rules (each matches only its own paths)."""
    for running in sandboxes.running:
        plan = getattr(running.driver, "faults", None)
        if isinstance(plan, FaultPlan):
            plan.seed = seed
            for spec in specs:
                plan.add_spec(spec)


def _describe(sandboxes: SandboxSet, text: str, args: argparse.Namespace, out: TextIO) -> None:
    count = len(sandboxes.running)
    out.write(f"escbridge sandbox: {count} helpdesk emulator(s) on 127.0.0.1 (Ctrl-C stops them)\n")
    for r in sandboxes.running:
        out.write(f"  {r.instance:<10} {r.driver.url:<24} {r.seeded} tickets\n")
        out.write(f"             {r.driver.access_hint()}\n")
    for spec in getattr(args, "fault", None) or []:
        out.write(f"  fault: {spec}\n")
    if args.write_config:
        out.write(f"\nescbridge.yaml for them: {args.write_config}\n")
        out.write(
            f"  escbridge db upgrade --config {args.write_config}\n"
            f"  escbridge sync --config {args.write_config} --dry-run\n"
        )
    else:
        out.write("\nescbridge.yaml for them (or use --write-config FILE):\n\n" + text)
    out.flush()


# --- `escbridge demo` ----------------------------------------------------------------------------


def configure_demo_parser(parser: argparse.ArgumentParser) -> None:
    from escbridge.sandbox.demo import DEFAULT_STORE, DEMO_TICKETS

    parser.description = (
        "Run escbridge end to end against built-in sandbox helpdesks, with no credentials: a "
        "simulated support day of webhooks and sync runs, then a table of what was escalated, "
        "where and why. Finishes in under a minute and leaves nothing running."
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        metavar="PATH",
        help=f"SQLite file for the demo's store, replaced on each run (default {DEFAULT_STORE})",
    )
    parser.add_argument("--matrix", help="matrix to enforce (default: the demo matrix)")
    parser.add_argument(
        "--tickets",
        type=int,
        default=DEMO_TICKETS,
        metavar="N",
        help=f"backlog per helpdesk (default {DEMO_TICKETS})",
    )
    parser.add_argument(
        "--day", type=date.fromisoformat, help="the simulated day (default: a recent business day)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the working directory (its escbridge.yaml)"
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the sandboxes and the receiver up after the demo, until Ctrl-C",
    )


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`escbridge demo`: 0 the day went as scripted, 1 it did not, 2 invalid input."""
    from escbridge.sandbox.demo import (
        DemoError,
        DemoOptions,
        DemoResult,
        format_result,
        run_demo_day,
    )

    out = out or sys.stdout
    if args.tickets < 0:
        print("escbridge demo: --tickets must not be negative", file=sys.stderr)
        return EXIT_INVALID
    options = DemoOptions(
        store=Path(args.store),
        matrix=Path(args.matrix) if args.matrix else None,
        tickets=args.tickets,
        keep=args.keep,
        day=args.day,
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        matrix = load_matrix((options.matrix or default_matrix_path()).resolve())
    except InvalidInputError as error:
        return invalid(error)
    print("escbridge demo: starting the sandbox helpdesks and the receiver …", file=sys.stderr)

    def hold(result: DemoResult) -> None:
        out.write(format_result(result, matrix, running=True))
        out.flush()
        print("sandboxes and receiver are up; Ctrl-C stops them", file=sys.stderr)
        with run_until_signal("stopping the demo") as stop:
            stop.wait()

    def say(line: str) -> None:
        if sys.stderr.isatty():
            print(f"  {line}", file=sys.stderr)

    try:
        result = run_demo_day(options, on_ready=hold if args.keep_running else None, say=say)
    except (DemoError, OSError) as error:
        print(f"escbridge demo: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    if not args.keep_running:
        out.write(format_result(result, matrix))
        out.flush()
    return EXIT_OK if result.ok else EXIT_PROBLEM
