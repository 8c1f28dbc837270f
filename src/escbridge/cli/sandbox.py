"""`escbridge sandbox` and `escbridge demo`: the built-in helpdesk emulators, by hand or scripted.

The work is in :mod:`escbridge.sandbox` (emulators, backlog, the demo's simulated day); this
module parses arguments, prints, and waits for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROBLEM,
    add_log_options,
    configure_logging,
    failed,
    invalid,
    run_until_signal,
)
from escbridge.errors import EscbridgeError, InvalidInputError, WebhookRegistrationError
from escbridge.matrix import load_matrix
from escbridge.sandbox.backlog import DEFAULT_TICKETS, SandboxSet, config_yaml, default_matrix_path
from escbridge.sandbox.driver import available_drivers
from escbridge.sandbox.emulator import quiet_werkzeug
from escbridge.sandbox.faults import FaultPlan, parse_fault
from escbridge.waiting import wait_for
from escbridge.wording import plural

__all__ = ["configure_demo_parser", "configure_sandbox_parser", "run_demo", "run_sandbox"]


# --- `escbridge sandbox` -------------------------------------------------------------------------


#: Where `escbridge sandbox --serve` writes its escbridge.yaml unless told (--write-config).
SANDBOX_CONFIG = "sandbox.yaml"
#: The store a sandbox escbridge.yaml names unless told (--store); relative to that file.
SANDBOX_STORE = "sqlite:///escbridge-sandbox.db"


def configure_sandbox_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start the helpdesk emulator of every installed connector on 127.0.0.1, seeded with "
        "realistic tickets, and print the escbridge.yaml that reaches them. With --serve, also "
        "the webhook receiver and its worker, wired to the emulators. Runs until Ctrl-C."
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also run the webhook receiver with its worker (as `escbridge serve`) on the "
        "config it writes (--write-config, default sandbox.yaml), and point every emulator's "
        "webhooks at it",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="first port; with --serve the receiver takes it, the emulators take the ports "
        "after it (default: any free ports)",
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
        help=f"store URL written into that escbridge.yaml (default {SANDBOX_STORE}, next to it; "
        "with --serve or --write-config that default file starts empty on each run, unless "
        "--webhook-url names a receiver already running; a store you name is kept)",
    )
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="a receiver already running elsewhere (e.g. `escbridge serve` at "
        "http://127.0.0.1:8000): the emulators post their webhooks to URL/webhooks/<instance>",
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
    add_log_options(parser)


def run_sandbox(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    ready: Callable[[SandboxSet], None] | None = None,
) -> int:
    """`escbridge sandbox`: serve until SIGINT/SIGTERM (or ``stop``); 2 on invalid input.

    ``ready(sandboxes)`` runs once everything is up (the webhooks wired to the receiver at
    ``sandboxes.receiver_url``, with --serve or --webhook-url).
    """
    out = out or sys.stdout
    configure_logging(args)
    if args.tickets < 0 or not 0 <= args.port <= 65535:
        print(
            "escbridge sandbox: --tickets must not be negative and --port must be a port "
            "(1 to 65535; 0: any free)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    serving = bool(getattr(args, "serve", False))
    if serving and args.webhook_url:
        print(
            "escbridge sandbox: --serve runs its own receiver; drop --webhook-url (or --serve)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    config_path = args.write_config or (SANDBOX_CONFIG if serving else None)
    if serving and not args.write_config and not _ours(Path(SANDBOX_CONFIG)):
        print(
            f"escbridge sandbox: {SANDBOX_CONFIG} exists and was not written by escbridge "
            "sandbox, or was edited since; name another file with --write-config FILE (your "
            "own matrix: --matrix FILE)",
            file=sys.stderr,
        )
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
    # with --serve the receiver takes --port, the emulators the ports after it
    first_port = args.port + 1 if serving and args.port else args.port
    taken = _taken_port(first_port, len(available_drivers(only=args.only))) if args.port else None
    if taken is not None:
        print(
            f"escbridge sandbox: --port: port {taken} on 127.0.0.1 is in use — stop the other "
            "process or pass another --port (or none: any free ports)"
            if taken <= 65535
            else f"escbridge sandbox: --port: {args.port} leaves too few ports below 65536 — "
            "pass a lower --port (or none: any free ports)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    quiet_werkzeug()  # one line per API call would drown what the command prints
    stop = stop or threading.Event()
    receiver: _Receiver | None = None
    with contextlib.ExitStack() as stack:
        if config_path and not _hold(Path(f"{config_path}.lock"), stack):
            print(
                f"escbridge sandbox: another `escbridge sandbox` is running with {config_path} "
                "(and its store) — stop it, or give this one its own files: --write-config "
                "OTHER.yaml --store sqlite:///OTHER.db",
                file=sys.stderr,
            )
            return EXIT_INVALID
        stack.enter_context(run_until_signal("stopping the sandbox", on_stop=stop.set))
        sandboxes = SandboxSet(
            matrix, tickets=args.tickets, only=args.only, port=first_port, seed=args.seed
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
        _script_faults(sandboxes, faults, getattr(args, "fault_seed", 0))
        fresh = args.store is None  # the default store is ours to empty; a named one is not
        text = config_yaml(
            sandboxes.instances(), matrix_path.resolve(), args.store or SANDBOX_STORE
        )
        if config_path:
            Path(config_path).write_text(_stamped(text), encoding="utf-8")
        kept = None
        if config_path and not serving and fresh:
            kept = _fresh_store(Path(config_path), args.webhook_url)
        receiver_url = args.webhook_url
        if serving:
            assert config_path is not None
            receiver = _Receiver(Path(config_path), fresh_store=fresh)
            logs = [
                f"--{option.replace('_', '-')}={getattr(args, option)}"
                for option in ("log_format", "log_level")
                if getattr(args, option, None) is not None
            ]  # the receiver logs as this command was told to
            code = receiver.start(args.port, stop, logs)
            if code != EXIT_OK or stop.is_set():  # stopped while starting: nothing to wire
                return code
            # On the way out, in this order: the webhooks already sent are answered (one sent
            # to a stopped receiver waits out its timeout), the receiver and its worker finish
            # (the worker may still call the emulators), then the emulators stop.
            stack.callback(receiver.stop)
            stack.callback(_flush_webhooks, sandboxes)
            receiver_url = receiver.url
        if receiver_url:
            try:
                sandboxes.connect_webhooks(receiver_url)
            except WebhookRegistrationError as error:
                start = (
                    f"`escbridge serve --config {config_path}`"
                    if config_path
                    else "a receiver (`escbridge serve` on the config --write-config FILE writes)"
                )
                print(
                    f"escbridge sandbox: {error} — start {start} first, or use "
                    "`escbridge sandbox --serve`",
                    file=sys.stderr,
                )
                return EXIT_PROBLEM if serving else EXIT_INVALID
        if receiver is not None:
            _describe_serving(sandboxes, receiver, config_path or "", args, out)
        else:
            _describe(sandboxes, text, args, out)
            if kept:
                out.write(kept)
                out.flush()
        if ready is not None:
            ready(sandboxes)
        wait_for(stop)
    return receiver.code if receiver is not None else EXIT_OK


def _flush_webhooks(sandboxes: SandboxSet, timeout: float = 10.0) -> None:
    """Wait until every emulator's webhooks sent so far are delivered (at most ``timeout``)."""
    for running in sandboxes.running:
        running.driver.flush(timeout)


def _taken_port(first: int, count: int) -> int | None:
    """The first of the ``count`` ports from ``first`` that something already listens on.

    Checked before starting, because the emulators' web server ends the process with a
    message of its own on a taken port. A port past 65535 counts as taken.
    """
    for port in range(first, first + count):
        if port > 65535:
            return port
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return port
    return None


_DIGEST = "# escbridge sandbox wrote this file; sha256 of the lines above: "


def _stamped(text: str) -> str:
    """The config as written, with a last line that tells later whether someone edited it."""
    return f"{text}{_DIGEST}{hashlib.sha256(text.encode()).hexdigest()}\n"


def _ours(path: Path) -> bool:
    """Whether ``path`` may be (over)written: absent, or a config this command wrote and
    nobody edited since (an admin's own matrix path or comment in it is not thrown away)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError):
        return False
    body, _, digest = text.rpartition(_DIGEST)
    return bool(body) and digest.strip() == hashlib.sha256(body.encode()).hexdigest()


class _Receiver:
    """`escbridge serve` (receiver and embedded worker) on a thread, on the sandbox's config.

    It is `escbridge serve`'s own code (:func:`escbridge.cli.serve.run_serve`), started with
    that command's defaults; this process's signal handling stays with `escbridge sandbox`.
    """

    def __init__(self, config: Path, *, fresh_store: bool) -> None:
        self.config = config
        self.fresh_store = fresh_store
        self.url = ""
        self.code = EXIT_OK
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None

    def start(self, port: int, stop: threading.Event, options: Sequence[str] = ()) -> int:
        """Bring the store to the current schema and start serving; once it listens, 0.

        Anything else is the exit code, after one line on stderr saying why. ``stop`` ends
        the receiver, and is set when the receiver ends on its own; ``options`` are more of
        `escbridge serve`'s arguments.
        """
        from escbridge.cli.serve import configure_serve_parser, run_serve
        from escbridge.config import load_config
        from escbridge.store import upgrade

        try:
            store = load_config(self.config).store_url
            if self.fresh_store:
                _remove_sqlite(store)  # the emulators' tickets are new on every run
            upgrade(store)
        except InvalidInputError as error:
            return invalid(error)
        except EscbridgeError as error:
            return failed("sandbox", error, sys.stderr)
        parser = argparse.ArgumentParser(prog="escbridge serve")
        configure_serve_parser(parser)
        serve_args = parser.parse_args(
            ["--config", str(self.config), "--port", str(port), *options]
        )
        listening = threading.Event()

        def run() -> None:
            try:
                self.code = run_serve(serve_args, ready=listening, stop=stop)
            except OSError as error:  # e.g. the port is taken
                print(
                    f"escbridge sandbox: the receiver cannot listen on 127.0.0.1:{port}: "
                    f"{error.strerror or error} — pass another --port",
                    file=sys.stderr,
                )
                self.code = EXIT_INVALID
            finally:
                stop.set()  # the receiver is gone: so is the sandbox
                listening.set()

        self._stop = stop
        self._thread = threading.Thread(target=run, name="escbridge-sandbox-receiver")
        self._thread.start()
        wait_for(listening)
        if not self._thread.is_alive() or getattr(serve_args, "bound_port", None) is None:
            self.stop()
            return self.code or EXIT_PROBLEM
        self.url = f"http://127.0.0.1:{serve_args.bound_port}"
        return EXIT_OK

    def stop(self) -> None:
        """Stop receiving and wait until the receiver and its worker have finished."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _hold(path: Path, stack: contextlib.ExitStack) -> bool:
    """Hold an exclusive lock on ``path`` until ``stack`` closes; False when another process
    holds it. A second sandbox writing the same config would rewrite it to its own ports and
    replace the store the first one's receiver is writing to (its 2xx would then go to a
    deleted file)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    stack.callback(os.close, fd)  # closing the descriptor releases the lock
    return True


def _fresh_store(config: Path, receiver_url: str | None) -> str | None:
    """Start the default store of a written config empty, as --serve does: the emulators'
    tickets are new on every run and reuse ids, so a previous run's escalation state would
    apply to them. With --webhook-url a receiver is already running, perhaps on this very
    store, and deleting its file under it would lose its writes: the store is kept, and the
    returned line says so (None when the store was started empty)."""
    from escbridge.config import load_config
    from escbridge.store.migrate import sqlite_file

    store = load_config(config, helpdesk_secrets=False).store_url
    if receiver_url is None:
        _remove_sqlite(store)
        return None
    database = sqlite_file(store)
    if database is None or not database.exists():
        return None
    return (
        f"\nKept the store {database} (the receiver at {receiver_url} may be writing to it): "
        "it holds the previous run's escalations, whose ticket ids these new tickets reuse; "
        "to start afresh, stop the receiver, delete the file and start it again.\n"
    )


def _remove_sqlite(url: str) -> None:
    """Delete the SQLite database file of ``url`` (and its journal files), if it is one."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    database = url[len(prefix) :].partition("?")[0]
    if not database or database == ":memory:":
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)


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
    emulators = plural(count, "helpdesk emulator")
    out.write(f"escbridge sandbox: {emulators} on 127.0.0.1 (Ctrl-C stops them)\n")
    _emulator_lines(sandboxes, args, out)
    if args.write_config:
        out.write(f"\nescbridge.yaml for them: {args.write_config}\n")
        program = _program()
        out.write(
            f"  {program} db upgrade --config {args.write_config}\n"
            f"  {program} sync --config {args.write_config} --dry-run\n"
        )
    else:
        out.write("\nescbridge.yaml for them (or use --write-config FILE):\n\n" + text)
    out.flush()


def _emulator_lines(sandboxes: SandboxSet, args: argparse.Namespace, out: TextIO) -> None:
    for r in sandboxes.running:
        tickets = plural(r.seeded, "ticket")
        out.write(f"  {r.instance:<10} {r.driver.url:<24} {tickets}\n")
        out.write(f"             {r.driver.access_hint()}\n")
    for spec in getattr(args, "fault", None) or []:
        out.write(f"  fault: {spec}\n")


def _describe_serving(
    sandboxes: SandboxSet,
    receiver: _Receiver,
    config: str,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    """The banner of `--serve`: where everything is, and what to try next."""
    program = _program()
    out.write("escbridge sandbox: up on 127.0.0.1 (Ctrl-C stops everything)\n")
    _emulator_lines(sandboxes, args, out)
    out.write(f"  {'receiver':<10} {receiver.url:<24} webhooks of every emulator, and a worker\n")
    out.write(f"  {'config':<10} {config}\n")
    out.write("\nTry, in another terminal:\n")
    zendesk = next((r for r in sandboxes.running if r.driver.helpdesk == "zendesk"), None)
    if zendesk is not None:
        out.write(
            "  # a customer asks for a manager in a new Zendesk ticket; its webhook reaches the "
            "receiver:\n"
            f"  curl -s -X POST {zendesk.driver.url}/__sandbox/tickets "
            '-H \'Content-Type: application/json\' -d \'{"subject": "Still broken", '
            '"description": "I want to speak to a manager"}\'\n'
            f'  {program} history --config {config} zendesk ID   # ID: the new ticket\'s "id"\n'
        )
    out.write(
        f"  {program} status --config {config}\n  {program} sync --config {config} --dry-run\n"
    )
    out.flush()


def _program() -> str:
    """How this escbridge is run again: ``escbridge`` when that is the one on PATH, else the
    path it was started by (e.g. ``.venv/bin/escbridge``, the venv not being active)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "escbridge":
        return "escbridge"
    found = shutil.which("escbridge")
    if found is not None and Path(found).resolve() == Path(argv0).resolve():
        return "escbridge"
    return argv0


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
    add_log_options(parser, level="ERROR")


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
    configure_logging(args)
    try:
        matrix = load_matrix((options.matrix or default_matrix_path()).resolve())
    except InvalidInputError as error:
        return invalid(error)
    print("escbridge demo: starting the sandbox helpdesks and the receiver …", file=sys.stderr)

    def hold(result: DemoResult) -> None:
        out.write(format_result(result, matrix, running=True, program=_program()))
        out.flush()
        print("sandboxes and receiver are up; Ctrl-C stops them", file=sys.stderr)
        with run_until_signal("stopping the demo") as stop:
            wait_for(stop)

    def say(line: str) -> None:
        if sys.stderr.isatty():
            print(f"  {line}", file=sys.stderr)

    try:
        result = run_demo_day(options, on_ready=hold if args.keep_running else None, say=say)
    except (DemoError, OSError) as error:
        print(f"escbridge demo: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    if not args.keep_running:
        out.write(format_result(result, matrix, program=_program()))
        out.flush()
    return EXIT_OK if result.ok else EXIT_PROBLEM
