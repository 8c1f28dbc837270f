"""Network faults for the helpdesk emulators, written once as a WSGI middleware.

Real networks lose answers, complete writes after the client gave up, answer slowly, fail with
5xx and 429, and reset connections. A :class:`FaultPlan` wraps an emulator's WSGI app
(:meth:`FaultPlan.wrap`, or :func:`install` for a Flask app) and makes matching requests fail
in one of these ways, so every emulator — whatever its framework — fails the same way:

``lost_answer``
    the write is applied, then the client gets a 504 (``answer="504"``) or a connection reset
    (``answer="reset"``) — only when the emulator's own answer was a success;
``late``
    the client gets a 504, a reset, or no answer at all (``answer="hang"``), and the write is
    applied later: ``delay`` seconds after, or when the test calls :meth:`FaultPlan.release_late`
    (``delay=None``, the deterministic form);
``slow``
    the write is applied at once and the answer held back ``delay`` seconds;
``error``
    a 5xx (``status``, default 503) and nothing applied;
``throttle``
    a 429 with ``Retry-After`` and nothing applied;
``reset``
    the connection is reset before the emulator sees the request (nothing applied).

Rules match a method (``*`` any, or ``PUT,POST``) and a path pattern (``*`` one path segment,
``**`` anything, ``re:`` a regular expression), and fire ``times`` times or, with
``probability``, on a seeded draw per request: the draw depends on the seed, the rule, the
method and path, and how often that method and path matched before — not on thread timing — so
a storm replays the same way for the same requests. :attr:`FaultPlan.counts` says what fired.

A reset is a real TCP reset (RST): under :class:`escbridge.sandbox.ServerThread` the request
handler closes the socket with ``SO_LINGER`` 0 and writes nothing, so the client sees a
``ConnectionResetError`` (``requests.ConnectionError``), never an HTTP status.

The control route ``/__sandbox/faults`` scripts a running emulator over HTTP: ``GET`` (rules,
counts, pending late writes), ``POST`` (add: ``{"spec": "PUT /api/v2/tickets/*=lost_answer"}``
or the fields of :meth:`FaultPlan.add`), ``DELETE`` (remove every rule), and ``POST
/__sandbox/faults/release`` (apply the late writes now).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KINDS",
    "RESET_HOOK",
    "FaultPlan",
    "FaultRule",
    "SandboxConnectionReset",
    "install",
    "parse_fault",
]

KINDS = ("lost_answer", "late", "slow", "error", "throttle", "reset")
#: The environ key under which the request handler offers a real connection reset.
RESET_HOOK = "escbridge.sandbox.reset"
_REPLAY = "escbridge.sandbox.replay"
_CONTROL = "/__sandbox/faults"
_KEPT = 100_000
_ANSWERS = {"lost_answer": ("504", "reset"), "late": ("504", "reset", "hang")}

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SandboxConnectionReset(ConnectionResetError):
    """Raised inside the WSGI call after a reset was arranged: the server writes no answer."""


@dataclass
class FaultRule:
    """One scripted fault: which requests (method, path pattern) and what happens to them."""

    method: str
    path: str
    kind: str
    times: int | None = 1  # None: no limit (with ``probability``, a storm)
    probability: float | None = None
    status: int | None = None  # error: 503; lost_answer/late "504" answer: 504
    answer: str | None = None  # lost_answer: "504" | "reset"; late: also "hang"
    delay: float | None = None  # slow: seconds the answer waits; late: None = at release
    retry_after: int = 1  # throttle
    skip: int = 0  # let this many matching requests through first (to hit the n-th call)
    fired: int = 0
    id: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(KINDS)}")
        answers = _ANSWERS.get(self.kind)
        if answers is None and self.answer is not None:
            raise ValueError(f"a {self.kind} fault takes no answer option")
        if answers is not None:
            self.answer = self.answer or "504"
            if self.answer not in answers:
                raise ValueError(f"a {self.kind} fault answers {' or '.join(answers)}")
        if self.kind == "slow" and self.delay is None:
            raise ValueError("a slow fault needs delay (seconds)")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability is between 0 and 1")
        self.method = self.method.upper()
        self._pattern = _compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        methods = self.method.split(",")
        return ("*" in methods or method in methods) and bool(self._pattern.fullmatch(path))

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "kind": self.kind,
            "times": self.times,
            "probability": self.probability,
            "status": self.status,
            "answer": self.answer,
            "delay": self.delay,
            "retry_after": self.retry_after,
            "skip": self.skip,
            "fired": self.fired,
        }


def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        return re.compile(pattern[3:])
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(
        ".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts if p
    )
    return re.compile(regex)


def parse_fault(spec: str) -> dict[str, Any]:
    """``"PUT /api/v2/tickets/*=lost_answer,answer=reset,times=2"`` as :meth:`FaultPlan.add`
    arguments. Options: times (a number or ``always``), probability, status, answer, delay,
    retry_after, skip. ValueError when malformed."""
    target, sep, action = spec.partition("=")
    method, _, path = target.strip().partition(" ")
    if not sep or not method or not path.strip():
        raise ValueError(f"fault {spec!r}: expected 'METHOD PATH=KIND[,option=value...]'")
    kind, *options = [p.strip() for p in action.split(",")]
    args: dict[str, Any] = {"method": method, "path": path.strip(), "kind": kind}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq:
            raise ValueError(f"fault {spec!r}: option {option!r} is not key=value")
        args.update(_option(key.strip(), value.strip()))
    if "probability" in args and "times" not in args:
        args["times"] = None
    FaultRule(**args)  # validates
    return args


def _option(key: str, value: str) -> dict[str, Any]:
    if key == "times":
        return {"times": None if value in ("always", "") else int(value)}
    if key in ("status", "retry_after", "skip"):
        return {key: int(value)}
    if key in ("probability", "delay"):
        return {key: float(value)}
    if key == "answer":
        return {"answer": value}
    raise ValueError(f"unknown fault option {key!r}")


@dataclass
class _Late:
    """A write held back by a ``late`` fault: the request, and when it was applied."""

    rule: FaultRule
    environ: dict[str, Any]
    method: str
    path: str
    at: float = 0.0  # when it was held, on the plan's clock
    applied: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    answer: list[Any] = field(default_factory=list)  # (status, headers, body) once applied


@dataclass(frozen=True)
class FaultEvent:
    """One fault that fired: its kind, the request, and the emulator's own answer if any."""

    kind: str
    method: str
    path: str
    rule: int
    status: int | None = None


class FaultPlan:
    """The faults of one emulator: rules, a seeded draw for storms, counts, late writes."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seed = seed
        #: when late writes are held (:meth:`release_late` ``held_before``): a test's fake clock
        self.clock = clock
        #: the requests the emulator got, (method, path), faulted or not: what a client did
        #: (the latest ``_KEPT``, so a long-running sandbox does not grow without end)
        self.seen: deque[tuple[str, str]] = deque(maxlen=_KEPT)
        self.rules: list[FaultRule] = []
        #: what fired, by kind; also ``late_applied``/``late_failed`` for held writes.
        self.counts: Counter[str] = Counter()
        self.events: deque[FaultEvent] = deque(maxlen=_KEPT)
        self._seen: Counter[tuple[int, str, str]] = Counter()
        self._late: list[_Late] = []
        self._ids = 0
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._timers: list[threading.Timer] = []
        self._app: WsgiApp | None = None

    # -- scripting --------------------------------------------------------------------------

    def add(self, method: str, path: str, kind: str, **options: Any) -> FaultRule:
        """Add a rule (see :class:`FaultRule` for options); it is tried after earlier ones."""
        return self.append(FaultRule(method, path, kind, **options))

    def append(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._ids += 1
            rule.id = self._ids
            self.rules.append(rule)
        return rule

    def add_spec(self, spec: str) -> FaultRule:
        """Add a rule written as for ``escbridge sandbox --fault`` (see :func:`parse_fault`)."""
        return self.add(**parse_fault(spec))

    def clear(self) -> None:
        """Remove every rule (the storm stops); late writes still pending stay pending."""
        with self._lock:
            self.rules.clear()

    def fired(self, kind: str | None = None) -> int:
        """How many faults fired (of one kind)."""
        with self._lock:
            return self.counts[kind] if kind else sum(self.counts[k] for k in KINDS)

    @property
    def pending_late(self) -> int:
        with self._lock:
            return len(self._late)

    def release_late(self, held_before: float | None = None) -> int:
        """Apply the held-back writes now, oldest first — all of them, or those held before
        ``held_before`` on :attr:`clock` (a late completion N seconds after the request);
        how many were applied."""
        with self._lock:
            items = [item for item in self._late if held_before is None or item.at <= held_before]
        return sum(1 for item in items if self._apply_late(item))

    def close(self) -> None:
        """Stop waiting: slow answers go out, hanging clients are let go, and late writes not
        yet applied are dropped (a test's teardown, not a release)."""
        self._closed.set()
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            for item in self._late:
                item.applied.set()
            self._late.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self.seed,
                "rules": [r.json() for r in self.rules],
                "counts": dict(self.counts),
                "pending_late": self.pending_late,
            }

    # -- the middleware ---------------------------------------------------------------------

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """``app`` with this plan's faults in front of it (and the control route)."""
        self._app = app

        def faulty(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            return self._call(app, environ, start_response)

        return faulty

    def _take(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            self.seen.append((method, path))
            for rule in self.rules:
                if (rule.times is not None and rule.times <= 0) or not rule.matches(method, path):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                if rule.probability is not None:
                    key = (rule.id, method, path)
                    self._seen[key] += 1
                    draw = random.Random(f"{self.seed}:{rule.id}:{method}:{path}:{self._seen[key]}")
                    if draw.random() >= rule.probability:
                        continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    def _give_back(self, rule: FaultRule) -> None:
        with self._lock:
            if rule.times is not None:
                rule.times += 1

    def _count(self, rule: FaultRule, method: str, path: str, status: int | None) -> None:
        with self._lock:
            rule.fired += 1
            self.counts[rule.kind] += 1
            self.events.append(FaultEvent(rule.kind, method, path, rule.id, status))

    def _call(
        self, app: WsgiApp, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", ""))
        if path == _CONTROL or path.startswith(_CONTROL + "/"):
            return self._control(environ, start_response, method, path)
        if environ.get(_REPLAY) or path.startswith("/__sandbox/"):
            return app(environ, start_response)
        rule = self._take(method, path)
        if rule is None:
            return app(environ, start_response)
        _buffer_body(environ)  # the client has sent everything before anything fails
        kind = rule.kind
        if kind == "error":
            self._count(rule, method, path, None)
            return _answer(start_response, rule.status or 503, {"error": "sandbox fault"})
        if kind == "throttle":
            self._count(rule, method, path, None)
            return _answer(
                start_response,
                rule.status or 429,
                {"error": "sandbox fault: too many requests"},
                {"Retry-After": str(rule.retry_after)},
            )
        if kind == "reset":
            self._count(rule, method, path, None)
            _reset(environ)
        if kind == "late":
            return self._hold(rule, environ, start_response, method, path)
        status, headers, body = _run(app, environ)
        if kind == "lost_answer":
            if not 200 <= status < 300:  # nothing was applied: the answer is not lost
                self._give_back(rule)
                start_response(_status_line(status), headers)
                return [body]
            self._count(rule, method, path, status)
            if rule.answer == "reset":
                _reset(environ)
            return _answer(start_response, rule.status or 504, {"error": "Gateway Timeout"})
        # slow: applied already; the answer waits
        self._count(rule, method, path, status)
        self._closed.wait(rule.delay or 0.0)
        start_response(_status_line(status), headers)
        return [body]

    def _hold(
        self,
        rule: FaultRule,
        environ: dict[str, Any],
        start_response: StartResponse,
        method: str,
        path: str,
    ) -> Iterable[bytes]:
        """A ``late`` fault: keep a copy of the request to apply later; answer as the rule says."""
        body = _buffer_body(environ)
        replay: dict[str, Any] = {
            k: v
            for k, v in environ.items()
            if isinstance(v, str | int | float | bool | tuple) and k != RESET_HOOK
        }
        replay.update({"wsgi.input": io.BytesIO(body), "wsgi.errors": environ.get("wsgi.errors")})
        replay[_REPLAY] = True
        item = _Late(rule, replay, method, path, at=self.clock())
        with self._lock:
            self._late.append(item)
        self._count(rule, method, path, None)
        if rule.delay is not None:
            timer = threading.Timer(rule.delay, self._apply_late, (item,))
            timer.daemon = True
            with self._lock:
                self._timers.append(timer)
            timer.start()
        if rule.answer == "reset":
            _reset(environ)
        if rule.answer == "hang":
            item.applied.wait()
            if item.answer:
                status, headers, answer = item.answer
                start_response(_status_line(status), headers)
                return [answer]
        return _answer(start_response, rule.status or 504, {"error": "Gateway Timeout"})

    def _apply_late(self, item: _Late) -> bool:
        with self._lock:  # taken off the list first: a timer and a release never both apply it
            if item not in self._late or self._app is None:
                return False
            self._late.remove(item)
            app = self._app
        status, headers, body = _run(app, item.environ)
        with self._lock:
            item.status = status
            item.answer = [status, headers, body]
            self.counts["late_applied" if 200 <= status < 300 else "late_failed"] += 1
        item.applied.set()
        return True

    # -- the control route ------------------------------------------------------------------

    def _control(
        self, environ: dict[str, Any], start_response: StartResponse, method: str, path: str
    ) -> Iterable[bytes]:
        if path == _CONTROL + "/release" and method == "POST":
            return _answer(start_response, 200, {"released": self.release_late()})
        if path != _CONTROL:
            return _answer(start_response, 404, {"error": "no such control route"})
        if method == "GET":
            return _answer(start_response, 200, self.snapshot())
        if method == "DELETE":
            self.clear()
            return _answer(start_response, 200, self.snapshot())
        if method != "POST":
            return _answer(start_response, 405, {"error": "GET, POST or DELETE"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
            items = body.get("rules", [body]) if isinstance(body, Mapping) else body
            added = [self.add_spec(str(i["spec"])) if "spec" in i else self.add(**i) for i in items]
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return _answer(start_response, 400, {"error": str(error)})
        return _answer(start_response, 201, {"added": [r.json() for r in added]})


def _run(app: WsgiApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Call the emulator and keep its whole answer (status, headers, body)."""
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers]
        return lambda _data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(str(captured[0]).split()[0]), list(captured[1]), body


def _status_line(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Sandbox Fault"


def _answer(
    start_response: StartResponse,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        _status_line(status),
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(headers or {}).items(),
        ],
    )
    return [data]


def _buffer_body(environ: dict[str, Any]) -> bytes:
    """Read the request body off the connection into ``environ`` (read once, kept for later)."""
    stream = environ.get("wsgi.input")
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = stream.read(length) if length > 0 and stream is not None else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def _reset(environ: Mapping[str, Any]) -> None:
    """Reset the client's connection and write no answer (raises).

    The request body was read first (:func:`_buffer_body`): a client still sending when the
    reset arrives takes the error on its send (urllib3 ignores that one) and then only sees the
    connection close, not the reset.
    """
    hook = environ.get(RESET_HOOK)
    if callable(hook):
        hook()
    else:  # another server: abort the socket as well as it allows
        sock = environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    raise SandboxConnectionReset("sandbox fault: connection reset")


def install(app: Any, plan: FaultPlan) -> FaultPlan:
    """Put ``plan`` in front of a Flask ``app`` (``app.extensions["escbridge_faults"]``)."""
    app.wsgi_app = plan.wrap(app.wsgi_app)
    app.extensions["escbridge_faults"] = plan
    return plan
