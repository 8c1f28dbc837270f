"""``escbridge_webhooks.wsgi:app`` — the receiver for gunicorn (or any WSGI server).

Reads escbridge.yaml from ``ESCBRIDGE_CONFIG`` (default: ./escbridge.yaml) and the receiver's
knobs from ``ESCBRIDGE_WEBHOOK_*`` (see ReceiverSettings.from_env). Each gunicorn worker
imports this after the fork, so each has its own store connections (do not ``--preload``).
No worker runs here: run `escbridge worker` beside it.
"""

from __future__ import annotations

import logging
import os

from escbridge.config import load_config
from escbridge.errors import EscbridgeError
from escbridge_webhooks.app import ReceiverSettings, create_app
from escbridge_webhooks.logs import configure_logging, install_secrets

__all__ = ["app"]

if not logging.getLogger().handlers:  # gunicorn.conf.py already set JSON logging up
    configure_logging(os.environ.get("ESCBRIDGE_LOG_LEVEL", "INFO"))

#: The exit code gunicorn reads as "the worker failed to boot": it stops instead of forking
#: worker after worker into the same error.
WORKER_BOOT_ERROR = 3

try:
    _config = load_config(os.environ.get("ESCBRIDGE_CONFIG", "escbridge.yaml"))
    install_secrets(_config.secret_values)
    app = create_app(_config, settings=ReceiverSettings.from_env())
except EscbridgeError as _error:  # a config or store problem: its lines, not a traceback
    for _line in getattr(_error, "problems", None) or [_error]:
        logging.getLogger("escbridge_webhooks.wsgi").critical("%s", _line)
    raise SystemExit(WORKER_BOOT_ERROR) from None
