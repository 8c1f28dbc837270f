"""The typed errors of the whole project, so callers branch on types, never on message text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class EscbridgeError(Exception):
    """Base of every error escbridge raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file: where (file, line, key path) and what was expected."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class InvalidInputError(EscbridgeError):
    """A file an admin wrote (matrix, config, ticket) is wrong; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class MatrixError(InvalidInputError):
    """The escalation matrix is invalid."""


class ConfigError(InvalidInputError):
    """escbridge.yaml is invalid (or names a secret that is not set)."""


class TicketError(InvalidInputError):
    """A ticket file given to `escbridge explain` is not a valid normalised ticket."""


class WebhookAuthError(EscbridgeError):
    """A webhook request is not genuine. The message is for logs; callers answer 401 without it."""


class WebhookPayloadError(EscbridgeError):
    """A genuine webhook request whose body cannot be understood (answered with 400)."""


class StoreUnavailableError(EscbridgeError):
    """The store cannot accept or read data right now; callers answer 503 so the sender retries."""


class StoreSchemaError(StoreUnavailableError):
    """The database is at another schema version than this escbridge: `escbridge db upgrade`."""


class ConnectorLoadError(EscbridgeError):
    """A connector plugin is missing or failed to import."""
