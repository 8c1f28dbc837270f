"""A gunicorn worker that gives a thread only a request that has fully arrived.

gunicorn's threaded worker (gthread) hands a connection to a thread as soon as its first bytes
arrive; the thread then blocks reading the headers and the body, with no deadline. A client
that sends half a body and goes quiet holds that thread for good: four such clients stopped
``/healthz`` on a worker with four threads. ``BufferingThreadWorker`` reads each request in the
worker's event loop instead, without blocking (the headers, then the body: its
Content-Length, or chunks up to the last one), and hands it to a thread only once it is
complete, so a thread never waits on a client. A request not complete within
``ESCBRIDGE_WEBHOOK_BODY_TIMEOUT`` seconds (default 10; headers included, so a slowloris
trickle counts) is answered 408 and closed. A body over ``ESCBRIDGE_WEBHOOK_MAX_BODY_BYTES``
is handed over as soon as that is known, so the receiver answers its 413, and the connection
is then closed rather than kept alive.

A connection that gunicorn closes "gracefully" (FIN, then reading what the client still
sends) is drained by the event loop without blocking it; gunicorn 27 drains it with blocking
reads there, up to 2 s per client that does not close its end, during which nothing else is
accepted or handed over. A stopping worker gives requests still arriving 2 s, not the whole
``graceful_timeout``.

Not buffered, served as gunicorn does (put TLS in front, see deploy/nginx.conf):
TLS terminated by gunicorn itself, and HTTP/2 with prior knowledge.

Written for gunicorn 27's gthread (webhooks/pyproject.toml pins >=27,<28; with 23, for one, a
connection that never sends a byte is never closed, and a pipelined request is not served). It
overrides ``enqueue_req``, ``handle_request`` and ``murder_keepalived``, and relies on
``TConn``'s ``sock``, ``parser``, ``init()`` and ``close()`` and on the parser's unreader.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import os
import selectors
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from escbridge_webhooks.app import ReceiverSettings

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "BufferingThreadWorker",
    "Framing",
    "Verdict",
    "body_timeout_from_env",
]

DEFAULT_BODY_TIMEOUT = 10.0  # seconds for a whole request; Zendesk itself gives up after 10 s
HEADER_LIMIT = 64 * 1024  # a header block larger than this is refused with 431
CHUNK_LINE_LIMIT = 4096  # a chunk-size line (or trailer section) longer than this: 400
CHUNK_OVERHEAD = 64 * 1024  # chunk framing allowed beyond twice the body limit before a 413
LINGER_SECONDS = 2.0  # how long a gracefully closed connection may keep sending (gunicorn's)
LINGER_BYTES = 64 * 1024  # and how much of it is read before the socket is closed anyway
RECV_SIZE = 64 * 1024

_STATUS_TEXT = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


def body_timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """``ESCBRIDGE_WEBHOOK_BODY_TIMEOUT``: seconds a client has to send a whole request."""
    env = os.environ if env is None else env
    raw = env.get("ESCBRIDGE_WEBHOOK_BODY_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_BODY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"ESCBRIDGE_WEBHOOK_BODY_TIMEOUT={raw!r} is not a number") from None
    if not value > 0:
        raise ValueError("ESCBRIDGE_WEBHOOK_BODY_TIMEOUT must be positive")
    return value


class Verdict(enum.Enum):
    """What to do with a connection after the bytes read so far."""

    MORE = "more"  # the request is not complete yet
    READY = "ready"  # hand it to a thread: complete, too large, or refused by gunicorn's parser
    REFUSE = "refuse"  # answer ``Framing.refusal`` from the event loop and close


class Framing:
    """Finds where one HTTP/1.x request ends, from bytes fed as they arrive.

    It mirrors the framing rules of gunicorn's parser (``Message.set_body_reader``,
    ``ChunkedReader``) closely enough that a request it calls complete is read by gunicorn
    without another ``recv``; whatever gunicorn refuses from the header block alone (a bad
    Content-Length, an unsupported Transfer-Encoding) is handed over at once to be refused
    there. Each byte is scanned once, so a trickle costs no more than one large read.
    """

    def __init__(self, max_body: int, *, header_limit: int = HEADER_LIMIT) -> None:
        self.max_body = max_body
        self.header_limit = header_limit
        self.buffer = bytearray()
        self.refusal: tuple[int, str] = (400, "")
        self.close_after = False  # over the limit: answer (413) and close, keep nothing alive
        self.expects_continue = False  # the client waits for "100 Continue" before its body
        self._header_end = -1  # index just past the blank line ending the headers
        self._scan = 0  # where the next search for the end of the headers starts
        self._length: int | None = None  # Content-Length, or None for chunked
        self._pos = 0  # chunked: next unparsed byte of ``buffer``
        self._state = "size"  # chunked: "size", "data", "crlf" or "trailers"
        self._chunk_left = 0
        self._decoded = 0  # chunked: body bytes seen so far
        self._continue_sent = False

    @property
    def data(self) -> bytes:
        """The bytes to hand to gunicorn's parser."""
        return bytes(self.buffer)

    def feed(self, data: bytes) -> Verdict:
        self.buffer += data
        if self._header_end < 0:
            verdict = self._headers()
            if verdict is not None:
                return verdict
        if self._length is None:
            return self._chunks()
        complete = len(self.buffer) >= self._header_end + self._length
        return Verdict.READY if complete else Verdict.MORE

    def continue_due(self) -> bool:
        """Whether to send "100 Continue" now (once, when the headers are in)."""
        due = self.expects_continue and self._header_end >= 0 and not self._continue_sent
        self._continue_sent = self._continue_sent or due
        return due

    # --- the header block ---------------------------------------------------------------

    def _headers(self) -> Verdict | None:
        while self.buffer.startswith(b"\r\n"):  # RFC 9112 2.2: empty lines before a request
            del self.buffer[:2]
        end = self.buffer.find(b"\r\n\r\n", max(0, self._scan - 3))
        if end < 0:
            self._scan = len(self.buffer)
            if len(self.buffer) > self.header_limit:
                return self._refuse(431, "request headers too large")
            return Verdict.MORE
        if end > self.header_limit:
            return self._refuse(431, "request headers too large")
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        request_line, fields = lines[0], lines[1:]
        lengths: list[bytes] = []
        codings: list[bytes] = []
        kept = [request_line]
        for line in fields:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",")]
            elif name == b"expect" and value.lower() == b"100-continue":
                # Answered here if the body is wanted; gunicorn must not answer it again.
                self.expects_continue = request_line.endswith(b"HTTP/1.1")
                continue
            kept.append(line)
        if len(kept) != len(lines):
            rest = self.buffer[end:]
            self.buffer = bytearray(b"\r\n".join(kept)) + rest
            end = len(self.buffer) - len(rest)
        self._header_end = end + 4
        self._pos = self._header_end
        if codings:
            if lengths or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                return self._hand_over()  # gunicorn answers 400/501 from the headers alone
            return None  # chunked
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            return self._hand_over()  # gunicorn answers 400 from the headers alone
        self._length = int(lengths[0]) if lengths else 0
        if self._length > self.max_body:
            self.close_after = True
            return self._hand_over()  # the receiver answers 413 from the declared length
        if self._length == 0:
            self.expects_continue = False
        return None

    # --- a chunked body -------------------------------------------------------------------

    def _chunks(self) -> Verdict:
        buf = self.buffer
        while True:
            if self._decoded > self.max_body:
                self.close_after = True
                return Verdict.READY  # the receiver reads max_body + 1 bytes and answers 413
            if self._pos - self._header_end > 2 * self.max_body + CHUNK_OVERHEAD:
                return self._refuse(413, "chunk framing too large")
            if self._state == "size":
                eol = buf.find(b"\r\n", self._pos)
                if eol < 0:
                    if len(buf) - self._pos > CHUNK_LINE_LIMIT:
                        return self._refuse(400, "chunk size line too long")
                    return Verdict.MORE
                line = bytes(buf[self._pos : eol]).split(b";", 1)[0].rstrip(b" \t")
                if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
                    return Verdict.READY  # gunicorn refuses this line without reading more
                self._chunk_left = int(line, 16)
                self._pos = eol + 2
                self._state = "data" if self._chunk_left else "trailers"
            elif self._state == "data":
                take = min(self._chunk_left, len(buf) - self._pos)
                self._pos += take
                self._chunk_left -= take
                self._decoded += take
                if self._chunk_left:
                    if self._decoded > self.max_body:
                        continue  # over the limit: see the top of the loop
                    return Verdict.MORE
                self._state = "crlf"
            elif self._state == "crlf":
                if len(buf) - self._pos < 2:
                    return Verdict.MORE
                if buf[self._pos : self._pos + 2] != b"\r\n":
                    return Verdict.READY  # gunicorn refuses the missing terminator
                self._pos += 2
                self._state = "size"
            else:  # trailers: an empty line, or trailer fields ending with one
                if buf[self._pos : self._pos + 2] == b"\r\n":
                    return Verdict.READY
                if buf.find(b"\r\n\r\n", self._pos) >= 0:
                    return Verdict.READY
                if len(buf) - self._pos > CHUNK_LINE_LIMIT:
                    return self._refuse(400, "chunk trailers too long")
                return Verdict.MORE

    def _hand_over(self) -> Verdict:
        self.expects_continue = False  # no body is wanted: gunicorn must not invite it either
        return Verdict.READY

    def _refuse(self, status: int, reason: str) -> Verdict:
        self.refusal = (status, reason)
        return Verdict.REFUSE


def error_response(status: int, reason: str) -> bytes:
    """A small JSON answer, closing the connection (sent from the event loop)."""
    body = b'{"error": "%s"}' % reason.encode("ascii")
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


@dataclass
class _Filling:
    """A connection whose request is being read in the event loop."""

    framing: Framing
    deadline: float
    peer: str = field(default="")


def _peer(conn: Any) -> str:
    client = getattr(conn, "client", None)
    if isinstance(client, tuple) and len(client) >= 2:
        return f"{client[0]}:{client[1]}"
    return str(client or "-")


def _h2c_sniffer() -> Any:
    """gunicorn's check whether it sniffs a connection for an HTTP/2 preface (or a no)."""
    try:
        negotiation: Any = importlib.import_module("gunicorn.http2.negotiation")
    except ImportError:
        return lambda _cfg, _client: False
    return negotiation.prior_knowledge_allowed


# gunicorn ships no type information.
_ThreadWorker: Any = importlib.import_module("gunicorn.workers.gthread").ThreadWorker
_util: Any = importlib.import_module("gunicorn.util")


class BufferingThreadWorker(_ThreadWorker):  # type: ignore[misc]
    """gthread, with each request read whole in the event loop before a thread serves it.

    ``worker_class = "escbridge_webhooks.gworker.BufferingThreadWorker"`` (gunicorn_conf).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_timeout = body_timeout_from_env()
        self.max_body_bytes = ReceiverSettings.from_env().max_body_bytes
        # Insertion order is deadline order: every deadline is "now + body_timeout".
        self._filling: dict[Any, _Filling] = {}
        self._lingering: dict[Any, float] = {}  # socket -> when it is closed anyway
        self._stop_deadline: float | None = None  # set when the worker starts stopping
        self._passthrough = bool(self.cfg.is_ssl)
        self._sniffs_h2c = _h2c_sniffer()
        if self._passthrough:
            self.log.warning(
                "TLS is terminated by gunicorn: requests are not read ahead, so slow clients "
                "can hold threads; terminate TLS in a proxy (deploy/nginx.conf)"
            )

    # --- gthread's methods ----------------------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """Read the request in the event loop first; a thread gets it when it is complete."""
        if self._passthrough or getattr(conn, "is_http2", False):
            super().enqueue_req(conn)
            return
        if not getattr(conn, "initialized", False) and self._sniffs_h2c(self.cfg, conn.client):
            super().enqueue_req(conn)
            return
        self._own_close(conn)
        framing = Framing(self.max_body_bytes)
        filling = _Filling(framing, time.monotonic() + self.body_timeout, _peer(conn))
        self._filling[conn] = filling
        conn.sock.setblocking(False)
        leftover = self._take_buffered(conn)  # pipelined bytes a thread already read
        if leftover and self._advance(conn, framing.feed(leftover)):
            return
        if self._read(conn):  # usually the whole request is there already: no poller round
            return
        with self._poller_lock():
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def handle_request(self, req: Any, conn: Any) -> bool:
        """Serve the request; close the connection afterwards if its body was over the limit
        (its unread rest would otherwise be drained by the thread, however slowly it comes)."""
        keepalive = bool(super().handle_request(req, conn))
        return keepalive and not getattr(conn, "escbridge_close_after", False)

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """gthread calls this on every turn of its loop (and with force=True on the way out):
        the requests past their deadline, and the lingering connections, are closed too. A
        stopping worker gives requests still arriving LINGER_SECONDS at most, as gthread
        does kept-alive connections, so stalled clients cannot hold up a restart."""
        super().murder_keepalived(*args, **kwargs)
        force = bool(kwargs.get("force", args[0] if args else False))
        now = time.monotonic()
        if not self.alive and self._stop_deadline is None:
            self._stop_deadline = now + LINGER_SECONDS
        stopping = self._stop_deadline is not None and self._stop_deadline <= now
        for conn, filling in list(self._filling.items()):
            if filling.deadline > now and not (force or stopping):
                break  # the rest have later deadlines
            why = (
                "the worker is stopping"
                if filling.deadline > now
                else f"request not complete within {self.body_timeout:g} s"
            )
            self.log.info(
                "closed a connection from %s: %s (%d bytes read)",
                filling.peer,
                why,
                len(filling.framing.buffer),
            )
            self._answer_and_close(conn, 408, "request not complete in time")
        for sock, deadline in list(self._lingering.items()):
            if deadline > now and not force:
                break
            self._end_linger(sock)

    # --- reading a request -----------------------------------------------------------------

    def _on_readable(self, conn: Any, _fileobj: Any) -> None:
        if conn in self._filling:
            self._read(conn)

    def _read(self, conn: Any) -> bool:
        """One non-blocking read; True when the connection left the event loop's reading."""
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:  # the client went away before its request was complete
            self._unregister(conn.sock)
            del self._filling[conn]
            self.nr_conns -= 1
            _util.close(conn.sock)
            return True
        return self._advance(conn, self._filling[conn].framing.feed(data))

    def _advance(self, conn: Any, verdict: Verdict) -> bool:
        """Act on a verdict; True when the connection left the event loop's reading."""
        framing = self._filling[conn].framing
        if verdict is Verdict.MORE:
            if framing.continue_due():
                self._send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        self._unregister(conn.sock)
        if verdict is Verdict.REFUSE:
            status, reason = framing.refusal
            self.log.info("refused a request from %s: %s", self._filling[conn].peer, reason)
            self._answer_and_close(conn, status, reason)
            return True
        del self._filling[conn]
        if not conn.initialized:
            conn.init()  # plain HTTP/1: only makes the parser
        conn.parser.unreader.unread(framing.data)
        conn.data_ready = True  # gunicorn >= 24: no wait for data in the thread
        conn.escbridge_close_after = framing.close_after
        super().enqueue_req(conn)
        return True

    def _answer_and_close(self, conn: Any, status: int, reason: str) -> None:
        self._unregister(conn.sock)
        self._filling.pop(conn, None)
        self.nr_conns -= 1
        self._send_quietly(conn.sock, error_response(status, reason))
        self._linger(conn.sock)

    # --- closing without blocking the event loop -------------------------------------------

    def _own_close(self, conn: Any) -> None:
        """Route gunicorn's ``conn.close(graceful=True)`` (run in the event loop) to a linger
        that does not block it; a plain close stays gunicorn's."""
        if "close" in vars(conn):
            return
        plain = conn.close

        def close(graceful: bool = False) -> None:
            if graceful:
                self._linger(conn.sock)
            else:
                plain()

        conn.close = close

    def _linger(self, sock: Any) -> None:
        """Send FIN, then read (and drop) what the client still sends until it closes, for
        at most LINGER_SECONDS / LINGER_BYTES: closing with unread bytes would reset the
        connection and could destroy the answer just sent."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _util.close(sock)
            return
        self._lingering[sock] = time.monotonic() + LINGER_SECONDS
        with self._poller_lock():
            self.poller.register(sock, selectors.EVENT_READ, partial(self._on_linger, [0]))

    def _on_linger(self, drained: list[int], sock: Any) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        drained[0] += len(data)
        if not data or drained[0] >= LINGER_BYTES:
            self._end_linger(sock)

    def _end_linger(self, sock: Any) -> None:
        self._lingering.pop(sock, None)
        self._unregister(sock)
        _util.close(sock)

    # --- small helpers ---------------------------------------------------------------------

    def _unregister(self, sock: Any) -> None:
        with self._poller_lock(), contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)

    @contextlib.contextmanager
    def _poller_lock(self) -> Iterator[None]:
        """gunicorn < 24 shares its poller with the threads, under ``_lock``."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            yield
        else:
            with lock:
                yield

    @staticmethod
    def _take_buffered(conn: Any) -> bytes:
        parser = getattr(conn, "parser", None)
        if parser is None:
            return b""
        unreader = parser.unreader
        data = bytes(unreader.buf.getvalue())
        unreader.buf = type(unreader.buf)()
        return data

    @staticmethod
    def _send_quietly(sock: Any, data: bytes) -> None:
        """Best effort, never blocking: a client that reads nothing does not get it all."""
        with contextlib.suppress(OSError):
            sock.send(data)
