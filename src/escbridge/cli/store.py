"""`escbridge db …` and `escbridge jobs …`: the store's commands.

Exit codes: 0 done, 1 the command ran into a problem (store unavailable, nothing to retry),
2 invalid input (escbridge.yaml). The work is the store's (:class:`~escbridge.store.Store`,
:mod:`escbridge.store.migrate`); this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROBLEM,
    failed,
    store_url_arg,
)
from escbridge.errors import InvalidInputError, StoreSchemaError, StoreUnavailableError
from escbridge.store import (
    DONE,
    FAILED,
    JOB_STATUSES,
    NOTIFY_FAILED,
    NOTIFY_PENDING,
    NOTIFY_SENDING,
    NOTIFY_SENT,
    NOTIFY_STATES,
    NOTIFY_UNKNOWN,
    PENDING,
    PROCESSING,
    Job,
    Notification,
    Shadow,
    Store,
    head_revision,
    safe_url,
    upgrade,
)
from escbridge.store.history import escalated_without_job
from escbridge.wording import plural

__all__ = [
    "configure_db_parser",
    "configure_due_parser",
    "configure_jobs_parser",
    "run_db",
    "run_due",
    "run_jobs",
    "store_url",
]


def _out() -> TextIO:
    return sys.stdout


DEFAULT_CONFIG = "escbridge.yaml"


def _add_store_arguments(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # A nested subcommand repeats the options without defaults, so `jobs --config X retry 5`
    # and `jobs retry --config X 5` both work.
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS if nested else DEFAULT_CONFIG,
        help="escbridge.yaml naming the store",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        type=store_url_arg,
        default=argparse.SUPPRESS if nested else None,
        help="store URL, instead of the one in --config (sqlite:///PATH, postgresql+psycopg://…)",
    )


def store_url(args: argparse.Namespace) -> str:
    """The store URL: --store, else escbridge.yaml's ``store`` (ConfigError when unreadable)."""
    if args.store:
        return str(args.store)
    from escbridge.config import load_config

    return load_config(args.config, helpdesk_secrets=False).store_url


def given_options(args: argparse.Namespace, *, store: bool = True) -> str:
    """`` --config X --store URL`` as the user gave them (none when defaulted), to end a
    command a hint suggests: without them it would read escbridge.yaml's store, or fail.
    ``store=False`` for a command that has no --store (explain, sync); a password in the URL
    is shown redacted, for the user to fill in."""
    words = []
    config = getattr(args, "config", DEFAULT_CONFIG)
    if config != DEFAULT_CONFIG:
        words += ["--config", str(config)]
    if store and getattr(args, "store", None):
        words += ["--store", safe_url(str(args.store))]
    return "".join(f" {shlex.quote(word)}" for word in words)


# --- escbridge db -----------------------------------------------------------------------


def configure_db_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Create or upgrade the store's tables, or show their schema version."
    commands = parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = commands.add_parser(
        "upgrade", help="create the tables or bring them to this version (safe to repeat)"
    )
    _add_store_arguments(upgrade)
    status = commands.add_parser("status", help="the schema version of the store")
    _add_store_arguments(status)


def run_db(args: argparse.Namespace) -> int:
    out = _out()
    try:
        url = store_url(args)
        if args.db_command == "upgrade":
            result = upgrade(url)
            if result.changed:
                before = result.before or "empty"
                print(f"store {result.url}: upgraded {before} → {result.after}", file=out)
            else:
                print(f"store {result.url}: already at {result.after}", file=out)
            return EXIT_OK
        with Store(url, check_schema=False) as store:
            try:
                store.check_schema()
            except StoreSchemaError as error:
                print(str(error), file=out)
                return EXIT_PROBLEM
        print(f"store {safe_url(url)}: at {head_revision()} (current)", file=out)
        return EXIT_OK
    except (InvalidInputError, StoreUnavailableError) as error:
        return failed("db", error, out)


# --- escbridge jobs ------------------------------------------------------------------------


def configure_jobs_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Events waiting, in progress or dead-lettered (failed for good), and the "
        "notifications of escalations waiting, failed or of unknown outcome. "
        "`escbridge jobs retry` replays failed events; --replay-notification ID a notification."
    )
    _add_store_arguments(parser)
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--failed", action="store_true", help="only dead-lettered jobs")
    shown.add_argument("--all", action="store_true", help="done jobs too")
    parser.add_argument("--instance", help="only this helpdesk instance")
    parser.add_argument("--ticket", help="only this ticket id")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--replay-notification",
        action="append",
        type=int,
        default=[],
        metavar="ID",
        help="send a failed or unknown notification again (repeatable); for an unknown one, "
        "check first that it did not reach the channel or mailbox",
    )
    commands = parser.add_subparsers(dest="jobs_command", metavar="COMMAND")
    retry = commands.add_parser("retry", help="replay dead-lettered jobs with fresh attempts")
    _add_store_arguments(retry, nested=True)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID", help="job ids")
    which.add_argument("--all-failed", action="store_true", help="every dead-lettered job")


def run_jobs(args: argparse.Namespace) -> int:
    out = _out()
    try:
        with Store(store_url(args)) as store:
            if getattr(args, "jobs_command", None) == "retry":
                return _retry(store, args, out)
            if args.replay_notification:
                return _replay_notifications(store, args.replay_notification, out)
            return _list(store, args, out)
    except (InvalidInputError, StoreUnavailableError) as error:
        return failed("jobs", error, out)


def _retry(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    if args.all_failed:
        requeued = store.retry_jobs(None, datetime.now(UTC))
        print(f"requeued {plural(len(requeued), 'failed job')}", file=out)
        return EXIT_OK
    if not args.ids:
        print("escbridge jobs retry: name job ids or --all-failed", file=out)
        return EXIT_INVALID
    requeued = store.retry_jobs(args.ids, datetime.now(UTC))
    if requeued:
        print(
            f"requeued job{'s' if len(requeued) > 1 else ''} {', '.join(map(str, requeued))}",
            file=out,
        )
    for job_id in args.ids:
        if job_id in requeued:
            continue
        job = store.job(job_id)
        why = "no such job" if job is None else f"it is {job.status}, not failed"
        print(f"job {job_id} not requeued: {why}", file=out)
    return EXIT_OK if len(requeued) == len(set(args.ids)) else EXIT_PROBLEM


def _list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    statuses: Sequence[str] = (PENDING, PROCESSING, FAILED)
    if args.failed:
        statuses = (FAILED,)
    elif args.all:
        statuses = JOB_STATUSES
    jobs = store.jobs(statuses, instance=args.instance, ticket_id=args.ticket, limit=args.limit)
    counts = store.job_counts()
    by_sync: dict[str, int] = {}
    if args.ticket is not None:
        by_sync = escalated_without_job(store, args.ticket, args.instance)
    told = store.notification_counts()
    notices = _notifications(store, args) if any(told.values()) else []
    if args.format == "json":
        data: dict[str, object] = {"counts": counts, "jobs": [_job_json(job) for job in jobs]}
        if args.ticket is not None:
            data["escalated_without_job"] = by_sync
        data["notification_counts"] = told
        data["notifications"] = [_notification_json(n) for n in notices]
        json.dump(data, out, indent=2)
        print(file=out)
        return EXIT_OK
    summary = ", ".join(f"{counts[s]} {s}" for s in (PENDING, PROCESSING, FAILED, DONE))
    print(f"jobs: {summary}", file=out)
    if not jobs and not by_sync:
        nothing = "no failed jobs" if args.failed else "nothing to show"
        if any(told.values()) and not args.failed:
            nothing = "no jobs to show"
        if args.ticket is not None:
            nothing += f" for ticket {args.ticket}" + _history_hint(args)
        print(nothing, file=out)
    _print_sync_escalations(args, by_sync, out)
    if jobs:
        _print_jobs(jobs, out)
        if args.failed or counts[FAILED]:
            print(
                f"replay with `escbridge jobs retry ID…{given_options(args)}` or "
                f"`escbridge jobs retry --all-failed{given_options(args)}`",
                file=out,
            )
    if any(told.values()):
        _print_notifications(told, notices, out, given_options(args))
    return EXIT_OK


def _print_jobs(jobs: Sequence[Job], out: TextIO) -> None:
    rows = [("ID", "STATUS", "TRIES", "TICKET", "WHEN", "LAST ERROR / OUTCOME")]
    for job in jobs:
        rows.append(
            (
                str(job.id),
                job.status,
                str(job.attempts),
                f"{job.instance}/{job.ticket_id}",
                _when(job),
                (job.last_error if job.status != DONE else job.outcome) or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        print("  ".join([*cells, _one_line(row[5])]).rstrip(), file=out)


# --- notifications in escbridge jobs -------------------------------------------------------


def _notifications(store: Store, args: argparse.Namespace) -> list[Notification]:
    """The notifications to list: waiting and in trouble (``--failed``: in trouble only;
    ``--all``: sent ones too)."""
    states: Sequence[str] = (NOTIFY_PENDING, NOTIFY_SENDING, NOTIFY_FAILED, NOTIFY_UNKNOWN)
    if args.failed:
        states = (NOTIFY_FAILED, NOTIFY_UNKNOWN)
    elif args.all:
        states = NOTIFY_STATES
    return store.notifications(
        states, instance=args.instance, ticket_id=args.ticket, limit=args.limit
    )


def _print_notifications(
    counts: dict[str, int], notices: Sequence[Notification], out: TextIO, options: str = ""
) -> None:
    """The notifications table; ``options`` (:func:`given_options`) end the replay hint."""
    summary = ", ".join(f"{counts[s]} {s}" for s in NOTIFY_STATES)
    print(f"notifications: {summary}", file=out)
    if not notices:
        return
    rows = [("ID", "STATE", "TRIES", "TARGET", "TICKET", "WHEN", "LAST ERROR")]
    for notice in notices:
        rows.append(
            (
                str(notice.id),
                notice.state,
                str(notice.attempts),
                notice.target,
                f"{notice.instance}/{notice.ticket_id}",
                _notice_when(notice),
                notice.last_error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:6], widths, strict=True)]
        print("  ".join([*cells, _one_line(row[6])]).rstrip(), file=out)
    states = {notice.state for notice in notices}
    if NOTIFY_UNKNOWN in states:
        print(
            "unknown: the answer was lost, it may have gone out — check the channel or mailbox "
            "before replaying it",
            file=out,
        )
    if states & {NOTIFY_FAILED, NOTIFY_UNKNOWN}:
        print(f"send one again with `escbridge jobs --replay-notification ID{options}`", file=out)


def _notice_when(notice: Notification) -> str:
    if notice.state == NOTIFY_PENDING:
        return f"due {_time(notice.not_before)}"
    if notice.state == NOTIFY_SENDING:
        return f"sending until {_time(notice.lease_until)}"
    if notice.state == NOTIFY_SENT:
        return f"sent {_time(notice.sent_at)}"
    return f"created {_time(notice.created_at)}"


def _notification_json(notice: Notification) -> dict[str, object]:
    return {
        "id": notice.id,
        "instance": notice.instance,
        "ticket_id": notice.ticket_id,
        "escalation_id": notice.escalation_id,
        "target": notice.target,
        "state": notice.state,
        "attempts": notice.attempts,
        "not_before": notice.not_before.isoformat(),
        "created_at": notice.created_at.isoformat(),
        "sent_at": notice.sent_at.isoformat() if notice.sent_at else None,
        "digest_of": notice.digest_of,
        "last_error": notice.last_error,
    }


def _replay_notifications(store: Store, ids: Sequence[int], out: TextIO) -> int:
    requeued = store.replay_notifications(ids, datetime.now(UTC))
    if requeued:
        names = ", ".join(map(str, requeued))
        print(
            f"notification{'s' if len(requeued) > 1 else ''} {names} will be sent again "
            "by the next worker pass",
            file=out,
        )
    for notice_id in dict.fromkeys(ids):
        if notice_id in requeued:
            continue
        found = store.notifications(NOTIFY_STATES, ids=[notice_id])
        why = f"it is {found[0].state}" if found else "no such notification"
        print(f"notification {notice_id} not replayed: {why}", file=out)
    return EXIT_OK if len(requeued) == len(set(ids)) else EXIT_PROBLEM


def _history_hint(args: argparse.Namespace) -> str:
    """Where to look for the rest of what escbridge knows of ``args.ticket``."""
    name = args.instance or "INSTANCE"
    command = f"escbridge history {name} {args.ticket}{given_options(args)}"
    return f" (`{command}` shows all escbridge knows of it)"


def _print_sync_escalations(args: argparse.Namespace, by_sync: dict[str, int], out: TextIO) -> None:
    """A ticket sync escalated has no job (sync works outside the inbox): say so, and where
    its escalations are, instead of "nothing to show"."""
    for name, count in sorted(by_sync.items()):
        times = "once" if count == 1 else f"{count} times"
        print(
            f"ticket {args.ticket} on {name} was escalated {times} by sync, which makes no job: "
            f"`escbridge history {name} {args.ticket}{given_options(args)}` shows each "
            "escalation with its rule and reasons",
            file=out,
        )


def _when(job: Job) -> str:
    """What the time column means depends on the status: due, lease end, or finish."""
    if job.status == PENDING:
        return f"due {_time(job.next_attempt_at)}"
    if job.status == PROCESSING:
        return f"held by {job.lease_owner} until {_time(job.next_attempt_at)}"
    return f"ended {_time(job.finished_at)}" if job.finished_at else ""


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _one_line(text: str, width: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _job_json(job: Job) -> dict[str, object]:
    return {
        "id": job.id,
        "instance": job.instance,
        "ticket_id": job.ticket_id,
        "dedupe_key": job.dedupe_key,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "received_at": job.received_at.isoformat(),
        "next_attempt_at": job.next_attempt_at.isoformat(),
        "lease_owner": job.lease_owner,
        "last_error": job.last_error,
        "outcome": job.outcome,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


# --- escbridge due -----------------------------------------------------------------------


def configure_due_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The open tickets whose escalation decision changes next by time alone (an idle "
        "limit, an SLA, time at a level), soonest first: workers act on each at that instant."
    )
    _add_store_arguments(parser)
    parser.add_argument("--instance", help="only this helpdesk instance")
    parser.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    parser.add_argument("--format", choices=("table", "json"), default="table")


def configured_instances(args: argparse.Namespace) -> dict[str, str] | None:
    """The instances of escbridge.yaml by name and type, or None when there is none to ask
    (--store given and no config file): then any name is looked up."""
    from escbridge.config import load_config

    if args.store and not Path(args.config).exists():
        return None
    config = load_config(args.config, helpdesk_secrets=False)
    return {name: instance.type for name, instance in config.instances.items()}


def run_due(args: argparse.Namespace) -> int:
    out = _out()
    if args.limit < 1:
        print("escbridge due: --limit must be at least 1", file=sys.stderr)
        return EXIT_INVALID
    try:
        configured = configured_instances(args) if args.instance else None
        with Store(store_url(args)) as store:
            shadows = store.due_tickets(args.instance, limit=args.limit)
            counts = store.shadow_counts()
    except (InvalidInputError, StoreUnavailableError) as error:
        return failed("due", error)
    if args.instance and args.instance not in counts and args.instance not in (configured or ()):
        known = sorted(set(counts) | set(configured or ()))
        print(
            f"escbridge due: --instance: unknown instance {args.instance!r} (known: "
            f"{', '.join(known) or 'none yet'})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    now = datetime.now(UTC)
    if args.instance is not None:
        counts = {name: n for name, n in counts.items() if name == args.instance}
    if args.format == "json":
        data = {
            "instances": {
                name: {"open": n, "with_deadline": d} for name, (n, d) in sorted(counts.items())
            },
            "due": [_due_json(shadow, now) for shadow in shadows],
        }
        json.dump(data, out, indent=2)
        print(file=out)
        return EXIT_OK
    if not counts:
        print(
            "no open tickets in the shadow yet: `escbridge sync` fills it (its first run "
            "reconciles every open ticket), and every processed webhook adds its ticket",
            file=out,
        )
        return EXIT_OK
    for name, (n, d) in sorted(counts.items()):
        print(f"{name}: {plural(n, 'open ticket')} known, {d} with a deadline", file=out)
    if not shadows:
        print("nothing is due by time alone", file=out)
        return EXIT_OK
    rows = [("DUE (UTC)", "", "TICKET", "LEVEL", "SUBJECT")]
    for shadow in shadows:
        assert shadow.due_at is not None
        rows.append(
            (
                _time(shadow.due_at),
                _relative(shadow.due_at, now),
                f"{shadow.instance}/{shadow.ticket_id}",
                shadow.ticket.level or "-",
                shadow.ticket.subject,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  ".join([*cells, _one_line(row[4], 60)]).rstrip(), file=out)
    if any(s.due_at is not None and s.due_at < now for s in shadows):
        print(
            "overdue deadlines mean no worker is running: start `escbridge worker` "
            "(or `escbridge serve`)",
            file=out,
        )
    return EXIT_OK


def _relative(at: datetime, now: datetime) -> str:
    """``in 5m`` / ``overdue 2h``: how far a deadline is, to the minute."""
    seconds = int((at - now).total_seconds())
    ahead = seconds >= 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d"] if days else []
    if hours:
        parts.append(f"{hours}h")
    if minutes and not days:
        parts.append(f"{minutes}m")
    span = "".join(parts) or "<1m"
    return f"in {span}" if ahead else f"overdue {span}"


def _due_json(shadow: Shadow, now: datetime) -> dict[str, object]:
    return {
        "instance": shadow.instance,
        "ticket_id": shadow.ticket_id,
        "due_at": shadow.due_at.isoformat() if shadow.due_at else None,
        "overdue": shadow.due_at is not None and shadow.due_at < now,
        "level": shadow.ticket.level,
        "subject": shadow.ticket.subject,
        "seen_at": shadow.seen_at.isoformat(),
    }
