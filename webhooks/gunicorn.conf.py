"""gunicorn settings for the escbridge receiver: ``gunicorn -c webhooks/gunicorn.conf.py
escbridge_webhooks.wsgi:app``. The settings live in the package (installed with it, usable
as ``-c python:escbridge_webhooks.gunicorn_conf``); this file only points at them."""

from escbridge_webhooks.gunicorn_conf import *  # noqa: F403
from escbridge_webhooks.gunicorn_conf import child_exit, on_starting  # noqa: F401
