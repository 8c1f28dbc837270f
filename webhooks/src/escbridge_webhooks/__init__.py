"""The escbridge webhook receiver: a thin Flask adapter in front of the connectors and the store."""

__version__ = "0.1.0"
