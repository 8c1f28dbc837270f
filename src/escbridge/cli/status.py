"""`escbridge status`: the whole installation at a glance, from the store alone (fast).

Per instance: whether it is configured and how its last `check` went (when one was recorded),
its queue (waiting, retrying, claimed by a worker), dead letters, the notifications of its
escalations (waiting, failed, unknown, sent), its last sync and what it came to, and its
due-queue's head; then the leases held (sync runs, tickets being decided) and
the schema version against the one this escbridge needs. No helpdesk is called.

Exit codes: 0 nothing needs attention; 1 something does (dead letters, notifications failed
or of unknown outcome, the schema not at this
version, a last check that found the instance not ready, a last sync that did not get
through, a deadline overdue by more than :data:`OVERDUE_GRACE` — no worker acting on the
due-queue), each named in a "needs attention" line; 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from escbridge.cli._common import EXIT_OK, EXIT_PROBLEM, failed
from escbridge.cli.store import (
    _add_store_arguments,
    _relative,
    _time,
    configured_instances,
    given_options,
    store_url,
)
from escbridge.errors import InvalidInputError, StoreUnavailableError
from escbridge.store import Store, safe_url
from escbridge.store.history import CHECK, SYNC, Overview, Run, overview, record_run, store_exists
from escbridge.wording import plural

if TYPE_CHECKING:
    from escbridge.connector import CheckReport

__all__ = [
    "OVERDUE_GRACE",
    "configure_status_parser",
    "record_check_reports",
    "run_status",
    "status_report",
]

#: A deadline overdue by more than this means no worker is acting on the due-queue.
OVERDUE_GRACE = timedelta(minutes=5)


def configure_status_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Per instance: readiness (last `check`), queue depth, dead letters, notifications, "
        "last sync and its result, due-queue head; leases held; the schema version. Reads the "
        "store only. Exit 1 when something needs attention (dead letters, notifications failed "
        "or of unknown outcome, schema not current, an instance not ready at its last check, a "
        "failed last sync, overdue deadlines), else 0."
    )
    _add_store_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")


@dataclass
class Status:
    """What `escbridge status` shows: the store's overview, the configured instances (with
    their helpdesk types; empty when only --store was given) and what needs attention."""

    store: str
    overview: Overview
    instances: dict[str, str | None] = field(default_factory=dict)  # name -> type (None: unknown)
    attention: list[str] = field(default_factory=list)


def run_status(args: argparse.Namespace) -> int:
    out = sys.stdout
    try:
        url = store_url(args)
        configured: dict[str, str | None] = dict(configured_instances(args) or {})
    except InvalidInputError as error:
        return failed("status", error, sys.stderr)
    if not store_exists(url):
        print(
            f"store {safe_url(url)}: does not exist yet — run "
            f"`escbridge db upgrade{given_options(args)}`",
            file=out,
        )
        return EXIT_PROBLEM
    try:
        with Store(url, check_schema=False) as store:
            status = status_report(
                store,
                configured,
                datetime.now(UTC),
                given_options(args),
                given_options(args, store=False),
            )
    except StoreUnavailableError as error:
        return failed("status", error, sys.stderr)
    if args.format == "json":
        json.dump(status_json(status), out, indent=2)
        print(file=out)
    else:
        out.write(format_status(status, datetime.now(UTC)))
    return EXIT_PROBLEM if status.attention else EXIT_OK


def status_report(
    store: Store,
    configured: dict[str, str | None],
    now: datetime,
    options: str = "",
    config_option: str = "",
) -> Status:
    """The overview of ``store`` for the ``configured`` instances, and what needs attention;
    ``options`` (`` --config X --store URL``; ``config_option`` for a command without --store)
    end the commands its hints suggest, as the user gave them."""
    from escbridge.sync import LEASE_TICKET_ID

    seen = overview(store, now)
    status = Status(safe_url(store.url), seen, dict(configured))
    attention = status.attention
    if seen.schema is not None:
        attention.append(f"store {seen.schema}")
        return status
    names = set(seen.queues) | set(seen.due) | {i for i, _ in seen.runs} | set(seen.notifications)
    names |= {lease.instance for lease in seen.leases if lease.ticket_id == LEASE_TICKET_ID}
    for name in sorted(names - set(configured)):
        status.instances[name] = None
    for name in sorted(status.instances):
        queue = seen.queues.get(name)
        if queue is not None and queue.failed:
            attention.append(
                f"{name}: {plural(queue.failed, 'dead letter')} — `escbridge jobs --failed "
                f"--instance {name}{options}` says why; `escbridge jobs retry --all-failed"
                f"{options}` replays them once the cause is fixed"
            )
        told = seen.notifications.get(name, {})
        trouble = told.get("failed", 0) + told.get("unknown", 0)
        if trouble:
            attention.append(
                f"{name}: {plural(trouble, 'notification')} failed or of unknown outcome — "
                f"`escbridge jobs --failed --instance {name}{options}` says why; "
                f"`escbridge jobs --replay-notification ID{options}` sends one again"
            )
        check = seen.runs.get((name, CHECK))
        if check is not None and not check.ok:
            attention.append(
                f"{name}: not ready at the last check: {check.summary} — fix it, then run "
                f"`escbridge check{config_option}` again"
            )
        sync = seen.runs.get((name, SYNC))
        if sync is not None and not sync.ok:
            attention.append(f"{name}: the last sync did not get through: {sync.summary}")
        due = seen.due.get(name)
        if due is not None and due.next_due is not None and due.next_due < now - OVERDUE_GRACE:
            attention.append(
                f"{name}: {plural(due.overdue, 'deadline')} overdue since "
                f"{_time(due.next_due)} — no worker is acting on the due-queue: start "
                "`escbridge worker` (or `escbridge serve`)"
            )
    return status


def format_status(status: Status, now: datetime) -> str:
    from escbridge.sync import LEASE_TICKET_ID

    seen = status.overview
    lines = []
    if seen.schema is not None:
        lines.append(f"store {status.store}: {seen.schema}")
    else:
        lines.append(f"store {status.store}: schema {seen.schema_revision} (current)")
    if seen.schema is None:
        if not status.instances:
            lines.append("no instances configured, and the store has seen none")
        for name, helpdesk in status.instances.items():
            lines.extend(_instance_lines(status, name, helpdesk, now))
        syncs = [lease for lease in seen.leases if lease.ticket_id == LEASE_TICKET_ID]
        tickets = [lease for lease in seen.leases if lease.ticket_id != LEASE_TICKET_ID]
        if syncs or tickets:
            lines.append("leases held:")
        for lease in syncs:
            lines.append(
                f"  sync of {lease.instance}: {lease.owner} until {_time(lease.expires_at)}"
            )
        for lease in tickets:
            lines.append(
                f"  ticket {lease.instance}/{lease.ticket_id}: {lease.owner} until "
                f"{_time(lease.expires_at)}"
            )
        if not seen.leases:
            lines.append("leases held: none (no sync running, no ticket being decided)")
    if status.attention:
        lines.append("needs attention:")
        lines.extend(f"  - {item}" for item in status.attention)
    else:
        lines.append("nothing needs attention")
    return "\n".join(lines) + "\n"


def _instance_lines(status: Status, name: str, helpdesk: str | None, now: datetime) -> list[str]:
    seen = status.overview
    kind = f" ({helpdesk})" if helpdesk else " (not in escbridge.yaml: seen in the store only)"
    check = seen.runs.get((name, CHECK))
    lines = [f"{name}{kind}: {_check_line(check, now)}"]
    queue = seen.queues.get(name)
    if queue is None:
        lines.append("  queue: empty, no dead letters")
    else:
        waiting = f"{queue.pending} waiting, {queue.retrying} retrying, {queue.claimed} claimed"
        dead = f"{plural(queue.failed, 'dead letter')}"
        oldest = seen.oldest_failed.get(name)
        if oldest is not None:
            dead += f" (oldest {_time(oldest)})"
        lines.append(f"  queue: {waiting}; {dead}; {queue.done} done")
    told = seen.notifications.get(name)
    if told:
        queued = told.get("pending", 0) + told.get("sending", 0)
        lines.append(
            f"  notifications: {queued} waiting, {told.get('failed', 0)} failed, "
            f"{told.get('unknown', 0)} unknown; {told.get('sent', 0)} sent"
        )
    in_flight = seen.in_flight.get(name)
    if in_flight:
        lines.append(
            f"  writes in flight: {in_flight} (noted before applying, not yet recorded; the "
            "next attempt checks what landed)"
        )
    lines.append(f"  last sync: {_sync_line(seen.runs.get((name, SYNC)), now)}")
    due = seen.due.get(name)
    if due is None:
        lines.append("  due-queue: no open ticket known yet (`escbridge sync` fills it)")
    else:
        head = "nothing due by time alone"
        if due.next_due is not None:
            head = f"next {_time(due.next_due)} ({_relative(due.next_due, now)})"
        lines.append(
            f"  due-queue: {plural(due.open, 'open ticket')} known, {due.with_deadline} with a "
            f"deadline, {due.overdue} overdue; {head}"
        )
    return lines


def _check_line(check: Run | None, now: datetime) -> str:
    if check is None:
        return "not checked (no `escbridge check` result stored)"
    verdict = "ready" if check.ok else "NOT READY"
    when = f"{_time(check.finished_at)} ({_ago(check.finished_at, now)})"
    return f"{verdict} at the last check, {when}: {check.summary}"


def _sync_line(sync: Run | None, now: datetime) -> str:
    if sync is None:
        return "never (no `escbridge sync` run recorded)"
    verdict = "ok" if sync.ok else "FAILED"
    line = f"{_time(sync.finished_at)} ({_ago(sync.finished_at, now)}) {verdict} — {sync.summary}"
    if not sync.ok:
        last = _time(sync.last_ok_at) if sync.last_ok_at else "never"
        line += f"; last one that got through: {last}"
    return line


def _ago(at: datetime, now: datetime) -> str:
    """``5m ago``, ``2d3h ago``; ``just now`` within a minute (or a clock a little ahead)."""
    if (now - at).total_seconds() < 60:
        return "just now"
    return _relative(at, now).removeprefix("overdue ") + " ago"


def status_json(status: Status) -> dict[str, Any]:
    from escbridge.sync import LEASE_TICKET_ID

    seen = status.overview
    data: dict[str, Any] = {
        "store": status.store,
        "schema": {
            "revision": seen.schema_revision,
            "head": seen.schema_head,
            "current": seen.schema is None,
            "problem": seen.schema,
        },
        "attention": list(status.attention),
        "ok": not status.attention,
    }
    if seen.schema is not None:
        return data
    instances: dict[str, Any] = {}
    for name, helpdesk in status.instances.items():
        due = seen.due.get(name)
        check = seen.runs.get((name, CHECK))
        sync = seen.runs.get((name, SYNC))
        queue = seen.queues.get(name)
        oldest = seen.oldest_failed.get(name)
        instances[name] = {
            "configured": helpdesk is not None,
            "type": helpdesk,
            "check": check.as_json() if check is not None else None,
            "queue": queue.as_json() if queue is not None else None,
            "oldest_dead_letter": oldest.isoformat() if oldest is not None else None,
            "writes_in_flight": seen.in_flight.get(name, 0),
            "notifications": seen.notifications.get(name, {}),
            "last_sync": sync.as_json() if sync is not None else None,
            "due": None
            if due is None
            else {
                "open": due.open,
                "with_deadline": due.with_deadline,
                "overdue": due.overdue,
                "next_due": due.next_due.isoformat() if due.next_due else None,
            },
        }
    data["instances"] = instances
    data["leases"] = [
        {
            "kind": "sync" if lease.ticket_id == LEASE_TICKET_ID else "ticket",
            "instance": lease.instance,
            "ticket_id": None if lease.ticket_id == LEASE_TICKET_ID else lease.ticket_id,
            "owner": lease.owner,
            "expires_at": lease.expires_at.isoformat(),
        }
        for lease in seen.leases
    ]
    return data


# --- what sync leaves for status ------------------------------------------------------------


def record_check_reports(
    url: str, reports: Mapping[str, CheckReport], started: datetime, finished: datetime
) -> str | None:
    """Keep each instance's `escbridge check` verdict as its last check, for `status`.

    A check needs no store, so a store that does not exist yet, is at another schema version
    or cannot be reached is not an error: nothing is kept, and the reason comes back (None:
    kept) for the caller to mention if it likes.
    """
    if not store_exists(url):
        return f"store {safe_url(url)} does not exist yet"
    try:
        with Store(url) as store:
            for name, report in reports.items():
                record_run(store, _check_run(name, report, started, finished))
    except StoreUnavailableError as error:  # StoreSchemaError too
        return str(error)
    return None


def _check_run(name: str, report: CheckReport, started: datetime, finished: datetime) -> Run:
    if report.ok:
        summary = f"ready as {report.identity}" if report.identity else "ready"
    else:
        missing = [f"group {group!r} not found" for group in report.missing_groups]
        summary = "; ".join([*report.problems, *missing]) or "not ready"
    result = {
        "identity": report.identity,
        "problems": list(report.problems),
        "missing_groups": list(report.missing_groups),
        "notes": list(report.notes),
    }
    return Run(name, CHECK, started, finished, report.ok, summary, result)
