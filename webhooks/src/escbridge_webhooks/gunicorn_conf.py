"""gunicorn settings for the receiver: ``gunicorn -c python:escbridge_webhooks.gunicorn_conf
escbridge_webhooks.wsgi:app`` (webhooks/gunicorn.conf.py is the same, as a file).

Every setting can be overridden on the command line or through ``GUNICORN_CMD_ARGS``; the
``ESCBRIDGE_*`` variables below are shortcuts.

- threaded workers (gthread): a webhook is a short request that waits on one database write,
  and helpdesks keep connections alive between deliveries;
- each request is read whole by the worker's event loop before a thread serves it
  (escbridge_webhooks.gworker.BufferingThreadWorker), so a slow or stalled client holds no
  thread; a request not complete within ``ESCBRIDGE_WEBHOOK_BODY_TIMEOUT`` seconds (default
  10, headers included) is answered 408 and closed. In production put a buffering proxy in
  front as well (deploy/nginx.conf): it terminates TLS and limits connections per
  client address, which gunicorn cannot;
- JSON log lines from gunicorn itself too, and no separate access log: the receiver logs one
  structured line per delivery, with its request id;
- Prometheus multi-process mode, so /metrics adds up every worker whichever answers the scrape.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

bind = [os.environ.get("ESCBRIDGE_BIND", "127.0.0.1:8000")]
if os.environ.get("ESCBRIDGE_METRICS_BIND"):  # /metrics answers only on this listener
    bind.append(os.environ["ESCBRIDGE_METRICS_BIND"])
workers = int(os.environ.get("ESCBRIDGE_WEB_WORKERS", str(min(8, (os.cpu_count() or 1) * 2))))
worker_class = "escbridge_webhooks.gworker.BufferingThreadWorker"  # gthread, reading ahead
threads = int(os.environ.get("ESCBRIDGE_WEB_THREADS", "4"))
# Open connections per worker: being read, kept alive or being served. Each one being read
# may buffer up to ESCBRIDGE_WEBHOOK_MAX_BODY_BYTES (1 MiB), so this bounds a worker's memory
# (256 MiB at worst); helpdesks open a few connections each. At the limit the worker stops
# accepting until one is answered, closed or past its deadline; the rest wait in the backlog.
worker_connections = int(os.environ.get("ESCBRIDGE_WEB_CONNECTIONS", "256"))
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 20  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5
# Connections the kernel queues while every worker is at worker_connections (beyond it new
# connection attempts are dropped, and retried by the client). Helpdesks give a delivery
# 5-10 s, so a deeper queue would only hold requests whose sender has given up already.
backlog = 512
preload_app = False  # each worker opens its own database connections after the fork
accesslog = None
control_socket_disable = True  # gunicorn >= 24: no shared ~/.gunicorn socket between instances
loglevel = os.environ.get("ESCBRIDGE_LOG_LEVEL", "info").lower()

logger_class = "escbridge_webhooks.gunicorn_logging.JsonLogger"  # JSON lines, no access log

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="escbridge-metrics-")


def on_starting(_server: Any) -> None:
    """Forget the counters of a previous run (files of dead processes)."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
