"""The escbridge webhook receiver: a thin Flask adapter in front of the connectors and the store.

``create_app(config)`` builds the app; ``escbridge_webhooks.wsgi:app`` serves it under gunicorn;
``escbridge_webhooks.serve`` is `escbridge serve` (receiver + embedded workers, one process).
"""

from escbridge_webhooks.app import ReceiverSettings, create_app

__version__ = "0.1.0"

__all__ = ["ReceiverSettings", "__version__", "create_app"]
