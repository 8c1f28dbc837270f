"""gunicorn settings for the receiver: ``gunicorn -c python:escbridge_webhooks.gunicorn_conf
escbridge_webhooks.wsgi:app`` (webhooks/gunicorn.conf.py is the same, as a file).

Every setting can be overridden on the command line or through ``GUNICORN_CMD_ARGS``; the
``ESCBRIDGE_*`` variables below are shortcuts.

- threaded workers (gthread): a webhook is a short request that waits on one database write,
  and helpdesks keep connections alive between deliveries;
- JSON log lines from gunicorn itself too, and no separate access log: the receiver logs one
  structured line per delivery, with its request id;
- Prometheus multi-process mode, so /metrics adds up every worker whichever answers the scrape.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any

bind = os.environ.get("ESCBRIDGE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("ESCBRIDGE_WEB_WORKERS", str(min(8, (os.cpu_count() or 1) * 2))))
worker_class = "gthread"
threads = int(os.environ.get("ESCBRIDGE_WEB_THREADS", "4"))
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 20  # on SIGTERM, in-flight requests get this long to finish
keepalive = 5
backlog = 2048
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
