"""The report for a terminal (``--format text``), and the wording of figures every form shares."""

from __future__ import annotations

import io
from datetime import UTC, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from escbridge.reports.figures import (
    BACKGROUND_SHARE,
    WITHIN_TARGET_MIN_RESOLVED,
    Change,
    Report,
    RuleScope,
    Window,
)
from escbridge.views import text_table


def pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def human(delta: timedelta | None) -> str:
    """A duration for a report: the two largest units, to the minute ("1d 4h", "3h 20m")."""
    if delta is None:
        return "—"
    minutes = round(delta.total_seconds() / 60)
    if minutes < 1:
        return "<1m" if delta.total_seconds() > 0 else "0m"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return " ".join(parts[:2])


def change_text(change: Change) -> str:
    """``+3 (+25.0%)``, ``−2 (−10.0%)``, ``+4 (new)``, ``no change``."""
    if change.delta == 0:
        return "no change"
    sign = "+" if change.delta > 0 else "−"
    ratio = change.ratio
    rel = "new" if ratio is None else f"{sign}{abs(ratio) * 100:.1f}%"
    return f"{sign}{abs(change.delta)} ({rel})"


def within_text(report: Report) -> str:
    """``66.7% (4 of 6 resolved)``: the share always with its n; a caveat below the minimum."""
    within, measured = report.within_target
    if not measured:
        return "no resolution times yet"
    text = f"{pct(within / measured)} ({within} of {measured} resolved)"
    if not report.within_target_headline:  # one ticket moves the share by 1/n
        text += (
            f"; too few to judge (fewer than {WITHIN_TARGET_MIN_RESOLVED} resolved: one ticket "
            f"moves it by {pct(1 / measured)})"
        )
    return text


BACKGROUND_TEXT = (
    f"Listed last: conditions that held for at least {BACKGROUND_SHARE:.0%} of all escalations "
    "in the period (among their reasons, or by the recorded channel): true of almost every "
    "ticket, they tell none apart."
)
BY_RULE_TEXT = (
    "Reasons are what fired each rule: its time, text and count conditions (a rule with none: "
    "its tags, priority or fields); what a rule is only scoped to, such as the status beside "
    'an idle time, is under "Applied to", not counted as a reason.'
)
AS_RECORDED_TEXT = (
    "Reasons are the conditions recorded with each escalation (without the matrix that names "
    "the rules, they are not told apart from what a rule is only scoped to)."
)
APPLIED_TEXT = (
    "What each rule is scoped to: true of every ticket it fired on, so not why tickets went up."
)


def reasons_text(report: Report) -> str:
    """How the top reasons were chosen: the one line under the table in every form."""
    text = BY_RULE_TEXT if report.reasons_by_rule else AS_RECORDED_TEXT
    if any(x.background for x in report.reasons):
        text += " " + BACKGROUND_TEXT
    return text


def applied_text(scope: RuleScope) -> str:
    """``status is one of [new, open]; tags have any of [vip] (3 of 4)``: a count only for a
    condition not listed by every escalation of the rule (one alternative of several)."""
    return "; ".join(
        c.text + ("" if c.count == scope.escalations else f" ({c.count} of {scope.escalations})")
        for c in scope.conditions
    )


def period_text(report: Report) -> str:
    tz = _zone(report.timezone)
    start = report.window.start.astimezone(tz)
    end = report.window.end.astimezone(tz)
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} ({report.timezone})"


def length_text(window: Window) -> str:
    days = window.length / timedelta(days=1)
    if days >= 1 and days == int(days):
        return f"{int(days)} day{'s' if days != 1 else ''}"
    return human(window.length)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def render_text(report: Report) -> str:
    out = io.StringIO()

    def w(line: str = "") -> None:
        out.write(line + "\n")

    w(report.title)
    w(
        f"{period_text(report)}, {length_text(report.window)}, against the previous "
        f"{length_text(report.window)}"
    )
    if report.instances:
        w(f"Instances: {', '.join(report.instances)}")
    w()
    w(f"Escalations           {report.escalations.count}  {change_text(report.escalations)}")
    w(f"Tickets escalated     {report.tickets.count}  {change_text(report.tickets)}")
    w(
        f"Time to escalation    median {human(report.time_to_escalate.median)}, "
        f"90% within {human(report.time_to_escalate.p90)}"
    )
    if report.within_target[1]:
        w(f"Resolved within target  {within_text(report)}")
    r = report.repeats
    w(f"Repeat escalations    {r.repeated} of {r.tickets} tickets ({pct(r.share)})")
    for b in report.breakdowns:
        w()
        w(f"By {b.title.lower()}")
        if not b.recorded:
            w("  not recorded by the store")
            continue
        shares = [
            (s.label, str(s.count), pct(s.share), str(s.previous), change_text(s.change))
            for s in b.items
        ]
        w(text_table(("", "count", "share", "previous", "change"), shares).rstrip())
    w()
    w("Time at each level")
    rows = [
        (
            t.label,
            str(t.escalations),
            human(t.to_escalate.median),
            human(t.expected) + (" (business)" if t.business and t.expected else ""),
            str(t.resolved) if t.resolution_recorded else "—",
            human(t.to_resolve.median),
            pct(t.within_share),
            str(t.moved_on),
            f"{t.open} ({t.open_past_target} late)" if t.resolution_recorded else "—",
        )
        for t in report.timings
    ]
    headers = (
        "",
        "escalations",
        "to escalate (median)",
        "expected",
        "resolved",
        "to resolve (median)",
        "within target",
        "moved on",
        "open",
    )
    w(text_table(headers, rows).rstrip())
    w()
    w(f"Trend per {report.trend.unit} (previous period in brackets)")
    w(
        text_table(
            ("", "count", "previous"),
            [(p.label, str(p.count), str(p.previous)) for p in report.trend.points],
        ).rstrip()
    )
    w()
    w(f"Tickets escalated more than once: {r.repeated} (previous period {r.previous_repeated})")
    if r.top:
        w(
            text_table(
                ("ticket", "escalations", "path", "last"),
                [
                    (
                        f"{t.instance}/{t.ticket_id}",
                        str(t.count),
                        " → ".join(t.path),
                        f"{t.last:%Y-%m-%d %H:%M}",
                    )
                    for t in r.top
                ],
            ).rstrip()
        )
    w()
    w("Top reasons")
    w(
        text_table(
            ("reason", "count", "share", "rules"),
            [
                (
                    x.text + (" (background)" if x.background else ""),
                    str(x.count),
                    pct(x.share),
                    ", ".join(x.rules),
                )
                for x in report.reasons
            ],
        ).rstrip()
    )
    if report.reasons:
        w(reasons_text(report))
    if report.scopes:
        w()
        w("Applied to")
        w(
            text_table(
                ("rule", "escalations", "conditions"),
                [(s.rule_id, str(s.escalations), applied_text(s)) for s in report.scopes],
            ).rstrip()
        )
        w(APPLIED_TEXT)
    if report.notes:
        w()
        for note in report.notes:
            w(f"Note: {note}")
    return out.getvalue()
