"""The report as data: JSON (every figure, nested) and CSV (one figure per line)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from escbridge.reports.figures import Change, Durations, Report, RungTiming
from escbridge.reports.text import reasons_text


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds(), 3)


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "count": change.count,
        "previous": change.previous,
        "change": change.delta,
        "change_ratio": _share(change.ratio),
    }


def _durations_json(d: Durations) -> dict[str, Any]:
    return {"n": d.n, "median_seconds": _seconds(d.median), "p90_seconds": _seconds(d.p90)}


def _known(timing: RungTiming, value: int) -> int | None:
    return value if timing.resolution_recorded else None


def report_data(report: Report) -> dict[str, Any]:
    """The report as plain data (what ``--format json`` prints)."""
    within, measured = report.within_target
    return {
        "title": report.title,
        "period": {
            "start": report.window.start.isoformat(),
            "end": report.window.end.isoformat(),
            "previous_start": report.window.previous.start.isoformat(),
            "timezone": report.timezone,
        },
        "generated_at": report.generated_at.isoformat(),
        "instances": list(report.instances),
        "escalations": _change_json(report.escalations),
        "tickets": _change_json(report.tickets),
        "time_to_escalation": _durations_json(report.time_to_escalate),
        "within_target": {
            "within": within,
            "resolved": measured,
            "share": _share(within / measured if measured else None),
            # False below WITHIN_TARGET_MIN_RESOLVED resolutions: too few to lead with.
            "headline": report.within_target_headline,
        },
        "breakdowns": {
            b.name: {
                "title": b.title,
                "recorded": b.recorded,
                "items": [
                    {
                        "key": s.key,
                        "label": s.label,
                        "count": s.count,
                        "share": _share(s.share),
                        "previous": s.previous,
                        "change": s.change.delta,
                        "change_ratio": _share(s.change.ratio),
                    }
                    for s in b.items
                ],
            }
            for b in report.breakdowns
        },
        "levels": [
            {
                "id": t.id,
                "label": t.label,
                "kind": t.kind,
                "expected_resolution_seconds": _seconds(t.expected),
                "time": "business" if t.business else "calendar",
                "escalations": t.escalations,
                "time_to_escalation": _durations_json(t.to_escalate),
                "moved_on": t.moved_on,
                "resolution_recorded": t.resolution_recorded,
                # Unknown (null) when the store does not record resolutions.
                "time_to_resolution": _durations_json(t.to_resolve),
                "resolved": _known(t, t.resolved),
                "within_target": _known(t, t.within_target),
                "within_target_share": _share(t.within_share),
                "open": _known(t, t.open),
                "open_past_target": _known(t, t.open_past_target),
            }
            for t in report.timings
        ],
        "trend": {
            "unit": report.trend.unit,
            "points": [
                {"start": p.start.isoformat(), "count": p.count, "previous": p.previous}
                for p in report.trend.points
            ],
        },
        "repeats": {
            "tickets": report.repeats.tickets,
            "repeated": report.repeats.repeated,
            "share": _share(report.repeats.share),
            "escalations_on_repeated": report.repeats.escalations_on_repeated,
            "previous_repeated": report.repeats.previous_repeated,
            "distribution": {str(k): v for k, v in report.repeats.distribution},
            "top": [
                {
                    "instance": t.instance,
                    "ticket_id": t.ticket_id,
                    "escalations": t.count,
                    "path": list(t.path),
                    "last": t.last.isoformat(),
                    "url": t.url,
                }
                for t in report.repeats.top
            ],
        },
        "reasons": [
            {
                "reason": r.text,
                "count": r.count,
                "share": _share(r.share),
                "rules": list(r.rules),
                # The share of all escalations it held for; background: it tells none apart.
                "holds_for": _share(r.holds),
                "background": r.background,
                # trigger / attribute (fired a rule with no trigger) / null: not mapped.
                "role": r.role,
            }
            for r in report.reasons
        ],
        "reasons_by_rule": report.reasons_by_rule,
        "reasons_method": reasons_text(report),
        # What each rule is scoped to (not counted among the reasons).
        "applied_to": [
            {
                "rule": s.rule_id,
                "name": s.name,
                "escalations": s.escalations,
                "conditions": [{"condition": c.text, "count": c.count} for c in s.conditions],
            }
            for s in report.scopes
        ],
        "notes": list(report.notes),
    }


def render_json(report: Report) -> str:
    return json.dumps(report_data(report), indent=2, ensure_ascii=False) + "\n"


# --- CSV --------------------------------------------------------------------------------------

CSV_HEADER = ("section", "key", "label", "metric", "value")


def _csv_rows(report: Report) -> Iterator[tuple[str, str, str, str, str | int | float]]:
    """One figure per line (section, key, label, metric, value): pivot it in a spreadsheet."""

    def num(value: float | None) -> str | float:
        return "" if value is None else round(value, 6)

    def secs(value: timedelta | None) -> str | float:
        return "" if value is None else round(value.total_seconds(), 3)

    for name, change in (("escalations", report.escalations), ("tickets", report.tickets)):
        yield "total", name, name, "count", change.count
        yield "total", name, name, "previous", change.previous
        yield "total", name, name, "change_ratio", num(change.ratio)
    for b in report.breakdowns:
        if not b.recorded:
            continue
        for s in b.items:
            key = "" if s.key is None else s.key
            yield b.name, key, s.label, "count", s.count
            yield b.name, key, s.label, "share", num(s.share)
            yield b.name, key, s.label, "previous", s.previous
            yield b.name, key, s.label, "change_ratio", num(s.change.ratio)
    for t in report.timings:
        values: list[tuple[str, str | int | float]] = [
            ("escalations", t.escalations),
            ("time_to_escalation_median_seconds", secs(t.to_escalate.median)),
            ("time_to_escalation_p90_seconds", secs(t.to_escalate.p90)),
            ("expected_resolution_seconds", secs(t.expected)),
            ("moved_on", t.moved_on),
        ]
        if t.resolution_recorded:
            values += [
                ("resolved", t.resolved),
                ("time_to_resolution_median_seconds", secs(t.to_resolve.median)),
                ("time_to_resolution_p90_seconds", secs(t.to_resolve.p90)),
                ("within_target", t.within_target),
                ("within_target_share", num(t.within_share)),
                ("open", t.open),
                ("open_past_target", t.open_past_target),
            ]
        for metric, value in values:
            yield "level_timing", t.id, t.label, metric, value
    for p in report.trend.points:
        yield f"trend_{report.trend.unit}", p.start.isoformat(), p.label, "count", p.count
        yield f"trend_{report.trend.unit}", p.start.isoformat(), p.label, "previous", p.previous
    r = report.repeats
    yield "repeats", "tickets", "tickets escalated", "count", r.tickets
    yield "repeats", "repeated", "tickets escalated more than once", "count", r.repeated
    yield "repeats", "repeated", "tickets escalated more than once", "share", num(r.share)
    yield "repeats", "repeated", "tickets escalated more than once", "previous", r.previous_repeated
    for ticket in r.top:
        key = f"{ticket.instance}/{ticket.ticket_id}"
        yield "repeat_ticket", key, " → ".join(ticket.path), "escalations", ticket.count
    yield "reasons", "method", reasons_text(report), "by_rule", int(report.reasons_by_rule)
    for i, reason in enumerate(report.reasons, 1):
        yield "reason", str(i), reason.text, "count", reason.count
        yield "reason", str(i), reason.text, "share", num(reason.share)
        yield "reason", str(i), reason.text, "holds_for", num(reason.holds)
        yield "reason", str(i), reason.text, "role", reason.role or ""
    for scope in report.scopes:
        yield "applied_to", scope.rule_id, scope.name, "escalations", scope.escalations
        for c in scope.conditions:
            yield "applied_to", scope.rule_id, c.text, "count", c.count


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(_csv_rows(report))
    return buffer.getvalue()
