"""Notification targets: compiled from the matrix's ``notify:`` section, resolved at send time.

A target keeps ``${VAR}`` as the matrix wrote it (the matrix is pure and lives in git);
``resolve`` replaces the references from the environment when a notification is sent, and the
worker checks them at start (``environment_problems``) so an unset variable is said once, up
front, naming the variable and the target. Everything a target holds that grants access (a
Slack webhook URL, a bot token, a Teams workflow URL, an SMTP password, a signing secret, and
every value read from the environment) is a secret: ``NotifyTarget.secret_values`` lists them
for the Redactor.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from escbridge.errors import EscbridgeError
from escbridge.matrix.spec import ID_PATTERN
from escbridge.matrix.templates import check_template
from escbridge.notify.context import CONTEXT_KEYS, sample_context
from escbridge.notify.schedule import quiet_window_at, window_ends
from escbridge.notify.spec import DIGEST_MAX, QuietHoursSpec, TargetSpec, TemplateSpec

if TYPE_CHECKING:
    from escbridge.matrix.model import Matrix

__all__ = [
    "KINDS",
    "SLACK_API",
    "TEMPLATE_VARIABLES",
    "EmailSettings",
    "MessageTemplate",
    "NotifySetupError",
    "NotifyTarget",
    "QuietWindow",
    "Settings",
    "SignedWebhook",
    "SlackBot",
    "SlackWebhook",
    "TeamsWebhook",
    "address_problem",
    "compile_targets",
    "env_references",
    "environment_problems",
    "resolve",
    "url_problem",
]

Kind = Literal["slack", "teams", "email", "webhook"]
KINDS: tuple[Kind, ...] = ("slack", "teams", "email", "webhook")
#: What a custom template may use: the context of the escalation, and ``count`` (how many
#: escalations the message carries: more than one in a digest).
TEMPLATE_VARIABLES = CONTEXT_KEYS | {"count"}
#: The base URL of Slack's Web API (a bot's ``api_url`` unless the matrix names another).
SLACK_API = "https://slack.com/api"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d\d)$")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class NotifySetupError(EscbridgeError):
    """A target cannot be used as configured now: an unset variable, a bad resolved value."""


@dataclass(frozen=True)
class SlackWebhook:
    """A Slack incoming webhook: the URL is the credential."""

    webhook_url: str = field(repr=False)


@dataclass(frozen=True)
class SlackBot:
    """A Slack app's bot token posting with chat.postMessage to ``channel`` (an id: C0123…)."""

    token: str = field(repr=False)
    channel: str
    api_url: str = SLACK_API


@dataclass(frozen=True)
class TeamsWebhook:
    """A Teams incoming webhook or Power Automate workflow URL: the URL is the credential."""

    url: str = field(repr=False)


@dataclass(frozen=True)
class EmailSettings:
    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    username: str | None
    password: str | None = field(repr=False)
    sender: str
    to: tuple[str, ...]


@dataclass(frozen=True)
class SignedWebhook:
    """Any HTTPS endpoint; each request is signed with ``secret`` (see escbridge.notify.send)."""

    url: str
    secret: str = field(repr=False)


Settings = SlackWebhook | SlackBot | TeamsWebhook | EmailSettings | SignedWebhook


@dataclass(frozen=True)
class QuietWindow:
    """Quiet from ``start`` to ``end`` on the local clock of ``zone``, beginning on ``days``
    (0=Monday); an ``end`` not after ``start`` is on the next day ("22:00" to "07:00")."""

    start: time
    end: time
    zone: ZoneInfo
    days: frozenset[int] = frozenset(range(7))

    @property
    def length(self) -> timedelta:
        """The nominal length (a DST change makes that night an hour longer or shorter)."""
        minutes = (self.end.hour * 60 + self.end.minute) - (
            self.start.hour * 60 + self.start.minute
        )
        return timedelta(minutes=minutes if minutes > 0 else minutes + 24 * 60)


@dataclass(frozen=True)
class MessageTemplate:
    """A target's own message: each part a sandboxed template checked at load (None: default)."""

    subject: jinja2.Template | None = None
    text: jinja2.Template | None = None
    html: jinja2.Template | None = None


@dataclass(frozen=True)
class NotifyTarget:
    """One place the matrix tells about escalations: where, how often, and when not."""

    id: str
    kind: Kind
    settings: Settings
    digest: timedelta | None = None
    quiet_hours: tuple[QuietWindow, ...] = ()
    template: MessageTemplate | None = None
    line: int | None = None
    #: values read from the environment by ``resolve`` (secrets, whatever field held them)
    from_env: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def secret_values(self) -> tuple[str, ...]:
        """Every value of this target that grants access, for the Redactor (after ``resolve``:
        the real ones). A ``${VAR}`` still unresolved is no secret and is left out."""
        s = self.settings
        if isinstance(s, SlackWebhook):
            values: list[str | None] = [s.webhook_url]
        elif isinstance(s, SlackBot):
            values = [s.token]
        elif isinstance(s, TeamsWebhook):
            values = [s.url]
        elif isinstance(s, EmailSettings):
            values = [s.password]
        else:
            values = [s.secret]
        values.extend(self.from_env)
        return tuple(
            dict.fromkeys(v for v in values if v and _ENV_REF.search(v) is None and len(v) >= 4)
        )

    def describe(self) -> str:
        """Where the target delivers, for people: hosts and recipients, never a URL's path or
        query (a Slack or Teams webhook URL is itself the credential)."""
        s = self.settings
        if isinstance(s, SlackWebhook):
            return f"Slack incoming webhook ({_host(s.webhook_url)})"
        if isinstance(s, SlackBot):
            return f"Slack bot to channel {s.channel} ({_host(s.api_url)})"
        if isinstance(s, TeamsWebhook):
            return f"Teams webhook ({_host(s.url)})"
        if isinstance(s, EmailSettings):
            return f"e-mail to {', '.join(s.to)} via {s.host}:{s.port} ({s.security})"
        return f"signed webhook ({_host(s.url)})"

    def env_references(self) -> set[str]:
        """The environment variables this target's settings name."""
        found: set[str] = set()
        for value in dataclasses.astuple(self.settings):
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, str):
                    found.update(_ENV_REF.findall(item))
        return found


# --- checks shared by the loader and resolve -----------------------------------------------------


def _host(url: str) -> str:
    """The host (and port) of a URL, or the ``${VAR}`` it still is."""
    if _ENV_REF.fullmatch(url.strip()):
        return url.strip()
    try:
        return urlsplit(url.strip()).netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive notifications, or None: https, or http to this machine only
    (a sink in a test, a relay on localhost): the message and its signature are not for the
    network to read."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "is not an http(s) URL"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must be https (plain http only to localhost)"
    return None


def address_problem(value: str) -> str | None:
    """Why ``value`` is not an e-mail address ("a@example.com" or "Name <a@example.com>")."""
    _, address = parseaddr(value)
    if not address or not _ADDRESS.match(address) or "\n" in value or "\r" in value:
        return f'"{value}" is not an e-mail address'
    return None


def _clock(text: str, *, end: bool) -> time | None:
    match = _CLOCK.match(text.strip())
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if end and (hour, minute) == (24, 0):
        return time(0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def _days(text: str) -> frozenset[int] | None:
    """``mon-fri``, ``sat,sun``, ``fri-mon`` (wrapping), ``daily``, ``weekdays``, ``weekends``."""
    groups = {
        "daily": range(7),
        "everyday": range(7),
        "weekdays": range(5),
        "weekend": (5, 6),
        "weekends": (5, 6),
    }
    out: set[int] = set()
    for raw in text.split(","):
        item = raw.strip().lower()
        if item in groups:
            out.update(groups[item])
            continue
        first, dash, last = (p.strip()[:3] for p in item.partition("-"))
        if first not in _DAY_NAMES or (dash and last not in _DAY_NAMES):
            return None
        a = _DAY_NAMES.index(first)
        b = _DAY_NAMES.index(last) if dash else a
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(out)


# --- compiling the notify: section ----------------------------------------------------------------

Fail = Callable[[Sequence[str | int], str], None]


def compile_targets(targets: Mapping[str, TargetSpec], fail: Fail) -> dict[str, NotifyTarget]:
    """The matrix's targets, checked; every problem goes to ``fail(path, message)`` (the loader
    turns the path into file:line) and that target is left out."""
    out: dict[str, NotifyTarget] = {}
    said: list[str] = []

    def failing(at: Sequence[str | int], message: str) -> None:
        said.append(message)
        fail(at, message)

    for target_id, spec in targets.items():
        path: tuple[str | int, ...] = ("notify", "targets", target_id)
        before = len(said)
        if not re.match(ID_PATTERN, target_id):
            failing(path, f'"{target_id}" is not a valid id (lower-case letters, digits, _ and -)')
        kinds = [k for k in KINDS if getattr(spec, k) is not None]
        if len(kinds) != 1:
            found = f"has {' and '.join(kinds)}" if kinds else "has none"
            failing(path, f"needs exactly one of slack, teams, email, webhook ({found})")
            continue
        kind = kinds[0]
        settings = _settings(spec, kind, (*path, kind), failing)
        digest = _digest(spec, (*path, "digest"), failing)
        windows = tuple(
            w
            for i, q in enumerate(spec.quiet_hours)
            if (w := _window(q, (*path, "quiet_hours", i), failing)) is not None
        )
        if windows and _always_quiet(windows):
            failing((*path, "quiet_hours"), "is quiet all week: nothing would ever be sent")
        template = (
            _template(spec.template, kind, (*path, "template"), failing)
            if spec.template is not None
            else None
        )
        if len(said) > before or settings is None:
            continue
        out[target_id] = NotifyTarget(
            id=target_id,
            kind=kind,
            settings=settings,
            digest=digest,
            quiet_hours=windows,
            template=template,
        )
    return out


def _checked_url(value: str, path: Sequence[str | int], fail: Fail) -> None:
    if _ENV_REF.search(value) is None:  # a ${VAR} is checked once resolved
        problem = url_problem(value)
        if problem is not None:
            fail(path, problem)


def _settings(
    spec: TargetSpec, kind: Kind, path: tuple[str | int, ...], fail: Fail
) -> Settings | None:
    if kind == "slack" and spec.slack is not None:
        s = spec.slack
        if s.webhook_url is not None:
            if s.token is not None or s.channel is not None:
                fail(path, "webhook_url, or token and channel: not both")
                return None
            _checked_url(s.webhook_url, (*path, "webhook_url"), fail)
            return SlackWebhook(s.webhook_url)
        if s.token is None or s.channel is None:
            missing = "channel" if s.token is not None else "token"
            if s.token is None and s.channel is None:
                fail(path, "needs webhook_url (an incoming webhook), or token and channel (a bot)")
            else:
                fail(path, f"a bot needs token and channel: {missing} is missing")
            return None
        api_url = s.api_url or SLACK_API
        _checked_url(api_url, (*path, "api_url"), fail)
        return SlackBot(s.token, s.channel, api_url.rstrip("/"))
    if kind == "teams" and spec.teams is not None:
        _checked_url(spec.teams.url, (*path, "url"), fail)
        return TeamsWebhook(spec.teams.url)
    if kind == "webhook" and spec.webhook is not None:
        _checked_url(spec.webhook.url, (*path, "url"), fail)
        if _ENV_REF.search(spec.webhook.secret) is None and len(spec.webhook.secret) < 16:
            fail((*path, "secret"), "is too short to sign with: use 16 characters or more")
        return SignedWebhook(spec.webhook.url, spec.webhook.secret)
    assert spec.email is not None
    e = spec.email
    ok = True
    if not e.host.strip() or "://" in e.host or "/" in e.host:
        fail((*path, "host"), f'"{e.host}" is not a host name (no scheme, no path)')
        ok = False
    for key, values in (("from", [e.sender]), ("to", e.to)):
        for i, value in enumerate(values):
            if _ENV_REF.search(value) is None and (problem := address_problem(value)):
                fail((*path, key) if key == "from" else (*path, key, i), problem)
                ok = False
    if (e.username is None) != (e.password is None):
        fail(path, "username and password go together (or neither, for a relay without login)")
        ok = False
    if e.password is not None and e.security == "none" and not _is_loopback(e.host):
        fail((*path, "security"), "a password is never sent unencrypted: use starttls or tls")
        ok = False
    if not ok:
        return None
    return EmailSettings(
        host=e.host.strip(),
        port=e.port or _DEFAULT_PORTS[e.security],
        security=e.security,
        username=e.username,
        password=e.password,
        sender=e.sender,
        to=tuple(e.to),
    )


def _digest(spec: TargetSpec, path: tuple[str | int, ...], fail: Fail) -> timedelta | None:
    if spec.digest is None:
        return None
    length = spec.digest.measured()
    if length <= timedelta(0):
        fail(path, "must be longer than 0 (leave it out to send each escalation at once)")
        return None
    if length > DIGEST_MAX.measured():
        fail(path, f"is longer than {DIGEST_MAX}: a digest is for bursts, not a daily report")
        return None
    return length


def _window(q: QuietHoursSpec, path: tuple[str | int, ...], fail: Fail) -> QuietWindow | None:
    start = _clock(q.start, end=False)
    end = _clock(q.end, end=True)
    ok = True
    if start is None:
        fail((*path, "from"), f'"{q.start}" is not a time of day (HH:MM)')
        ok = False
    if end is None:
        fail((*path, "to"), f'"{q.end}" is not a time of day (HH:MM, or 24:00)')
        ok = False
    try:
        zone = ZoneInfo(q.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        fail((*path, "timezone"), f'"{q.timezone}" is not an IANA time zone (e.g. Europe/Berlin)')
        ok = False
    days = frozenset(range(7))
    if q.days is not None:
        found = _days(q.days)
        if found is None:
            fail(
                (*path, "days"),
                f'"{q.days}" is not a list of days (mon..sun, ranges such as mon-fri, '
                "lists such as sat,sun, daily, weekdays, weekends)",
            )
            ok = False
        else:
            days = found
    if not ok or start is None or end is None:
        return None
    if start == end and start != time(0):
        fail(path, "from and to are the same time: for a whole day write 00:00 to 24:00")
        return None
    return QuietWindow(start, end, zone, days)


def _always_quiet(windows: Sequence[QuietWindow]) -> bool:
    """Whether the windows leave no moment of the week to send in: a gap would begin where some
    window ends outside every other one (checked over a reference week, DST aside)."""
    week = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, far from DST changes
    return all(quiet_window_at(windows, end) is not None for end in window_ends(windows, week, 9))


def _template(
    spec: TemplateSpec, kind: Kind, path: tuple[str | int, ...], fail: Fail
) -> MessageTemplate | None:
    if kind == "webhook":
        fail(path, "a webhook sends the escalation as JSON: templates are for slack, teams, email")
        return None
    if spec.html is not None and kind != "email":
        fail((*path, "html"), "html is for email targets (slack and teams take subject and text)")
        return None
    if spec.subject is None and spec.text is None and spec.html is None:
        fail(path, "needs subject, text or html")
        return None
    sample = {**sample_context(), "count": 1}
    compiled: dict[str, jinja2.Template | None] = {}
    for part in ("subject", "text", "html"):
        text = getattr(spec, part)
        if text is None:
            compiled[part] = None
            continue
        try:
            compiled[part] = check_template(text, TEMPLATE_VARIABLES, sample, html=part == "html")
        except ValueError as exc:
            fail((*path, part), str(exc))
            return None
    return MessageTemplate(**compiled)


# --- the environment ---------------------------------------------------------------------------


def env_references(matrix: Matrix) -> dict[str, set[str]]:
    """The environment variables each target of ``matrix`` names (targets naming none left out)."""
    return {
        target_id: refs
        for target_id, target in matrix.notify.items()
        if (refs := target.env_references())
    }


def environment_problems(matrix: Matrix, environ: Mapping[str, str]) -> list[str]:
    """One message per target that cannot be resolved from ``environ`` (unset or empty
    variable, a resolved URL or address that is wrong): for the worker's start and validate."""
    problems = []
    for target in matrix.notify.values():
        try:
            resolve(target, environ)
        except NotifySetupError as exc:
            problems.append(str(exc))
    return problems


def resolve(target: NotifyTarget, environ: Mapping[str, str]) -> NotifyTarget:
    """``target`` with every ``${VAR}`` replaced from ``environ`` and the results checked as
    the loader checks literal values; NotifySetupError names the target and the variable,
    never a value."""
    used: list[str] = []

    def substitute(value: Any, key: str) -> Any:
        if isinstance(value, tuple):
            return tuple(substitute(item, key) for item in value)
        if not isinstance(value, str) or "${" not in value:
            return value

        def repl(match: re.Match[str]) -> str:
            var = match.group(1)
            got = environ.get(var)
            if not got:
                state = "is not set" if got is None else "is empty"
                raise NotifySetupError(
                    f"notification target {target.id}: environment variable {var} {state} "
                    f"({target.kind} {key})"
                )
            used.append(got)
            return got

        return _ENV_REF.sub(repl, value)

    settings = target.settings
    changes = {
        f.name: substitute(getattr(settings, f.name), f.name) for f in dataclasses.fields(settings)
    }
    resolved = dataclasses.replace(settings, **changes)
    problem = _resolved_problem(resolved)
    if problem is not None:
        raise NotifySetupError(f"notification target {target.id}: {problem}")
    return dataclasses.replace(target, settings=resolved, from_env=tuple(used))


def _resolved_problem(settings: Settings) -> str | None:
    """What is wrong with a value once ``${VAR}`` is replaced (named by field, not shown)."""
    urls: list[tuple[str, str]] = []
    if isinstance(settings, SlackWebhook):
        urls = [("webhook_url", settings.webhook_url)]
    elif isinstance(settings, SlackBot):
        urls = [("api_url", settings.api_url)]
    elif isinstance(settings, TeamsWebhook | SignedWebhook):
        urls = [("url", settings.url)]
    for key, url in urls:
        problem = url_problem(url)
        if problem is not None:
            return f"{key} {problem}"
    if isinstance(settings, EmailSettings):
        for key, value in [("from", settings.sender), *(("to", v) for v in settings.to)]:
            if address_problem(value) is not None:
                return f"{key}: {address_problem(value)}"
    if isinstance(settings, SignedWebhook) and len(settings.secret) < 16:
        return "the webhook secret is too short to sign with: use 16 characters or more"
    return None
