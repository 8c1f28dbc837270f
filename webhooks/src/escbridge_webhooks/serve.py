"""`escbridge serve`: the receiver and an embedded worker pool in one process (one machine).

The HTTP side is served by waitress, a production WSGI server that runs in-process on
threads: it works wherever Python does (gunicorn is Unix-only and forks, which would leave
the embedded worker threads behind in the parent), and it needs no separate config. The
worker side is ``Processor.run`` on ``workers`` threads, sharing the receiver's store.

For more than one machine — or more throughput — run gunicorn with
``escbridge_webhooks.wsgi:app`` and ``escbridge worker`` separately, on a PostgreSQL store
(docs/operating/receiver.md).

Stopping (``stop`` set, which `escbridge serve` does on SIGTERM or Ctrl-C): stop accepting
connections, let the workers finish the events in hand and the requests in flight finish (at
most ``grace`` seconds), then return. An event is answered 202 only once stored, so one cut off
by the exit is delivered again by the helpdesk.

The command line (arguments, exit codes, signals) is ``escbridge.cli.serve``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from escbridge.cli._common import setup_logging
from escbridge.secrets import safe_url
from escbridge.wording import plural
from escbridge_webhooks.app import ReceiverSettings, create_app, receiver_of
from escbridge_webhooks.instrument import count_api_errors
from escbridge_webhooks.logs import install_secrets
from escbridge_webhooks.metrics import METRICS_LISTENER, BindAddress, on_listener

log = logging.getLogger("escbridge_webhooks.serve")

CHANNEL_TIMEOUT = 10  # seconds; like gunicorn's ESCBRIDGE_WEBHOOK_BODY_TIMEOUT default

__all__ = ["ServeOptions", "serve"]


@dataclass(frozen=True)
class ServeOptions:
    """What `escbridge serve` runs: where to listen, how many threads, how long to wind down."""

    config: str = "escbridge.yaml"
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    workers: int | None = None  # None: processing.concurrency; 0: receive only
    threads: int = 8  # HTTP request threads
    max_body_bytes: int = ReceiverSettings.max_body_bytes
    grace: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"  # or "text" (`escbridge serve --log-format`, whose default it is)
    metrics_bind: str | None = None  # /metrics only on this listener of its own (host:port)
    metrics_token: str | None = field(default=None, repr=False)  # bearer token for /metrics


def serve(
    options: ServeOptions,
    *,
    stop: threading.Event,
    ready: Callable[[int], None] | None = None,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> None:
    """Receive and process until ``stop`` is set; ``ready(port)`` once the server listens.

    Raises InvalidInputError (escbridge.yaml), StoreUnavailableError or another EscbridgeError
    (the store is not usable) before listening, and ServerStoppedError when the HTTP server
    dies on its own.
    """
    from escbridge.config import load_config
    from escbridge.errors import ServerStoppedError
    from escbridge.processing import build_processor

    setup_logging(options.log_format, options.log_level)
    # A taken port is the one line that matters: said before the helpdesks are contacted.
    _check_free(options.host, options.port, "--port")
    if options.metrics_bind:
        metrics = BindAddress.parse(options.metrics_bind)
        if metrics.path is None:
            host = metrics.host if metrics.host not in ("", "*") else "0.0.0.0"
            _check_free(host, metrics.port, "--metrics-bind")
    config = load_config(options.config)
    install_secrets(config.secret_values)
    # Its worker threads deliver notifications: their ${VAR}s must be set (receive-only needs not).
    processor = build_processor(config, notify_environment=options.workers != 0)
    install_secrets(processor.secrets)
    try:
        processor.store.check_schema()
    except BaseException:
        processor.store.close()
        raise
    settings = ReceiverSettings(
        max_body_bytes=options.max_body_bytes,
        metrics_token=options.metrics_token,
        metrics_bind=options.metrics_bind,
    )
    app = create_app(config, processor=processor, settings=settings)
    helpdesks = {name: instance.type for name, instance in config.instances.items()}
    count_api_errors(processor, receiver_of(app).metrics.api_errors, helpdesks)

    waitress: Any = importlib.import_module("waitress")  # untyped: no stubs are needed
    try:
        with _address_in_use(options.host, options.port, "--port"):
            server: Any = waitress.create_server(
                app,
                host=options.host,
                port=options.port,
                threads=options.threads,
                ident="escbridge",
                # waitress reads each request whole before a thread sees it; these bound what a
                # slow or broken client costs: a connection silent this long is closed (its
                # default is 120 s), and a body over the limit is refused by waitress itself.
                channel_timeout=CHANNEL_TIMEOUT,
                max_request_body_size=options.max_body_bytes,
            )
    except BaseException:
        processor.store.close()
        raise
    try:
        metrics_server, metrics_at = _metrics_listener(waitress, app, options.metrics_bind)
    except BaseException:  # e.g. the address is taken: nothing else has started yet
        server.close()
        processor.store.close()
        raise
    port = int(server.effective_port)
    workers = processor.settings.concurrency if options.workers is None else options.workers
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
    working = plural(workers, "worker thread") if workers else "receive only: `escbridge worker`"
    say(
        f"escbridge serve: listening on http://{options.host}:{port} "
        f"({plural(len(config.instances), 'instance')}, {working}, "
        f"store {safe_url(processor.store.url)})"
    )
    log.info("listening", extra={"host": options.host, "port": port, "workers": workers})
    if metrics_server is not None:
        say(f"escbridge serve: /metrics on {metrics_at} only")
        log.info("metrics listener", extra={"bind": metrics_at})
    if ready is not None:
        ready(port)
    try:
        while not stop.wait(0.5):
            if not http.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                raise ServerStoppedError("the HTTP server stopped unexpectedly")
    finally:
        if metrics_server is not None:  # a scrape in flight may finish; no new connections
            metrics_server.accepting = False
            metrics_server.pull_trigger()
            metrics_server.task_dispatcher.shutdown(timeout=1)
        _shutdown(server, pool, stop, options.grace)
        processor.store.close()


def _metrics_listener(waitress: Any, app: Any, bind: str | None) -> tuple[Any, str]:
    """The listener of ``--metrics-bind`` (a server of its own, on its own thread) and where.

    Its requests are marked (``on_listener``), which is how the /metrics route knows where
    they arrived; and a scrape never waits for a thread behind webhook deliveries.
    """
    if not bind:
        return None, ""
    address = BindAddress.parse(bind)
    where: dict[str, Any] = (
        {"unix_socket": address.path}
        if address.path is not None
        else {
            "host": address.host if address.host not in ("", "*") else "0.0.0.0",
            "port": address.port,
        }
    )
    with _address_in_use(
        str(where.get("host", address.path)), where.get("port", 0), "--metrics-bind"
    ):
        server: Any = waitress.create_server(
            on_listener(app, METRICS_LISTENER), threads=2, ident="escbridge", **where
        )
    threading.Thread(target=server.run, name="escbridge-metrics", daemon=True).start()
    if address.path is None:  # port 0: the one it got
        address = BindAddress(address.host, int(server.effective_port))
    return server, str(address)


def _check_free(host: str, port: int, option: str) -> None:
    """AddressInUseError at once when another process listens on ``host:port``.

    Loading escbridge.yaml contacts the helpdesks (JWKS, agent checks), whose warnings would
    otherwise come first and the refusal only after them. The server's own bind still
    decides: the port can be taken in between, and is then reported the same way.
    """
    if not port:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return  # not an address: the server says so itself
    with _address_in_use(host, port, option):
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
                probe.bind(address)


@contextlib.contextmanager
def _address_in_use(host: str, port: int, option: str) -> Iterator[None]:
    """A taken port as AddressInUseError (one line naming the option and the fix)."""
    from escbridge.errors import AddressInUseError

    try:
        yield
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise AddressInUseError(host, port, option) from None


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
    # Close the listening socket: a client connecting now is refused at once instead of waiting
    # in the backlog for its own timeout (a helpdesk then retries the delivery later).
    server.close()
    log.info("stopped")
