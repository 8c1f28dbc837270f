"""`escbridge serve`: the receiver and an embedded worker pool in one process (one machine).

The HTTP side is served by waitress, a production WSGI server that runs in-process on
threads: it works wherever Python does (gunicorn is Unix-only and forks, which would leave
the embedded worker threads behind in the parent), and it needs no separate config. The
worker side is ``Processor.run`` on ``--workers`` threads, sharing the receiver's store.

For more than one machine — or more throughput — run gunicorn with
``escbridge_webhooks.wsgi:app`` and ``escbridge worker`` separately, on a PostgreSQL store
(README, Receiving webhooks).

Stopping (SIGTERM or Ctrl-C): stop accepting connections, let the workers finish the events in
hand and the requests in flight finish (at most ``--grace`` seconds), then exit. An event is
answered 202 only once stored, so one cut off by the exit is delivered again by the helpdesk.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from escbridge_webhooks.app import ReceiverSettings, create_app, receiver_of
from escbridge_webhooks.instrument import count_api_errors
from escbridge_webhooks.logs import configure_logging, install_secrets

log = logging.getLogger("escbridge_webhooks.serve")

__all__ = ["configure_serve_parser", "run_serve"]


def configure_serve_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `escbridge serve` (the core's cli adds the sub-command and calls run_serve)."""
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
        default=ReceiverSettings.max_body_bytes,
        metavar="BYTES",
        help="larger webhook bodies are refused with 413 (default 1 MiB)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight requests may take to finish (default 30)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def _secrets(config: Any) -> list[str]:
    return [value for i in config.instances.values() for value in i.secret_values]


def run_serve(
    args: argparse.Namespace,
    *,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """`escbridge serve`: returns the exit code (2: bad config, 1: store not usable).

    Runs until SIGTERM/SIGINT, or until ``stop`` is set (tests, embedding). ``ready`` is set
    once the server listens; ``args.bound_port`` then holds the port.
    """
    import importlib

    from escbridge.config import load_config
    from escbridge.errors import EscbridgeError, InvalidInputError, StoreUnavailableError
    from escbridge.processing import build_processor

    for name, value, least in (("--workers", args.workers, 0), ("--threads", args.threads, 1)):
        if value is not None and value < least:
            print(f"escbridge serve: {name} must be at least {least}")
            return 2
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
        install_secrets(_secrets(config))
        processor = build_processor(config)
        processor.store.check_schema()
    except InvalidInputError as error:
        print(f"escbridge serve: {error}")
        return 2
    except (StoreUnavailableError, EscbridgeError) as error:
        print(f"escbridge serve: {error}")
        return 1
    settings = ReceiverSettings(max_body_bytes=args.max_body_bytes)
    app = create_app(config, processor=processor, settings=settings)
    helpdesks = {name: instance.type for name, instance in config.instances.items()}
    count_api_errors(processor, receiver_of(app).metrics.api_errors, helpdesks)

    waitress: Any = importlib.import_module("waitress")  # untyped: no stubs are needed
    server: Any = waitress.create_server(
        app, host=args.host, port=args.port, threads=args.threads, ident="escbridge"
    )
    args.bound_port = int(server.effective_port)
    stop = stop or threading.Event()
    workers = processor.settings.concurrency if args.workers is None else args.workers
    pool: threading.Thread | None = None
    if workers > 0:
        pool = threading.Thread(
            target=processor.run,
            kwargs={"stop": stop, "concurrency": workers},
            name="escbridge-workers",
            daemon=True,
        )
        pool.start()
    http = threading.Thread(target=server.run, name="escbridge-http", daemon=True)
    http.start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"escbridge serve: listening on http://{args.host}:{args.bound_port} "
        f"({len(config.instances)} instance(s), {workers} worker thread(s), "
        f"store {processor.store!r})",
        flush=True,
    )
    log.info(
        "listening",
        extra={"host": args.host, "port": args.bound_port, "workers": workers},
    )
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(0.5):
            if not http.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _shutdown(server, pool, stop, args.grace)
        processor.store.close()
    return 0


def _shutdown(
    server: Any, pool: threading.Thread | None, stop: threading.Event, grace: float
) -> None:
    """Stop accepting, finish what is in hand, stop the threads."""
    stop.set()
    server.accepting = False  # the listening socket is no longer polled
    server.pull_trigger()
    deadline = time.monotonic() + grace
    if pool is not None:
        pool.join(max(0.0, deadline - time.monotonic()))
    server.task_dispatcher.shutdown(timeout=max(0.1, deadline - time.monotonic()))
    log.info("stopped")
