"""The typed errors of the whole project, so callers branch on types, never on message text.

Every error escbridge raises on purpose is defined here::

    EscbridgeError
    ├── InvalidInputError (carries Problem: file, line, key path, message)
    │   └── MatrixError · ConfigError · TicketError
    ├── WebhookAuthError (401) ── WebhookKeyUnavailable (503: the key cannot be fetched yet)
    ├── WebhookPayloadError (400) ── PayloadNotJsonError
    ├── RequestBodyError (a body that could not be read: 400)
    ├── StoreUnavailableError (503 + Retry-After) ── StoreSchemaError
    ├── StoreDataError (a value the store cannot hold: 400, never 503)
    ├── ConnectorLoadError ── PluginLoadError (one plugin; the others still work)
    ├── UnknownGroupError (a matrix group the helpdesk does not have) ── AmbiguousGroupError
    ├── ApiError (a helpdesk answered with an error; status, body excerpt, request id)
    │   ├── AuthError (401) · PermissionDeniedError (403) · NotFound (404)
    │   ├── Conflict (409) ── TicketChanged (carries the fresh ticket)
    │   ├── RateLimited (429; retry_after, resume_at) · ValidationError (400/422; fields)
    │   └── TransientError (5xx, timeout, connection failure after every retry)
    │       └── OutcomeUnknown (a write that may have landed: never repeated blindly)
    ├── ProcessingError ── ApplyFailedError · UnknownInstanceError
    ├── LockLostError · LeaseLostError (another worker or run took over)
    └── ServerStoppedError · DemoError
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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


class PluginLoadError(ConnectorLoadError):
    """One plugin could not be loaded; the others still work."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"connector plugin '{plugin}': {reason}")


# --------------------------------------------------------------------------- helpdesk APIs


@dataclass(frozen=True)
class FieldError:
    """One field a helpdesk rejected, e.g. ``("status", "closed prevents ticket update", ...)``."""

    field: str
    message: str
    code: str | None = None


class ApiError(EscbridgeError):
    """A helpdesk answered with an error (or could not be reached).

    Carries what a support engineer needs to find the call in the helpdesk's logs — status,
    the start of the body, the request id — and never the credentials.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body_excerpt: str = "",
        request_id: str | None = None,
        method: str = "",
        url: str = "",
        code: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.body_excerpt = body_excerpt
        self.request_id = request_id
        self.method = method
        self.url = url
        self.code = code
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.method} {self.url}".strip()
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        parts = [f"{where}: {status}: {self.message}" if where else f"{status}: {self.message}"]
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return " — ".join(parts)


class AuthError(ApiError):
    """401: the credentials were not accepted (wrong, expired or revoked)."""


class PermissionDeniedError(ApiError):
    """403: authenticated, but this user may not do this (e.g. an agent token on an admin API).

    Named so as not to shadow the builtin ``PermissionError``.
    """


class NotFound(ApiError):
    """404: no such record (or not visible to this user)."""


class Conflict(ApiError):
    """409: the record changed since it was read (Zendesk safe_update); re-fetch and re-decide."""


class RateLimited(ApiError):
    """429 (or a spent quota) that retrying within the policy could not get past.

    ``retry_after`` is in seconds; ``resume_at`` is the instant the quota comes back when the
    helpdesk says so (Zoho's daily credits): sync stops and resumes there, losing nothing.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        resume_at: datetime | None = None,
        **kw: Any,
    ) -> None:
        self.retry_after = retry_after
        self.resume_at = resume_at
        super().__init__(message, **kw)


class ValidationError(ApiError):
    """400/422: the helpdesk rejected the request's content; ``fields`` says which and why."""

    def __init__(self, message: str, *, fields: tuple[FieldError, ...] = (), **kw: Any) -> None:
        self.fields = fields
        super().__init__(message, **kw)

    def _text(self) -> str:
        text = super()._text()
        if self.fields:
            text += " (" + "; ".join(f"{f.field}: {f.message}" for f in self.fields) + ")"
        return text


class TransientError(ApiError):
    """5xx, timeout or connection failure that persisted through every retry allowed."""


class UnknownGroupError(EscbridgeError):
    """The matrix routes to a group (or team, department) this helpdesk instance does not have."""

    def __init__(self, name: str, instance: str = "", known: Sequence[str] = ()) -> None:
        self.name = name
        self.instance = instance
        self.known = tuple(known)
        where = f" on {instance}" if instance else ""
        hint = f" (known: {', '.join(sorted(self.known)[:20])})" if self.known else ""
        super().__init__(f"no group named {name!r}{where}{hint}")


class ServerStoppedError(EscbridgeError):
    """A server escbridge runs (the receiver of `escbridge serve`) stopped without being asked."""


class DemoError(EscbridgeError):
    """The demo cannot run here (a missing distribution such as escbridge-webhooks, …)."""


class TicketChanged(Conflict):
    """A concurrent edit a connector saw before writing: the ticket's ``updated_at`` moved since
    the caller read it (helpdesks without a conditional update). ``current`` is the ticket as it
    is now (an ``escbridge.model.Ticket``), so the re-decision needs no second read."""

    def __init__(self, message: str, *, current: Any = None, **kw: Any) -> None:
        self.current = current
        super().__init__(message, **kw)


class AmbiguousGroupError(UnknownGroupError):
    """A matrix group name that matches several destinations (Zoho Desk: a team name used in
    several departments); ``hint`` says how to write it unambiguously."""

    def __init__(
        self, name: str, instance: str = "", known: Sequence[str] = (), hint: str = ""
    ) -> None:
        super().__init__(name, instance, known)
        self.hint = hint
        where = f" on {instance}" if instance else ""
        self.args = (f"group name {name!r} is ambiguous{where}" + (f": {hint}" if hint else ""),)


# ----------------------------------------------------------------- processing, store, sync


class ProcessingError(EscbridgeError):
    """Processing one ticket failed; ``retryable`` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        self.retryable = retryable
        super().__init__(message)


class ApplyFailedError(ProcessingError):
    """The connector answered an apply with a failure (a conflict past its retries included)
    instead of raising."""


class UnknownInstanceError(ProcessingError):
    """An event or a sync names an instance this process has no connector for."""

    def __init__(self, instance: str, known: Sequence[str] = ()) -> None:
        self.instance = instance
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no connector for instance '{instance}' (configured: {names})", retryable=False
        )


class LockLostError(EscbridgeError):
    """This worker's per-ticket lock expired and another worker took the ticket over."""


class LeaseLostError(EscbridgeError):
    """A sync run's lease expired and another run took the instance over: this run stops."""


class OutcomeUnknown(TransientError):
    """A write whose request may have reached the helpdesk, but whose answer did not come back
    (read timeout, connection reset after sending, 500/502/504, an answer cut off): it may have
    been carried out. Never repeated blindly: the connector waits for an in-flight request to
    finish, reads the ticket again and writes only what is missing. A ``TransientError``, so code
    that does not know it still treats it as "retry later"; ``method`` and ``url`` (credentials
    removed) name the call."""


class PayloadNotJsonError(WebhookPayloadError):
    """A genuine webhook body that is not JSON at all (a syntax error), as opposed to JSON that
    escbridge refuses to hold (a NUL, a lone surrogate, a limit passed). A parser that can
    salvage a broken body (Freshdesk renders placeholders as raw text) catches only this one."""


class StoreDataError(EscbridgeError):
    """The store refused a value for what it is, not for an outage: a NUL in PostgreSQL text,
    a lone surrogate, a value longer than its column. Retrying cannot help, so callers answer
    4xx (never 503, which a helpdesk retries for days) and name the field, never its value."""


class RequestBodyError(EscbridgeError):
    """A request body that could not be read: a broken transfer encoding (an invalid chunk size,
    a chunked body cut short) or a client gone mid-body. The sender's fault, answered 400 (never
    500); the message names the server's exception type only, never bytes that were sent."""


class WebhookKeyUnavailable(WebhookAuthError):
    """A webhook that cannot be verified yet: the key it names could not be fetched in the short
    time the door waits (the helpdesk's key server hangs or is down). Never accepted — it is a
    ``WebhookAuthError`` — but not known forged either: a receiver answers 503 with
    ``retry_after`` so the sender delivers it again, rather than the 401 of a forged request."""

    def __init__(self, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebhookRegistrationError(EscbridgeError):
    """A sandbox helpdesk refused the receiver's webhook URL (Zoho Desk GETs the URL first and
    wants a 200): nothing answers there yet. ``instance`` and ``url`` say which and where."""

    def __init__(self, instance: str, url: str, reason: str) -> None:
        self.instance = instance
        self.url = url
        super().__init__(f"{instance} refused the webhook URL {url}: {reason}")


class StoreUrlError(InvalidInputError, ValueError):
    """A store URL escbridge cannot use: not a URL, an unsupported scheme, a malformed port.
    Raised before any connection is tried; also a ``ValueError`` for callers of ``parse_url``
    that predate it. Its one problem names where the URL came from (``--store`` or
    escbridge.yaml:line ``store``) and the fix."""

    def __init__(self, message: str, *, where: str = "store") -> None:
        self.reason = message
        super().__init__([Problem(where, None, "", message)])


class AddressInUseError(InvalidInputError):
    """A port escbridge was told to listen on is taken by another process. ``option`` is the
    command-line option that chose it (``--port``, ``--metrics-bind``), for the fix."""

    def __init__(self, host: str, port: int, option: str = "--port") -> None:
        self.host, self.port, self.option = host, port, option
        fix = "pass --port N" if option == "--port" else f"pass another {option}"
        message = f"port {port} on {host} is in use — stop the other process or {fix}"
        super().__init__([Problem(option, None, "", message)])


def error_summary(error: BaseException) -> str:
    """``KeyError at parse.py:42 in _clean_id``: what to log or print of an unexpected error.

    Not its message nor a traceback's: those often quote the input that caused them (a key,
    a value, SQL parameters), and a log or a terminal must not carry what a stranger wrote.
    """
    import os.path

    where = ""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" at {os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
    return f"{type(error).__name__}{where}"
