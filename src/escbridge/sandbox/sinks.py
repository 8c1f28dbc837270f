"""Local stand-ins for where notifications go: an HTTP sink and an SMTP sink, on 127.0.0.1.

`escbridge demo` points its notification targets at them (nothing leaves the machine; see
escbridge.sandbox.demo_notify), and the tests use them to see exactly what escbridge sent:

- :class:`HttpSink` records every request (Slack incoming webhooks, Teams workflow URLs, signed
  webhooks) and answers as scripted per path: a status with headers and body, an answer held
  back until the test releases it (the client gives up first: a read timeout after the request
  was taken), or a connection dropped after the request was read (an answer lost). Under
  ``/api/`` it answers like Slack's Web API: ``chat.postMessage`` keeps the message (with its
  metadata) and ``conversations.history`` returns what a channel holds; a held or dropped
  answer to ``chat.postMessage`` still posts the message (Slack took it, the answer was lost).
- :class:`SmtpSink` is an aiosmtpd server (STARTTLS when given a certificate, AUTH LOGIN and
  PLAIN when given a user) keeping each message with its envelope. It answers as a failing
  server would when told: a recipient refused, the DATA command refused, the message refused,
  held or its answer lost. aiosmtpd is optional: the sink says how to install it when it is
  missing.

Both are context managers and thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Answer",
    "HttpSink",
    "Mail",
    "Request",
    "SinkUnavailable",
    "SmtpSink",
]

#: How long a held request waits at most for :meth:`HttpSink.release` (a test that forgets to
#: release must not hang the suite).
HOLD_LIMIT = 60.0

#: What aiosmtpd warns when AUTH is required without TLS (as a plain SMTP sink with a user does).
PLAIN_AUTH_WARNING = "Requiring AUTH while not requiring TLS"


class SinkUnavailable(RuntimeError):
    """A sink cannot run here (aiosmtpd is not installed)."""


@dataclass(frozen=True)
class Answer:
    """What the sink answers to one request. ``hold``: wait for :meth:`HttpSink.release` before
    answering (the client times out first); ``drop``: close the connection without an answer
    once the request is read (the request was taken, its answer is lost)."""

    status: int = 200
    body: bytes | str | Mapping[str, Any] = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False
    drop: bool = False

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "text/plain; charset=utf-8"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """One request as the sink read it: the raw body is what a signature is computed over."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int | None  # the status sent back; None: held and released late, or dropped

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Sink(ABC):
    """What both sinks share: a server on ``host``, used as a context manager, whose held
    answers are let go by :meth:`release` (and by :meth:`stop`, so no thread is left waiting)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    @abstractmethod
    def start(self) -> Self:
        """Start serving on a free port (then in :attr:`port`)."""

    @property
    @abstractmethod
    def serving(self) -> bool:
        """Whether the server is up."""

    @abstractmethod
    def _shut_down(self) -> None:
        """Stop the server if it is up."""

    def stop(self) -> None:
        self._release.set()
        self._shut_down()

    def release(self) -> None:
        """Let held answers go (their clients may have given up by now); later ones answer at
        once."""
        self._release.set()

    def __enter__(self) -> Self:
        return self if self.serving else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


class HttpSink(_Sink):
    """A recording HTTP server on loopback; see the module's docstring."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self._requests: list[Request] = []
        self._scripts: dict[str, deque[Answer]] = {}
        self._defaults: dict[str, Answer] = {}
        self._slack: dict[str, list[dict[str, Any]]] = {}  # channel -> messages posted
        self._server: ThreadingHTTPServer | None = None

    # --- set-up ---------------------------------------------------------------------------

    def start(self) -> Self:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the sink is read through its records

            def do_POST(self) -> None:
                sink._serve(self)

            def do_GET(self) -> None:
                sink._serve(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((self.host, 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="http-sink", daemon=True).start()
        return self

    @property
    def serving(self) -> bool:
        return self._server is not None

    def _shut_down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "/") -> str:
        """The sink's URL for ``path`` (each target gets its own path)."""
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    @property
    def slack_api(self) -> str:
        """Base URL of the Slack Web API stand-in (a bot target's ``api_url``)."""
        return self.url("/api")

    def script(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` with ``answers``, in order, then as before."""
        with self._lock:
            self._scripts.setdefault(_path(path), deque()).extend(answers)

    def answer(self, path: str, answer: Answer) -> None:
        """Answer every request to ``path`` with ``answer`` (after any scripted ones)."""
        with self._lock:
            self._defaults[_path(path)] = answer

    # --- what arrived ---------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == _path(path)]

    def slack_messages(self, channel: str) -> list[dict[str, Any]]:
        """What the Slack stand-in's ``channel`` holds (chat.postMessage bodies)."""
        with self._lock:
            return list(self._slack.get(channel, ()))

    # --- serving --------------------------------------------------------------------------

    def _next_answer(self, path: str) -> Answer | None:
        with self._lock:
            queued = self._scripts.get(path)
            if queued:
                return queued.popleft()
            return self._defaults.get(path)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        answer = self._next_answer(parts.path)
        slack = parts.path.startswith("/api/")
        if answer is None:
            answer = self._slack_api(parts.path, parse_qs(parts.query), body) if slack else Answer()
        elif slack and (answer.hold or answer.drop):
            self._slack_api(parts.path, parse_qs(parts.query), body)  # taken; the answer is lost
        answered: int | None = None if (answer.drop or answer.hold) else answer.status
        request = Request(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            answered=answered,
        )
        with self._lock:
            self._requests.append(request)
        if answer.drop:
            handler.close_connection = True
            _reset(handler.connection)
            return
        if answer.hold:
            self._release.wait(HOLD_LIMIT)
        data, kind = answer.payload()
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            handler.close_connection = True  # the client gave up on a held answer

    def _slack_api(self, path: str, query: dict[str, list[str]], body: bytes) -> Answer:
        """Slack's Web API, the two methods a bot target uses (api.slack.com/methods)."""
        method = path.rsplit("/", 1)[-1]
        if method == "chat.postMessage":
            try:
                message = json.loads(body)
            except ValueError:
                return Answer(200, {"ok": False, "error": "invalid_json"})
            channel = str(message.get("channel") or "")
            if not channel:
                return Answer(200, {"ok": False, "error": "channel_not_found"})
            with self._lock:
                posted = self._slack.setdefault(channel, [])
                ts = f"{1_700_000_000 + len(posted)}.000100"
                posted.append({**message, "ts": ts})
            return Answer(200, {"ok": True, "channel": channel, "ts": ts})
        if method == "conversations.history":
            channel = (query.get("channel") or [""])[0]
            with self._lock:
                held = list(reversed(self._slack.get(channel, [])))  # newest first, as Slack
            with_metadata = (query.get("include_all_metadata") or ["false"])[0] == "true"
            messages = [
                {k: v for k, v in m.items() if with_metadata or k != "metadata"} for m in held
            ]
            return Answer(200, {"ok": True, "messages": messages, "has_more": False})
        return Answer(200, {"ok": False, "error": "unknown_method"})


def _path(path: str) -> str:
    return "/" + path.lstrip("/")


def _reset(connection: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the client sees the connection lost, no answer."""
    try:
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        connection.close()
    except OSError:
        pass


# --- SMTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One message the SMTP sink accepted, with its envelope and the authenticated user."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    user: str | None
    tls: bool  # whether it came over STARTTLS

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


class SmtpSink(_Sink):
    """An aiosmtpd server on loopback keeping what it is sent (see the module's docstring).

    ``tls``: an SSL context with the server's certificate loaded, to offer STARTTLS (then
    required before AUTH and MAIL). ``user``/``password``: AUTH LOGIN and PLAIN are offered and
    required. ``hold``: answer the final ``.`` of a message only after :meth:`release` (the
    message is kept first: a sender that gives up does not know it arrived); ``drop``: keep
    the message, then drop the connection without answering (the answer lost).

    Refusals, set (and cleared) at any time, each an SMTP reply such as ``"451 4.3.0 try
    later"``: ``refuse_recipient`` answers every RCPT, ``refuse_data`` the DATA command (both
    before the message is sent: nothing is kept), ``refuse`` the message's final ``.`` (the
    message was sent whole and is not kept).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        user: str | None = None,
        password: str | None = None,
        hold: bool = False,
        drop: bool = False,
    ) -> None:
        try:
            import aiosmtpd  # noqa: F401 - only to say clearly when it is missing
        except ImportError as error:
            raise SinkUnavailable("the SMTP sink needs aiosmtpd: pip install aiosmtpd") from error
        super().__init__(host)
        self.tls = tls
        self.user = user
        self.password = password
        self.hold = hold
        self.drop = drop
        self.refuse_recipient: str | None = None
        self.refuse_data: str | None = None
        self.refuse: str | None = None
        self.logins: list[tuple[str, bool]] = []  # (mechanism, succeeded)
        self._mails: list[Mail] = []
        self._controller: Any = None

    def start(self) -> Self:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

        sink = self

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == sink.user
                and data.password.decode() == sink.password
            )
            with sink._lock:
                sink.logins.append((mechanism, ok))
            return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

        class Server(SMTP):
            @syntax("DATA")
            async def smtp_DATA(self, arg: str) -> None:
                if sink.refuse_data:  # before the 354: the message is never sent
                    await self.push(sink.refuse_data)
                    return
                await super().smtp_DATA(arg)

        class Sink(Controller):
            def factory(self) -> SMTP:
                return Server(self.handler, **self.SMTP_kwargs)

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if sink.refuse_recipient:
                    return sink.refuse_recipient
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(options)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.refuse:
                    return sink.refuse
                login = session.auth_data
                mail = Mail(
                    sender=str(envelope.mail_from),
                    recipients=tuple(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or envelope.content),
                    user=login.decode() if isinstance(login, bytes) else login,
                    tls=session.ssl is not None,
                )
                with sink._lock:
                    sink._mails.append(mail)
                if sink.drop:
                    server.transport.abort()
                    return "421 4.3.0 dropped"  # never reaches the client
                if sink.hold:
                    await asyncio.get_running_loop().run_in_executor(
                        None, sink._release.wait, HOLD_LIMIT
                    )
                return "250 2.0.0 queued"

        logging.getLogger("mail.log").addFilter(_not_noise)
        if self.user is not None and self.tls is None:
            # A loopback stand-in for a `security: none` server: AUTH in the clear is the point.
            warnings.filterwarnings("ignore", PLAIN_AUTH_WARNING, UserWarning, "aiosmtpd")
        port = _free_port(self.host)
        options: dict[str, Any] = {
            "auth_require_tls": self.tls is not None,
            "auth_required": self.user is not None,
            "require_starttls": self.tls is not None,
        }
        if self.user is not None:
            options["authenticator"] = authenticate
        if self.tls is not None:
            options["tls_context"] = self.tls
        self._controller = Sink(
            Handler(), hostname=self.host, port=port, ready_timeout=10.0, **options
        )
        self._controller.start()
        self.port = port
        return self

    @property
    def serving(self) -> bool:
        return self._controller is not None

    def _shut_down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self._mails)


def _not_noise(record: logging.LogRecord) -> bool:
    """aiosmtpd logs on every login that a field it sets itself is deprecated, and on every
    connection of a plain sink that AUTH without TLS is required: noise here."""
    said = record.getMessage()
    return "login_data is deprecated" not in said and "auth_require_tls == False" not in said


def _free_port(host: str) -> int:
    """A port free on ``host`` now (aiosmtpd's controller wants a number, not 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
