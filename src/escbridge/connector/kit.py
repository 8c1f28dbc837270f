"""What every connector needs and nobody should write twice.

- ``Runtime``: the clock, sleep, HTTP session and random source a connector runs on, in one
  object, so tests (and the demo's simulated time) replace them all at once;
- ``GroupDirectory``: group name -> id, cached, reloaded on a miss (a group created a minute ago)
  at most every ``min_reload`` seconds; an unknown name raises ``UnknownGroupError``;
- ``poll_job``: waits for a helpdesk's asynchronous bulk job with capped exponential back-off;
- ``check_identity``: the ``check()`` step "who am I", with the API errors turned into the
  problems `escbridge check` shows;
- ``SlidingWindow``: "at most N units per window" — a client-side gate for limits a helpdesk
  does not announce in headers, and the limiter of the emulators;
- ``Learned``: a value learned from a helpdesk in the background (never while a webhook waits),
  with back-off that honours ``Retry-After``; ``Identity`` / ``SelfIdentity``: who escbridge
  writes as on one instance, learned so, for loop prevention (Zoho's JWKS is learned so too).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field

from escbridge.connector.contract import CheckReport
from escbridge.errors import (
    ApiError,
    AuthError,
    NotFound,
    PermissionDeniedError,
    RateLimited,
    TransientError,
    UnknownGroupError,
    ValidationError,
)
from escbridge.model import Actions, LevelMarker, Ticket

log = logging.getLogger(__name__)

__all__ = [
    "Group",
    "GroupDirectory",
    "Identity",
    "JobPoll",
    "Learned",
    "LimitDecision",
    "Runtime",
    "SelfIdentity",
    "SlidingWindow",
    "check_identity",
    "credential_url_problem",
    "fields_text",
    "is_loopback_url",
    "landed",
    "partly_landed",
    "poll_job",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def landed(ticket: Ticket, actions: Actions) -> bool:
    """Whether ``actions`` are visible on ``ticket``: the level marker, or failing that its effects.

    The marker (the reference every escalation write carries) is authoritative. Without one (a
    decision that sets no level), the group and the added tags must all be there.
    """
    if actions.level:
        return ticket.level == actions.level or LevelMarker.tag(actions.level) in ticket.tags
    checks: list[bool] = []
    if actions.group:
        checks.append((ticket.group or "").lower() == actions.group.lower())
    if actions.tags_add:
        checks.append(all(tag.lower() in ticket.tags for tag in actions.tags_add))
    return bool(checks) and all(checks)


def partly_landed(ticket: Ticket, actions: Actions) -> bool:
    """Whether some of ``actions`` but not their level marker are on ``ticket``.

    A connector that writes one escalation in several calls and the marker last (Zoho Desk:
    the PATCH of department and team, then the marker tag) can be stopped in between; the
    ticket then sits in the target group without the marker, and the engine, reading the level
    off the group, would find nothing left to do.
    """
    if not actions.level or landed(ticket, actions):
        return False
    if actions.group and (ticket.group or "").lower() == actions.group.lower():
        return True
    return bool(actions.tags_add) and all(tag.lower() in ticket.tags for tag in actions.tags_add)


# --------------------------------------------------------------------------- runtime


class SimulatedClock(Protocol):
    """What ``escbridge.testing.FakeClock`` (and the demo's clock) offer."""

    def __call__(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Runtime:
    """The environment a connector runs in; every field has the real thing as its default.

    ``clock`` is monotonic seconds (TTLs, deadlines, pacing), ``utcnow`` the aware wall-clock
    time (sync windows, replay windows), ``wallclock`` epoch seconds (token expiry claims).
    ``session`` is the ``requests.Session`` for the helpdesk's API (None: a new one).
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    utcnow: Callable[[], datetime] = _utcnow
    wallclock: Callable[[], float] = time.time
    session: requests.Session | None = None
    rng: random.Random | None = None

    @classmethod
    def simulated(cls, clock: SimulatedClock, **overrides: Any) -> Runtime:
        """A runtime whose every clock is ``clock`` (a FakeClock): sleeping moves it on."""
        return cls(
            clock=clock.monotonic,
            sleep=clock.sleep,
            utcnow=clock,
            wallclock=lambda: clock().timestamp(),
        ).with_(**overrides)

    def with_(self, **overrides: Any) -> Runtime:
        """This runtime with some fields replaced; an unknown name is a TypeError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            have = ", ".join(sorted(known))
            raise TypeError(f"Runtime has no {', '.join(unknown)} (it has {have})")
        return replace(self, **overrides)

    def client_kwargs(self) -> dict[str, Any]:
        """What ``escbridge.http.ApiClient`` takes from the runtime, as keyword arguments."""
        return {
            "session": self.session,
            "sleep": self.sleep,
            "clock": self.clock,
            "utcnow": self.utcnow,
            "rng": self.rng,
        }

    @classmethod
    def build(cls, runtime: Runtime | None = None, **overrides: Any) -> Runtime:
        """``runtime`` (or the real one) with the constructor's test overrides applied."""
        return (runtime or cls()).with_(**overrides)


# --------------------------------------------------------------------------- groups

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class Group(Generic[K]):
    """One routing destination of a helpdesk: a group, or a team/department (``kind``).

    ``parent`` is the id of the entry it belongs to (Zoho: a team's department); ``active``
    False keeps a deleted group's name for display without routing to it.
    """

    id: K
    name: str
    kind: str = "group"
    parent: K | None = None
    active: bool = True


class GroupDirectory(Generic[K]):
    """Group names -> ids for one helpdesk instance, cached and thread-safe.

    ``load`` returns every group. The list is loaded on first use, again after ``ttl`` seconds
    (None: only on a miss), and at once when a name or id is not found — at most every
    ``min_reload`` seconds, so a typo in the matrix does not cost a call per ticket.
    Names compare case-insensitively.
    """

    def __init__(
        self,
        load: Callable[[], Iterable[Group[K]]],
        *,
        instance: str = "",
        ttl: float | None = None,
        min_reload: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        parse_id: Callable[[Any], K] | None = None,
    ) -> None:
        self._load = load
        self._parse_id = parse_id
        self.instance = instance
        self.ttl = ttl
        self.min_reload = min_reload
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: tuple[Group[K], ...] = ()
        self._loaded_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def names(self, kind: str | None = None) -> dict[K, str]:
        """Id -> name of every group known so far, deleted ones too, of one ``kind`` if given.

        No call is made: parsing a ticket stays pure.
        """
        return {g.id: g.name for g in self._groups if kind is None or g.kind == kind}

    def groups(self) -> tuple[Group[K], ...]:
        self.ensure()
        return self._groups

    def refresh(self) -> None:
        """Load the list now (``escbridge check``, or a caller that knows it changed)."""
        groups = tuple(self._load())
        with self._lock:
            self._groups = groups
            self._loaded_at = self._clock()

    def ensure(self) -> None:
        """Load the list if it never was, or is older than ``ttl``."""
        at = self._loaded_at
        if at is None or (self.ttl is not None and self._clock() - at >= self.ttl):
            self.refresh()

    def reload_on_miss(self) -> bool:
        """Reload unless the last load is younger than ``min_reload``; whether it reloaded."""
        at = self._loaded_at
        if at is not None and self._clock() - at < self.min_reload:
            return False
        self.refresh()
        return True

    def note_ids(self, ids: Iterable[K | None]) -> None:
        """Tickets name these group ids: reload (throttled) if one is new to us."""
        self.ensure()
        known = self.names()
        if any(i is not None and i not in known for i in ids):
            self.reload_on_miss()

    def note_tickets(self, raws: Iterable[Mapping[str, Any]], field: str) -> None:
        """``note_ids`` for the group ids in ``field`` of raw tickets (read with ``parse_id``)."""
        values = [raw.get(field) for raw in raws]
        parse = self._parse_id
        self.note_ids([parse(v) if parse is not None else v for v in values if v not in (None, "")])

    def resolve(self, name: str, find: Callable[[Sequence[Group[K]]], R]) -> R:
        """``find(groups)`` on the cached list, and once more after a reload if it raises
        ``UnknownGroupError`` (for destinations richer than a name, e.g. "Department/Team")."""
        self.ensure()
        try:
            return find(self._groups)
        except UnknownGroupError:
            if not self.reload_on_miss():
                raise
        return find(self._groups)

    def id_of(self, name: str) -> K:
        """The id of the active group called ``name``; UnknownGroupError naming the known."""

        def find(groups: Sequence[Group[K]]) -> K:
            key = name.strip().casefold()
            for group in groups:
                if group.active and group.name.casefold() == key:
                    return group.id
            raise UnknownGroupError(
                name, self.instance, sorted({g.name for g in groups if g.active})
            )

        return self.resolve(name, find)

    def missing(self, names: Collection[str]) -> list[str]:
        """The names with no active group, after loading the list afresh (for ``check``)."""
        if not names:
            return []
        self.refresh()
        have = {g.name.casefold() for g in self._groups if g.active}
        return [n for n in dict.fromkeys(names) if n.strip().casefold() not in have]


# --------------------------------------------------------------------------- bulk jobs


@dataclass(frozen=True)
class JobPoll:
    """The last job status read, and whether it finished before the timeout."""

    job: Mapping[str, Any]
    finished: bool


def poll_job(
    fetch: Callable[[], Mapping[str, Any] | None],
    finished: Callable[[Mapping[str, Any]], bool],
    *,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    first: Mapping[str, Any] | None = None,
    submitted_at: float | None = None,
    delay: float = 0.5,
    max_delay: float = 5.0,
) -> JobPoll:
    """Read a job's status until ``finished(job)`` or ``timeout`` seconds have passed.

    ``first`` is a status already in hand (the answer that created the job), looked at before
    the first read. Waits double from ``delay`` up to ``max_delay``; the first wait counts from
    ``submitted_at`` (a ``clock()`` reading), so a job submitted while another was polled is
    read at once when its first wait has already passed. A read that returns None keeps the
    previous status. A timeout is not an error: the caller checks what landed.
    """
    now = clock()
    deadline = now + timeout
    job: Mapping[str, Any] = first if first is not None else (fetch() or {})
    wait = delay if submitted_at is None else max(0.0, delay - (now - submitted_at))
    while not finished(job):
        if clock() >= deadline:
            return JobPoll(job, finished=False)
        if wait > 0:
            sleep(wait)
        job = fetch() or job
        delay = min(delay * 2, max_delay)
        wait = delay
    return JobPoll(job, finished=True)


# --------------------------------------------------------------------------- settings


class ConnectorSettings(BaseModel):
    """The settings every connector has, in one place: a connector's config model subclasses it.

    ``BaseConnector`` reads the conflict and settle settings from here; ``ApiClient`` takes the
    timeouts and attempts. Unknown keys are errors (a typo in escbridge.yaml is caught).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    conflict_retries: int = Field(default=3, ge=0, le=10)
    write_settle_seconds: float = Field(
        default=30.0, ge=0, le=600, description="wait before re-reading after a lost answer"
    )
    write_settle_rounds: int = Field(default=3, ge=1, le=10)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """Who escbridge writes as on one instance: the API user or agent its changes are made by.

    ``id`` is what a webhook names as the actor; ``aliases`` other spellings an event may use
    (an e-mail address); ``label`` is what `escbridge check` and the logs show.
    """

    id: str
    aliases: frozenset[str] = frozenset()
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", frozenset(a.strip().lower() for a in self.aliases if a))

    def matches(self, actor: str | None) -> bool:
        """Whether an event's actor is escbridge itself."""
        if actor is None or not actor.strip():
            return False
        value = actor.strip().lower()
        return value == self.id.strip().lower() or value in self.aliases

    def __str__(self) -> str:
        return self.label or self.id


class Learned(Generic[T]):
    """A value learned from a helpdesk by a call that may fail, be throttled or hang — never
    while a webhook waits — and remembered.

    ``learn`` returns the value (None: not said, a failure) and raises the API's typed errors;
    ``NotImplementedError`` means it can never be learned (never asked again).

    - ``value`` answers at once, with no I/O: the webhook door asks only this;
    - ``start()`` learns it in a daemon thread, retrying with capped exponential back-off that
      honours ``Retry-After``, until it is known or ``stop()`` is called;
    - ``learn_now()`` is one attempt for a caller that may wait (a worker, ``check``), skipped
      while an earlier failure's back-off runs or another attempt is in flight, so an outage
      does not add a call to every event;
    - ``refresh()`` is one attempt in a short-lived daemon thread although a value is known (a
      value that goes stale, like signing keys); a caller that may wait a little waits for an
      attempt's end with ``wait_attempt(since, timeout)``, ``since`` being ``attempts`` read
      before.

    A subclass names what it learns (``what``, ``consequence``, ``thread_name``) for the logs.
    """

    what = "the value"
    consequence = ""  # what happens until it is known, for the warning
    thread_name = "escbridge-learn"

    def __init__(
        self,
        learn: Callable[[], T | None],
        *,
        instance: str = "",
        known: T | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        first_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        self._learn = learn
        self.instance = instance
        self._value = known
        self._clock = clock
        self._rng = rng or random.Random()
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failures = 0
        self.last_error: str | None = None
        self.unlearnable = False  # the helpdesk cannot say (NotImplementedError): never asked again
        self.attempts = 0  # attempts ended, learned or failed (see wait_attempt)
        self._next_at = 0.0
        self._attempt = threading.Lock()
        self._state = threading.Lock()
        self._ended = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def value(self) -> T | None:
        """The value if known now; never makes a call."""
        return self._value

    @property
    def busy(self) -> bool:
        """Whether an attempt is in flight."""
        return self._attempt.locked()

    def set(self, value: T) -> None:
        """Remember a value learned elsewhere (``check()``, the answer to our own write)."""
        with self._state:
            self._value = value
            self.last_error = None

    def retry_in(self) -> float:
        """Seconds until the next attempt is due (0: now)."""
        return max(0.0, self._next_at - self._clock())

    def learn_now(self) -> T | None:
        """One attempt to learn the value, unless it is known, its back-off is still running,
        or another attempt is in flight; the value, or None. Never raises an API error."""
        if self._value is not None or self.unlearnable or self.retry_in() > 0:
            return self._value
        if not self._attempt.acquire(blocking=False):
            return self._value  # another thread is asking: do not ask twice
        if self._value is not None:
            self._attempt.release()
            return self._value
        return self._try_and_release()

    def refresh(self) -> bool:
        """One attempt now in a short-lived daemon thread, even though a value is known (the
        caller throttles); False when one is in flight already or it cannot be learned."""
        if self.unlearnable or not self._attempt.acquire(blocking=False):
            return False
        name = f"{self.thread_name}-{self.instance}-refresh"
        threading.Thread(target=self._try_and_release, name=name, daemon=True).start()
        return True

    def wait_attempt(self, since: int, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until an attempt has ended after ``attempts`` was
        ``since``; whether one has."""
        with self._ended:
            return self._ended.wait_for(lambda: self.attempts > since, timeout)

    def _merge(self, old: T | None, new: T) -> T:
        """The value to keep when ``new`` is learned (default: the new one)."""
        return new

    def _learned(self, value: T) -> None:
        log.info("%s: learned %s", self.instance, self.what)

    def _try(self) -> T | None:
        try:
            found = self._learn()
        except NotImplementedError:
            self.unlearnable = True
            found = None
        except RateLimited as exc:
            self._failed(f"rate limited: {exc}", exc.retry_after)
            found = None
        except Exception as exc:  # any failure (API, network, a bug): tried again later
            self._failed(f"{type(exc).__name__}: {exc}", None)
            found = None
        else:
            if found is None:
                self._failed("the helpdesk did not say", None)
            else:
                with self._state:
                    self._value = self._merge(self._value, found)
                    self.failures = 0
                    self.last_error = None
                self._learned(self._value)
        return found if found is None else self._value

    def _try_and_release(self) -> T | None:
        """``_try`` with the attempt lock the caller holds; releases it, and only then counts
        the attempt as ended (a waiter woken by ``wait_attempt`` never sees it in flight)."""
        try:
            return self._try()
        finally:
            self._attempt.release()
            with self._ended:
                self.attempts += 1
                self._ended.notify_all()

    def _failed(self, reason: str, retry_after: float | None) -> None:
        with self._state:
            self.failures += 1
            ceiling = min(self.max_delay, self.first_delay * 2.0 ** (self.failures - 1))
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)  # equal jitter
            if retry_after is not None:
                delay = max(delay, retry_after)  # never before the helpdesk said
            self._next_at = self._clock() + delay
            self.last_error = reason
        log.warning(
            "%s: cannot learn %s yet (%s); trying again in %.0fs%s",
            self.instance,
            self.what,
            reason,
            delay,
            self.consequence,
        )

    # -- the background thread --------------------------------------------------------------

    def start(self) -> None:
        """Learn the value in a daemon thread (idempotent per process; no-op when known)."""
        if self._value is not None or self.unlearnable:
            return
        with self._state:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"{self.thread_name}-{self.instance}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread (it ends at its next wait); whether it has ended within ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def join(self, timeout: float | None = None) -> T | None:
        """Wait for the background thread to end (the value learned, or stopped); the value.
        For callers that may wait: a CLI, a test."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._value

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set() and self._value is None and not self.unlearnable:
            wait = self.retry_in()
            if wait > 0:
                self._stop.wait(wait)
                continue
            self._attempt.acquire()  # after a worker's attempt in flight, if there is one
            if self._value is None and self.retry_in() <= 0 and not self._stop.is_set():
                self._try_and_release()
            else:
                self._attempt.release()


class SelfIdentity(Learned[Identity]):
    """Who escbridge writes as, learned once and remembered; never learned while a webhook waits.

    ``learn`` is the helpdesk's "who am I" call (Zendesk ``/users/me``, Freshdesk
    ``/agents/me``, Zoho Desk ``/myinfo``); ``known`` starts as the configured identity, if
    any. ``Learned`` has the rest: ``known`` (no I/O, for the door), ``start()`` (the
    background thread), ``learn_now()`` (one throttled attempt, for a worker).
    """

    what = "who escbridge writes as"
    consequence = (
        " (until then, webhook events are stored and the worker tells its own changes apart)"
    )
    thread_name = "escbridge-identity"

    @property
    def known(self) -> Identity | None:
        """The identity if known now; never makes a call."""
        return self._value

    def _merge(self, old: Identity | None, new: Identity) -> Identity:
        return old or new  # one set meanwhile (check, our own write's answer) stays

    def _learned(self, value: Identity) -> None:
        log.info("%s: escbridge writes as %s", self.instance, value)


# --------------------------------------------------------------------------- check


def check_identity(
    who: Callable[[], R],
    *,
    product: str,
    where: str,
    credentials: str = "the credentials",
    not_found: str = "check the address",
) -> R | CheckReport:
    """The first step of ``check()``: ``who()`` (e.g. GET /users/me), or the failed report.

    401 names ``credentials`` (what the admin should look at), 404 says no account answers at
    ``where`` (``not_found`` is the hint), 403 that the user may not read itself, an outage that
    ``where`` cannot be reached; any other API error is shown as it is.
    """
    try:
        return who()
    except AuthError as exc:
        problem = (
            f"{product} rejected the credentials ({_status(exc)}{exc.message}); "
            f"check {credentials} for {where}"
        )
    except PermissionDeniedError as exc:
        problem = (
            f"{product} at {where} refused to say whom the credentials belong to "
            f"({_status(exc)}{exc.message})"
        )
    except NotFound:
        problem = f"no {product} account answers at {where}: {not_found}"
    except TransientError as exc:
        problem = f"cannot reach {where}: {exc.message}"
    except ApiError as exc:
        problem = f"{where}: {exc}"
    return CheckReport(ok=False, problems=(problem,))


def _status(exc: ApiError) -> str:
    return f"HTTP {exc.status}: " if exc.status is not None else ""


def fields_text(exc: ValidationError) -> str:
    """A helpdesk's refusal as an admin reads it: ``field: message; …``, else its message."""
    if exc.fields:
        return "; ".join(f"{f.field}: {f.message}" for f in exc.fields)
    return exc.message


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on 127.0.0.0/8, ::1 or localhost: where sandboxes run (a config's
    ``api_url`` override may point only there, never at another real host)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_NETLOC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")


def credential_url_problem(
    url: str, *, domains: Collection[str], sandbox: bool, label: str = ""
) -> str | None:
    """Why ``url`` must not receive an instance's credentials, or None when it may.

    The one host rule of every connector (a typo or a hostile config must never send a token
    elsewhere): https on the helpdesk's own ``domains`` (a domain or any subdomain of it, on the
    default port), or — only with ``sandbox: true`` — http(s) on a loopback address, where the
    emulators run. A netloc holding anything but a host and a port (user info, ``\\``, ``%``)
    is refused outright, so no HTTP library can read another host out of it than this rule did.
    ``label`` names the allowed hosts in the message (e.g. "a Zoho domain").
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return "must be a full URL (https://…)"
    if not set(parts.netloc) <= _NETLOC_CHARS:
        return "must name only a host (and port): no user name, password or escapes"
    if sandbox:
        if is_loopback_url(url):
            return None
        return (
            "must be on 127.0.0.1, ::1 or localhost with sandbox: true (a sandbox never "
            "receives real credentials from elsewhere)"
        )
    on_domain = any(host == d or host.endswith("." + d) for d in domains)
    if parts.scheme == "https" and on_domain and port in (None, 443):
        return None
    where = label or " or ".join(domains) or "the helpdesk's own domain"
    return (
        f"must be an https URL on {where}; other hosts (a loopback address too) are allowed "
        "only for a local emulator with sandbox: true"
    )


# --------------------------------------------------------------------------- sliding window


@dataclass(frozen=True)
class LimitDecision:
    """The outcome of asking a ``SlidingWindow`` for ``cost`` units, with the figures a
    helpdesk puts in its rate-limit headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the oldest unit in the window expires (0 when the window is empty)
    retry_after: float  # 0 when allowed; else until enough units have expired to fit the cost

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up, as helpdesks send it."""
        return str(max(1, math.ceil(self.retry_after)))

    @property
    def reset_header(self) -> str:
        return str(math.ceil(self.reset_seconds))


class SlidingWindow:
    """At most ``limit`` units in any ``window`` seconds (a sliding log of what was spent).

    ``acquire(cost)`` spends if the cost fits now and otherwise refuses whole, saying how long
    until it would fit (an emulator answers 429 with that); ``wait(cost, sleep)`` blocks until it
    fits and spends (a client pacing itself). Thread-safe.
    """

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def acquire(self, cost: int = 1) -> LimitDecision:
        """Spend ``cost`` units if they fit now."""
        with self._lock:
            return self._acquire(self._clock(), cost)

    def wait(self, sleep: Callable[[float], None], cost: int = 1) -> float:
        """Sleep until ``cost`` units fit, then spend them; the seconds slept.

        Waiters queue on the lock, so concurrent callers are let through one by one.
        """
        if cost > self.limit:
            raise ValueError(f"a cost of {cost} never fits a limit of {self.limit}")
        with self._lock:
            now = self._clock()
            self._expire(now)
            used = sum(c for _, c in self._spent)
            delay = 0.0 if used + cost <= self.limit else self._wait_for(now, used, cost)
            if delay > 0:
                sleep(delay)
                now += delay
                self._expire(now)
            self._spent.append((now, cost))
            return delay

    def peek(self) -> LimitDecision:
        with self._lock:
            now = self._clock()
            self._expire(now)
            used = sum(c for _, c in self._spent)
            return self._decision(True, now, used, 0.0)

    def reset(self) -> None:
        with self._lock:
            self._spent.clear()

    def _acquire(self, now: float, cost: int) -> LimitDecision:
        self._expire(now)
        used = sum(c for _, c in self._spent)
        if used + cost <= self.limit:
            self._spent.append((now, cost))
            return self._decision(True, now, used + cost, 0.0)
        return self._decision(False, now, used, self._wait_for(now, used, cost))

    def _expire(self, now: float) -> None:
        while self._spent and now - self._spent[0][0] >= self.window:
            self._spent.popleft()

    def _wait_for(self, now: float, used: int, cost: int) -> float:
        if cost > self.limit:
            return self.window  # never fits; say "a window" rather than "never"
        need = used + cost - self.limit
        freed = 0
        for at, c in self._spent:
            freed += c
            if freed >= need:
                return max(0.0, at + self.window - now)
        return self.window

    def _decision(self, allowed: bool, now: float, used: int, retry: float) -> LimitDecision:
        reset = self._spent[0][0] + self.window - now if self._spent else 0.0
        return LimitDecision(allowed, self.limit, max(0, self.limit - used), reset, retry)
