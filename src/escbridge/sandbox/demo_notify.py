"""The demo's notifications: every target pointed at a local sink, each message counted there.

`escbridge demo` runs the matrix with its ``notify:`` targets rewritten to local stand-ins
(:mod:`escbridge.sandbox.sinks`): a Slack target posts to the HTTP sink as an incoming
webhook, a Teams target to the HTTP sink, a signed webhook to the HTTP sink (signed with a
throw-away secret), and an e-mail target to the SMTP sink (no TLS on loopback) — nothing
leaves the machine, whatever URLs, tokens or addresses the matrix names. A matrix without
targets (the demo matrix) gets four: the team chat told of every escalation beyond the first
level, Teams and mail for the managers at the top level, and an audit webhook for all.
Digest windows and quiet hours are left out: the simulated day would hold the messages past
its end.

At the end the demo counts what each sink received per target and compares it with what the
store says was sent: one message per escalation and target, each once.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from escbridge.sandbox.sinks import HttpSink, SmtpSink
from escbridge.wording import plural

__all__ = ["DEMO_SECRET", "DemoNotifications", "demo_matrix", "tally"]

#: Signs the demo's webhooks; opens nothing (the receiver is the sink on loopback).
DEMO_SECRET = "escbridge-demo-signing-secret"

KIND_NAMES = {
    "slack": "Slack",
    "teams": "Teams",
    "email": "e-mail",
    "webhook": "signed webhook",
}
_KINDS = tuple(KIND_NAMES)
_MESSAGE_ID = re.compile(r"^<escbridge\.\d+\.(?P<target>[^@]+)@")
_DEMO_FROM = "escbridge demo <escbridge@demo.invalid>"


@dataclass
class DemoNotifications:
    """The day's notifications: per target, its kind, what the store marked sent and what
    the sinks received (messages, not escalations: a digest would be one)."""

    kinds: dict[str, str] = field(default_factory=dict)  # target id -> kind
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)  # state -> rows not sent
    added: bool = False  # the targets are the demo's own (the matrix had none)
    left_out: str | None = None  # why a kind was left out (aiosmtpd missing)

    @property
    def problems(self) -> list[str]:
        found = [
            f"notifications to {target}: the store says {self.sent[target]} sent, "
            f"the local sink received {self.received[target]}"
            for target in self.kinds
            if self.sent[target] != self.received[target]
        ]
        found += [f"{plural(n, 'notification')} {state}" for state, n in self.other.items() if n]
        return found

    def lines(self) -> list[str]:
        """The summary's paragraph."""
        total = sum(self.received.values())
        whose = "the demo's own targets" if self.added else "the matrix's targets"
        once = "see the problem below" if self.problems else "each delivered once"
        out = [
            f"Notifications: {plural(total, 'message')} to {whose}, {once}, "
            "to local sinks (nothing left this machine):"
        ]
        for target, kind in self.kinds.items():
            out.append(
                f"  {target:<16} {KIND_NAMES.get(kind, kind):<15} "
                f"{self.received[target]} received, {self.sent[target]} sent in the store"
            )
        if self.left_out:
            out.append(f"  ({self.left_out})")
        return out


def demo_matrix(
    source: Path, http: HttpSink, smtp: SmtpSink | None
) -> tuple[str, DemoNotifications]:
    """The matrix text the demo runs: ``source`` with its targets pointed at the sinks."""
    data: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    notify = data.get("notify") or {}
    targets: dict[str, Any] = dict(notify.get("targets") or {})
    tally = DemoNotifications()
    if not targets:
        targets, tally.added = _own_targets(data), True
    rewritten: dict[str, Any] = {}
    for target_id, spec in targets.items():
        kind = next((k for k in _KINDS if k in (spec or {})), None)
        if kind is None:
            continue
        settings = _sink_settings(kind, str(target_id), spec[kind], http, smtp)
        if settings is None:
            tally.left_out = "e-mail targets left out: the SMTP sink needs `pip install aiosmtpd`"
            continue
        kept = {k: v for k, v in spec.items() if k == "template"}
        rewritten[str(target_id)] = {kind: settings, **kept}
        tally.kinds[str(target_id)] = kind
    for rung in [*data.get("levels", []), *(data.get("teams") or {}).values()]:
        if isinstance(rung, dict) and "notify" in rung:
            rung["notify"] = [t for t in rung["notify"] if t in rewritten]
    data["notify"] = {"targets": rewritten}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True), tally


def _own_targets(data: dict[str, Any]) -> dict[str, Any]:
    """The demo's targets, attached to the matrix's rungs (see the module's docstring)."""
    levels = [level for level in data.get("levels", []) if isinstance(level, dict)]
    for level in levels[1:]:
        level["notify"] = ["team-chat", "audit"]
    if len(levels) > 1:
        levels[-1]["notify"] = ["team-chat", "managers-teams", "managers-mail", "audit"]
    for team in (data.get("teams") or {}).values():
        if isinstance(team, dict):
            team["notify"] = ["team-chat", "audit"]
    return {
        "team-chat": {"slack": {}},
        "managers-teams": {"teams": {}},
        "managers-mail": {"email": {"to": ["support-managers@demo.invalid"]}},
        "audit": {"webhook": {}},
    }


def _sink_settings(
    kind: str, target_id: str, settings: Any, http: HttpSink, smtp: SmtpSink | None
) -> dict[str, Any] | None:
    if kind == "slack":
        return {"webhook_url": http.url(f"/slack/{target_id}")}
    if kind == "teams":
        return {"url": http.url(f"/teams/{target_id}")}
    if kind == "webhook":
        return {"url": http.url(f"/webhook/{target_id}"), "secret": DEMO_SECRET}
    if smtp is None:
        return None
    given = settings if isinstance(settings, dict) else {}
    to = given.get("to") or ["support@demo.invalid"]
    to = [a for a in (to if isinstance(to, list) else [to]) if "${" not in str(a)]
    sender = given.get("from")
    return {
        "host": smtp.host,
        "port": smtp.port,
        "security": "none",
        "from": sender if sender and "${" not in str(sender) else _DEMO_FROM,
        "to": to or ["support@demo.invalid"],
    }


def tally(
    notifications: DemoNotifications, store: Any, http: HttpSink, smtp: SmtpSink | None
) -> DemoNotifications:
    """Fill in what the store marked sent and what each sink received, per target."""
    from escbridge.store import NOTIFY_SENT, NOTIFY_STATES

    for row in store.notifications(NOTIFY_STATES, limit=None):
        if row.state == NOTIFY_SENT:
            if row.digest_of is None or row.digest_of == row.id:  # one message
                notifications.sent[row.target] += 1
        else:
            notifications.other[row.state] += 1
    for request in http.requests():
        parts = request.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] in ("slack", "teams", "webhook"):
            notifications.received[parts[1]] += 1
    for mail in smtp.mails if smtp is not None else ():
        found = _MESSAGE_ID.match(str(mail.message["Message-ID"] or ""))
        if found:
            notifications.received[found["target"]] += 1
    return notifications
