"""`escbridge serve`: the webhook receiver with an embedded worker pool, until Ctrl-C.

The receiver is another distribution (escbridge-webhooks); it is imported only when the command
runs, and a core-only install is told how to get it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    add_log_options,
    failed,
    run_until_signal,
)
from escbridge.errors import EscbridgeError
from escbridge.wording import pip_install

__all__ = ["configure_serve_parser", "run_serve"]

_ONE_MIB = 1024 * 1024


def configure_serve_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Receive helpdesk webhooks on POST /webhooks/<instance> and process them with an "
        "embedded worker pool: everything on one machine. Production at scale: gunicorn "
        "(escbridge_webhooks.wsgi:app) plus `escbridge worker` on a PostgreSQL store."
    )
    parser.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml to use")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="embedded worker threads (default: processing.concurrency, else 1; "
        "0: receive only, for when `escbridge worker` runs elsewhere)",
    )
    parser.add_argument(
        "--threads", type=int, default=8, metavar="N", help="HTTP request threads (default 8)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=_ONE_MIB,
        metavar="BYTES",
        help="larger webhook bodies are refused with 413 (default 1 MiB)",
    )
    parser.add_argument(
        "--grace",
        type=_grace,
        default=30.0,
        metavar="DURATION",
        help="on SIGTERM, how long in-flight requests may take to finish (default 30s)",
    )
    parser.add_argument(
        "--metrics-bind",
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics only on this address of its own (default: $ESCBRIDGE_METRICS_BIND). "
        "A bearer token for /metrics is read from $ESCBRIDGE_METRICS_TOKEN (never from the "
        "command line, which other users can see). With neither, /metrics answers 404",
    )
    add_log_options(parser)


def run_serve(
    args: argparse.Namespace,
    *,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """`escbridge serve`: 0 stopped, 1 store not usable (or the server died), 2 bad input.

    Runs until SIGTERM/SIGINT, or until ``stop`` is set (tests, embedding). ``ready`` is set
    once the server listens; ``args.bound_port`` then holds the port.
    """
    for name, value, least in (("--workers", args.workers, 0), ("--threads", args.threads, 1)):
        if value is not None and value < least:
            print(f"escbridge serve: {name} must be at least {least}", file=sys.stderr)
            return EXIT_INVALID
    host_problem = _host_problem(args.host)
    if host_problem is not None:
        print(f"escbridge serve: --host: {host_problem}", file=sys.stderr)
        return EXIT_INVALID
    if not 0 <= args.port <= 65535:
        print(
            f"escbridge serve: --port {args.port} is not a port: use 1 to 65535 (0: any free)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        from escbridge_webhooks.metrics import BIND_ENV, TOKEN_ENV, MetricsAccess
        from escbridge_webhooks.serve import ServeOptions, serve
    except ImportError as error:
        print(
            f"escbridge serve needs the escbridge-webhooks distribution ({error}).\n"
            f"Install it: {pip_install('escbridge-webhooks')}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    metrics_bind = args.metrics_bind or os.environ.get(BIND_ENV) or None
    metrics_token = os.environ.get(TOKEN_ENV) or None
    try:
        MetricsAccess(token=metrics_token, bind=metrics_bind)  # a bad one: before anything starts
    except ValueError as error:
        print(f"escbridge serve: {error}", file=sys.stderr)
        return EXIT_INVALID
    options = ServeOptions(
        config=args.config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        max_body_bytes=args.max_body_bytes,
        grace=args.grace,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_bind=metrics_bind,
        metrics_token=metrics_token,
    )
    stop = stop or threading.Event()

    def listening(port: int) -> None:
        args.bound_port = port
        if ready is not None:
            ready.set()

    try:
        with run_until_signal("shutting down", on_stop=stop.set):
            serve(options, stop=stop, ready=listening)
    except EscbridgeError as error:
        return failed("serve", error)
    return EXIT_OK


def _host_problem(host: str) -> str | None:
    """Why the receiver could not listen on ``host`` (None: it can), checked before anything
    starts: a typo (``0.0.0.0:8000``), a name that does not resolve, or an address of another
    machine would otherwise surface as the server's own error."""
    import socket

    if ":" in host and host.count(":") == 1:
        name, _, port = host.partition(":")
        return f"{host} is not an address: write --host {name} --port {port}"
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"{host} is not an address or a name this machine resolves (e.g. 127.0.0.1, 0.0.0.0)"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address[0], 0))
        except OSError:
            return (
                f"{host} is not an address of this machine: use one of its own, 0.0.0.0 for all, "
                "or 127.0.0.1 for this machine only"
            )
    return None


def _grace(text: str) -> float:
    """``--grace 30s`` (a duration, as everywhere; a bare number is still read as seconds,
    as before)."""
    try:
        seconds = float(text)
    except ValueError:
        from escbridge.calendar import parse_duration

        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return seconds
