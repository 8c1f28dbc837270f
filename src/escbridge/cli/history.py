"""`escbridge history NAME ID`: everything escbridge knows of one ticket, in time order.

The answer to "why did ticket #81 move?": the events that came in for it (webhooks, deadlines,
sync hand-offs) with their dedupe keys and how their jobs ended, every escalation with its rule,
reasons and from → to, the notes written, and the next instant it is due. Read from the store
only (:func:`escbridge.store.history.ticket_history`); no helpdesk is called.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, failed
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
from escbridge.store.history import TicketHistory, store_exists, ticket_history
from escbridge.wording import plural

__all__ = ["configure_history_parser", "format_history", "run_history"]


def configure_history_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Everything escbridge knows of one ticket, oldest first: events received (webhook, "
        "deadline, sync hand-off) and how their jobs ended, escalations with rule, reasons and "
        "from → to, notes written, and when it is next due. Reads the store only."
    )
    parser.add_argument("instance", metavar="NAME", help="the instance, as in escbridge.yaml")
    parser.add_argument(
        "ticket",
        metavar="ID",
        type=lambda text: text.strip().removeprefix("#"),  # "#81", as escbridge prints it
        help="the ticket id on that helpdesk",
    )
    _add_store_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run_history(args: argparse.Namespace) -> int:
    """0 the ticket is known (its history printed), 1 escbridge knows nothing of it or the
    store cannot be read, 2 invalid input (escbridge.yaml, unknown instance)."""
    out = sys.stdout
    try:
        url = store_url(args)
        configured = configured_instances(args)
        if not store_exists(url):
            print(
                f"escbridge history: the store {safe_url(url)} does not exist yet: run "
                f"`escbridge db upgrade{given_options(args)}`, then "
                f"`escbridge sync{given_options(args, store=False)}` or "
                f"`escbridge serve{given_options(args, store=False)}`",
                file=sys.stderr,
            )
            return EXIT_PROBLEM
        with Store(url) as store:
            store.check_schema()
            found = ticket_history(store, args.instance, args.ticket)
    except (InvalidInputError, StoreUnavailableError) as error:
        return failed("history", error, sys.stderr)
    if not found.known and configured is not None and args.instance not in configured:
        # a misspelt name, most likely (an instance removed from escbridge.yaml still has
        # its history shown)
        known = ", ".join(sorted(configured)) or "none"
        print(
            f"escbridge history: unknown instance {args.instance} (configured: {known})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if args.format == "json":
        json.dump(history_json(found), out, indent=2)
        print(file=out)
        return EXIT_OK if found.known else EXIT_PROBLEM
    if not found.known:
        print(
            f"{args.instance} #{args.ticket}: escbridge knows nothing of this ticket — no event "
            "received, no escalation, not seen open by sync. `escbridge explain --instance "
            f"{args.instance} --ticket {args.ticket}{given_options(args, store=False)}` asks "
            "the helpdesk what the matrix decides for it now.",
            file=out,
        )
        return EXIT_PROBLEM
    out.write(format_history(found, datetime.now(UTC), given_options(args)))
    return EXIT_OK


def format_history(found: TicketHistory, now: datetime, options: str = "") -> str:
    """The text a person reads: a headline with the ticket's state, then one block per moment
    (``options``: the --config/--store given, for the commands its hints suggest)."""
    lines = [_headline(found, now)]
    for moment in found.timeline(options):
        when = _time(moment.at)
        if moment.kind == "due":
            when = f"{when} ({_relative(moment.at, now)})"
        lines.append(f"{when}  {moment.text}")
        lines.extend(f"    {detail}" for detail in moment.details if detail)
    return "\n".join(lines) + "\n"


def _headline(found: TicketHistory, now: datetime) -> str:
    state = found.state
    parts = []
    level = (state.level if state is not None else None) or (
        found.shadow.ticket.level if found.shadow is not None else None
    )
    parts.append(f"at level {level}" if level else "never escalated by escbridge")
    count = len(found.escalations)
    if count:
        parts.append(plural(count, "escalation"))
    if state is not None and state.cooldown_until is not None and state.cooldown_until > now:
        parts.append(f"cooldown until {_time(state.cooldown_until)}")
    if found.shadow is None:
        parts.append("not in the due-queue (not open, or not seen open yet)")
    elif found.shadow.due_at is None:
        parts.append("no deadline ahead")
    return f"{found.instance} #{found.ticket_id}: " + ", ".join(parts)


def history_json(found: TicketHistory) -> dict[str, Any]:
    state = found.state
    shadow = found.shadow
    return {
        "instance": found.instance,
        "ticket_id": found.ticket_id,
        "known": found.known,
        "level": state.level if state is not None else None,
        "escalations": len(found.escalations),
        "cooldown_until": _iso(state.cooldown_until) if state is not None else None,
        "next_due": _iso(shadow.due_at) if shadow is not None else None,
        "timeline": [moment.as_json() for moment in found.timeline()],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
