"""`escbridge sync`: argument parsing, the progress bar and the summaries; the run is
:class:`escbridge.sync.Syncer`."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

from escbridge.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PROBLEM,
    add_log_options,
    configure_logging,
    install_secrets,
    run_until_signal,
)
from escbridge.errors import EscbridgeError, InvalidInputError
from escbridge.sync import (
    RECONCILE_MODES,
    CallCounter,
    InstanceResult,
    ProgressEvent,
    Syncer,
    SyncOptions,
    SyncReport,
    build_sync_processor,
)
from escbridge.waiting import wait_for

# --- output --------------------------------------------------------------------------------------


class ProgressBar:
    """One line on a terminal, redrawn as tickets finish."""

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        final = event.done >= event.size
        with self._lock:
            if not final and now - self._last < 0.1:
                return
            self._last = now
            filled = self.WIDTH if not event.size else self.WIDTH * event.done // event.size
            bar = "█" * filled + "░" * (self.WIDTH - filled)
            r = event.result
            escalated = sum(r.escalated.values())
            line = (
                f"\r{event.instance} {event.stage} page {event.page} {bar} "
                f"{event.done}/{event.size}  scanned {r.scanned}  escalated {escalated}  "
                f"failed {r.failed}"
            )
            self.stream.write(line[: self._columns()] + "\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    @staticmethod
    def _columns() -> int:
        import shutil

        return shutil.get_terminal_size((100, 20)).columns + 1


def format_report(report: SyncReport) -> str:
    """The summary a person reads at a terminal."""
    lines: list[str] = []
    mode = " (dry run: nothing was changed)" if report.dry_run else ""
    for name, r in report.instances.items():
        if r.locked_by:
            lines.append(f"{name}: skipped — another sync is running ({r.locked_by})")
            continue
        levels = ", ".join(f"{n} to {dest}" for dest, n in sorted(r.escalated.items())) or "none"
        verb = "would escalate" if report.dry_run else "escalated"
        lines.append(
            f"{name}: scanned {r.scanned}, {verb} {sum(r.escalated.values())} ({levels}), "
            f"skipped {r.skipped}, failed {r.failed}, {r.api_calls} API calls"
        )
        if r.routes_nothing and r.routing is not None:
            lines.append(f"  NOTHING CAN ESCALATE: {r.routing.problem()}")
        if r.skipped_by:
            counted = ", ".join(f"{n} {reason}" for reason, n in r.skipped_by.most_common())
            lines.append(f"  skipped {r.skipped}: {counted}")
        lines.extend(_passes_lines(r, report.dry_run))
        if r.recovered:
            lines.append(
                f"  {r.recovered} found already on the helpdesk (a lost answer, or an earlier "
                "run stopped mid-way) and recorded"
            )
        if r.stopped:
            when = (
                f"; resume after {r.resume_at.isoformat(timespec='seconds')}" if r.resume_at else ""
            )
            lines.append(f"  stopped early, the cursor is kept: {r.stopped}{when}")
        for ticket_id, reason in r.failures[:10]:
            lines.append(f"  failed #{ticket_id}: {reason}")
    if report.dry_run and report.escalations:
        lines.append("")
        lines.append("would escalate:")
        for e in report.escalations:
            where = f" ({e.group})" if e.group else ""
            lines.append(f"  {e.instance} #{e.ticket_id} → {e.destination}{where}: {e.summary}")
            if e.reasons:
                lines.append(f"      why: {'; '.join(e.reasons)}")
    lines.append(f"done in {report.duration:.1f}s{mode}")
    return "\n".join(lines) + "\n"


def _passes_lines(r: InstanceResult, dry_run: bool) -> list[str]:
    """Which passes ran, and what the reconciliation did (or when the last one began)."""
    passes = ", ".join(f"{stage} {scanned}" for stage, scanned in r.passes.items())
    lines = [f"  passes: {passes or 'none'}"]
    done = r.reconciliation
    last = r.last_reconciled.isoformat(timespec="seconds") if r.last_reconciled else None
    if done is None:
        lines.append(
            f"  no reconciliation this run (the last complete one began {last})"
            if last
            else "  no reconciliation this run (none has completed yet)"
        )
    elif not done.complete:
        lines.append(
            "  reconciliation stopped before the end: the next run resumes it from its cursor"
        )
    elif dry_run:
        lines.append("  reconciliation: every open ticket checked (dry run: no shadow dropped)")
    else:
        resumed = " (resumed)" if done.resumed else ""
        lines.append(
            f"  reconciliation complete{resumed}: every open ticket checked, {done.dropped} "
            "shadows of tickets no longer open dropped"
        )
    return lines


# --- `escbridge sync` ----------------------------------------------------------------------------


GONE = (
    "escbridge sync: --lookback is gone: time limits are watched by the due-queue, and a daily "
    "reconciliation covers every open ticket whatever its age (see --reconcile)"
)


def _parse_since(text: str) -> datetime:
    """An ISO time (UTC unless a zone is given), or a duration meaning "that long ago"."""
    from escbridge.calendar import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'"{text}" is neither a time (2026-03-11T15:00:00Z) nor a duration (2h, 3d)'
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _parse_duration(text: str) -> timedelta:
    from escbridge.calendar import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError(f'"{text}" must be longer than zero')
    return value


def configure_sync_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Scan the helpdesks for changes a webhook missed and, daily, reconcile every open "
        "ticket whatever its age (drift, tickets nobody touched for weeks); escalate them "
        "exactly as a webhook would. Time limits fire at their deadline through the worker's "
        "due-queue, not here. On a terminal it shows progress; otherwise it prints one JSON "
        "summary line per run."
    )
    parser.add_argument("--config", default="escbridge.yaml", help="escbridge.yaml to use")
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="NAME",
        help="only this instance (repeatable; default: every instance)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing (no update, no record, no cursor) and print what would escalate",
    )
    parser.add_argument(
        "--since",
        type=_parse_since,
        metavar="TIME",
        help="scan changes since TIME (ISO 8601, or a duration such as 2h: that long ago) "
        "instead of the stored cursor",
    )
    parser.add_argument(
        "--reconcile",
        choices=RECONCILE_MODES,
        default="auto",
        help="the pass over every open ticket whatever its age, which heals drift: auto (the "
        "default) runs it when none has completed yet, one is under way, or the last began "
        "--reconcile-every ago; always; never",
    )
    parser.add_argument(
        "--reconcile-every",
        type=_parse_duration,
        default=timedelta(days=1),
        metavar="DURATION",
        help="how often --reconcile auto reconciles (default 1d)",
    )
    # Gone with the sweep; still accepted so that existing cron lines keep working.
    parser.add_argument("--lookback", metavar="DURATION", help=argparse.SUPPRESS)
    parser.add_argument("--no-sweep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="at most N writes per bulk call (default: a page's writes together, split as the "
        "helpdesk's bulk API requires)",
    )
    parser.add_argument("--loop", action="store_true", help="run again every --interval")
    parser.add_argument(
        "--interval",
        type=_parse_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="time between runs with --loop (default 60s)",
    )
    parser.add_argument("--json", action="store_true", help="JSON summary even on a terminal")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each escalation (--log-level info)"
    )
    add_log_options(parser, level="WARNING")


def run_sync(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`escbridge sync`: 0 all scanned, 1 a ticket failed or an instance stopped early,
    2 invalid input."""
    from escbridge.config import load_config

    out = out or sys.stdout
    err = err or sys.stderr
    configure_logging(args, stream=err)
    if args.lookback is not None or args.no_sweep:
        print(GONE, file=err)
    if args.batch_size is not None and args.batch_size < 1:
        print("escbridge sync: --batch-size must be at least 1", file=err)
        return EXIT_INVALID
    counter = CallCounter()
    try:
        config = load_config(args.config)
        install_secrets(config.secret_values)
        unknown = [name for name in args.instance if name not in config.instances]
        if unknown:
            known = ", ".join(sorted(config.instances)) or "none"
            print(
                f"escbridge sync: unknown instance {', '.join(unknown)} (configured: {known})",
                file=err,
            )
            return EXIT_INVALID
        processor = build_sync_processor(config, counter)
        processor.store.check_schema()
    except InvalidInputError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=err)
        return EXIT_INVALID
    except EscbridgeError as error:
        print(f"escbridge sync: {error}", file=err)
        return EXIT_PROBLEM
    interactive = not args.json and out.isatty()
    bar = ProgressBar(err) if interactive and err.isatty() else None
    options = SyncOptions(
        dry_run=args.dry_run,
        since=args.since,
        reconcile=args.reconcile,
        reconcile_every=args.reconcile_every,
        batch_size=args.batch_size,
    )
    syncer = Syncer(processor, options, api_calls=counter, progress=bar)
    instances = args.instance or sorted(config.instances)
    try:
        if not args.loop:
            if args.interval != timedelta(seconds=60):  # given, and it would do nothing
                print("escbridge sync: --interval needs --loop (one run: drop it)", file=sys.stderr)
                return EXIT_INVALID
            report = syncer.run(instances)
            _emit(report, out, bar, interactive)
            return EXIT_OK if report.ok else EXIT_PROBLEM
        return _loop(syncer, instances, args.interval, out, bar, interactive)
    finally:
        processor.store.close()
        counter.close()


def _emit(report: SyncReport, out: TextIO, bar: ProgressBar | None, interactive: bool) -> None:
    if bar is not None:
        bar.finish()
    if interactive:
        out.write(format_report(report))
    else:
        out.write(json.dumps(report.as_json(), default=str) + "\n")
    out.flush()


def _loop(
    syncer: Syncer,
    instances: Sequence[str],
    interval: timedelta,
    out: TextIO,
    bar: ProgressBar | None,
    interactive: bool,
) -> int:
    """Run until SIGTERM/SIGINT. An instance that ran out of API budget waits until it is back."""
    not_before: dict[str, datetime] = {}
    with run_until_signal("stopping after this run") as stop:
        while not stop.is_set():
            now = syncer.processor.clock()
            due = [n for n in instances if not_before.get(n, now) <= now]
            report = syncer.run(due) if due else SyncReport(now, syncer.options.dry_run)
            for name, result in report.instances.items():
                if result.resume_at is not None:
                    not_before[name] = result.resume_at
                else:
                    not_before.pop(name, None)
            _emit(report, out, bar, interactive)
            wait_for(stop, interval.total_seconds())
    return EXIT_OK
