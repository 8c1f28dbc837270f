"""`escbridge report`: the command's arguments and exit codes; the figures are escbridge.reports."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from escbridge.calendar import parse_duration
from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, store_url_arg
from escbridge.errors import InvalidInputError, StoreUnavailableError
from escbridge.reports import RENDERERS, TicketUrl, Window, build_report
from escbridge.store.reports import read_history

if TYPE_CHECKING:
    from escbridge.config import Config

_DATE_HINT = "a duration back from --until (30d, 12w, 48h) or a date (2026-03-01)"


def parse_since(text: str, until: datetime, tz: tzinfo) -> datetime:
    """``--since``: a duration before ``until`` or a local date/time; ValueError says why not."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", value):
        start = parse_instant(value, tz)
    else:
        try:
            length = parse_duration(value)
        except ValueError:
            raise ValueError(f'--since "{text}" is not {_DATE_HINT}') from None
        if length <= timedelta(0):
            raise ValueError(f'--since "{text}" must be longer than nothing')
        start = until - length
    if start >= until:
        raise ValueError(
            f"--since {text} is not before the end of the period ({until:%Y-%m-%d %H:%M})"
        )
    return start


def parse_instant(text: str, tz: tzinfo) -> datetime:
    """An ISO date (local midnight) or date-time (local unless it names a zone)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f'"{text}" is not a date (2026-03-01) or a time (2026-03-01T09:00)'
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=tz)


def configure_report_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `escbridge report`."""
    parser.description = (
        "Escalation trends from the store: by level, rule, kind, source group, helpdesk and "
        "channel; time to escalation and to resolution against each level's expected time; "
        "repeat escalations; the trend against the previous period; top reasons."
    )
    parser.add_argument(
        "--config",
        help="escbridge.yaml naming the store, the matrix and the helpdesk instances (default: "
        "escbridge.yaml; with --store, read only if it exists); API tokens need not be set",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        type=store_url_arg,
        help="store URL, instead of the one in --config",
    )
    parser.add_argument(
        "--matrix", help="matrix file, for level names and expected times (default: the config's)"
    )
    parser.add_argument(
        "--since", default="30d", help=f"start of the period: {_DATE_HINT}; default 30d"
    )
    parser.add_argument(
        "--until",
        help="end of the period (ISO date or time, local unless a zone is given; default now)",
    )
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME",
        help="only this helpdesk instance; repeatable",
    )
    parser.add_argument(
        "--by",
        choices=("auto", "day", "week"),
        default="auto",
        help="trend per day or per week (default: days up to a month, weeks beyond)",
    )
    parser.add_argument(
        "--timezone", help="time zone for days and weeks (default: the matrix's calendar, else UTC)"
    )
    parser.add_argument("--top", type=int, default=10, help="how many reasons and repeat tickets")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def ticket_links(config: Config) -> TicketUrl:
    """Links to tickets in each configured helpdesk's agent view (the connector's ``agent_url``).

    A connector is built the first time one of its tickets is linked, from escbridge.yaml alone:
    nothing calls the helpdesk. An instance whose plugin is not installed, or whose settings do
    not validate without its API tokens, shows its ticket ids without links.
    """
    from escbridge.connector.registry import create_connector
    from escbridge.errors import ConfigError, PluginLoadError

    built: dict[str, Callable[[str], str | None] | None] = {}

    def url(instance: str, ticket_id: str) -> str | None:
        if instance not in built:
            built[instance] = None
            if instance in config.instances:
                try:
                    connector = create_connector(config.instances[instance])
                except (ConfigError, PluginLoadError):
                    pass
                else:
                    built[instance] = getattr(connector, "agent_url", None)
        link = built[instance]
        found = link(ticket_id) if link is not None else None
        # A plugin's answer goes into an href: only web addresses, never javascript: or data:.
        return found if found and found.startswith(("https://", "http://")) else None

    return url


def _fail(message: str, code: int = EXIT_INVALID) -> int:
    print(f"escbridge report: {message}", file=sys.stderr)
    return code


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`escbridge report`: 0 written, 1 store unavailable, 2 invalid input."""
    from escbridge.config import load_config
    from escbridge.matrix import load_matrix

    config = None
    config_path = args.config or (
        "escbridge.yaml" if not args.store or Path("escbridge.yaml").exists() else None
    )
    try:
        if config_path is not None:
            config = load_config(config_path, helpdesk_secrets=False)
        matrix_path = Path(args.matrix) if args.matrix else (config.matrix_path if config else None)
        matrix = None
        if matrix_path is not None and (args.matrix or matrix_path.exists()):
            matrix = load_matrix(matrix_path)
    except InvalidInputError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    url = args.store or (config.store_url if config else None)
    assert url is not None
    tz: tzinfo = matrix.default_calendar.tz if matrix else UTC
    if args.timezone:
        try:
            tz = ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return _fail(
                f'--timezone "{args.timezone}" is not a time zone (e.g. Europe/Berlin, UTC)'
            )
    if args.top < 1:
        return _fail("--top must be at least 1")
    try:
        until = parse_instant(args.until, tz) if args.until else datetime.now(UTC)
        start = parse_since(args.since, until, tz)
    except ValueError as exc:
        return _fail(str(exc))
    window = Window(start.astimezone(UTC), until.astimezone(UTC))
    helpdesks = {name: inst.type for name, inst in config.instances.items()} if config else {}

    try:
        history = read_history(
            url,
            window.previous.start,
            window.end,
            instances=args.instance,
            helpdesks=helpdesks,
        )
    except StoreUnavailableError as exc:
        return _fail(str(exc), EXIT_PROBLEM)
    except ValueError as exc:  # an unusable store URL
        return _fail(f"--store: {exc}" if args.store else str(exc))
    known = history.instances | set(helpdesks)
    unknown = [i for i in args.instance if i not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none yet"
        return _fail(f"unknown instance {', '.join(unknown)} (known: {listed})")
    report = build_report(
        history.rows,
        window,
        matrix=matrix,
        tz=tz,
        unit=None if args.by == "auto" else args.by,
        top=args.top,
        instances=args.instance,
        recorded=history.recorded,
        generated_at=datetime.now(UTC),
        ticket_url=ticket_links(config) if config else None,
    )
    text = RENDERERS[args.format](report)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror}")
        print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    (out or sys.stdout).write(text)
    return EXIT_OK
