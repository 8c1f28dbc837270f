"""gunicorn's own log lines as JSON, like the receiver's, and no per-request access log.

``logger_class = "escbridge_webhooks.gunicorn_logging.JsonLogger"`` (set by gunicorn_conf). The
receiver writes one structured line per delivery with its request id, so gunicorn's access log
would only repeat it — and gunicorn formats an access line for every request whenever any
logging config is given, even one that drops it; this class makes that cost nothing.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from escbridge_webhooks.logs import JsonFormatter, configure_logging

__all__ = ["JsonLogger"]


def _make() -> Any:
    # gunicorn ships no type information: the class is built from its base at run time.
    glogging: Any = importlib.import_module("gunicorn.glogging")
    base: Any = glogging.Logger

    def setup(self: Any, cfg: Any) -> None:
        base.setup(self, cfg)
        formatter = JsonFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
        root = logging.getLogger()
        if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
            configure_logging(self.loglevel)  # the application's loggers, same stream and form

    def access(self: Any, *_args: Any, **_kwargs: Any) -> None:
        return None

    return type("JsonLogger", (base,), {"setup": setup, "access": access, "__doc__": __doc__})


JsonLogger: Any = _make()
