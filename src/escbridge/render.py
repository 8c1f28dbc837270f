"""The matrix as people read it: a terminal table, Markdown, JSON.

One row per rule: trigger → destination → responsible group per helpdesk → expected time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from escbridge.calendar import format_duration
from escbridge.matrix import Matrix, Rule, Rung, describe_expected, describe_target


def _groups(rung: Rung) -> str:
    return ", ".join(f"{helpdesk}: {group}" for helpdesk, group in rung.groups.items())


def _rule_rows(matrix: Matrix) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for rule in matrix.rules:
        rung = rule.target.rung
        responsible = _groups(rung) if rung else "the level above the current one"
        expected = describe_expected(rung) if rung else "that level's"
        rows.append((rule.id, rule.name, describe_target(rule), responsible, expected))
    return rows


def _ladder_rows(matrix: Matrix) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for rung in (*matrix.levels, *matrix.teams.values()):
        kind = f"L{rung.rank + 1}" if rung.kind == "level" else f"team (rank L{rung.rank + 1})"
        floor = rung.min_priority.label if rung.min_priority else "—"
        rows.append(
            (rung.id, f"{rung.name} [{kind}]", _groups(rung), floor, describe_expected(rung))
        )
    return rows


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(s.rstrip() for s in out) + "\n"


def _limits(matrix: Matrix) -> str:
    return (
        f"cooldown {format_duration(matrix.cooldown)} per ticket, "
        f"at most {matrix.daily_cap} escalations per ticket per 24h"
    )


def matrix_table(matrix: Matrix) -> str:
    """Plain-text tables for a terminal."""
    ladder = _table(
        ("id", "level / team", "responsible group", "min priority", "expected"),
        _ladder_rows(matrix),
    )
    rules = _table(
        ("rule", "trigger", "destination", "responsible", "expected"), _rule_rows(matrix)
    )
    return f"{matrix.name}\n\n{ladder}\n{rules}\nLimits: {_limits(matrix)}\n"


def _md(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def matrix_markdown(matrix: Matrix) -> str:
    """Markdown for a wiki or a pull request."""
    return (
        f"# {matrix.name}\n\n## Levels and teams\n\n"
        + _md(
            ("id", "level / team", "responsible group", "min priority", "expected"),
            _ladder_rows(matrix),
        )
        + "\n## Rules\n\n"
        + _md(("rule", "trigger", "destination", "responsible", "expected"), _rule_rows(matrix))
        + f"\n**Limits:** {_limits(matrix)}\n"
    )


def _rung_json(rung: Rung) -> dict[str, Any]:
    return {
        "id": rung.id,
        "kind": rung.kind,
        "name": rung.name,
        "rank": rung.rank,
        "groups": dict(rung.groups),
        "min_priority": rung.min_priority.label if rung.min_priority else None,
        "response_seconds": rung.response.total_seconds() if rung.response else None,
        "resolution_seconds": rung.resolution.total_seconds() if rung.resolution else None,
        "time": "business" if rung.business else "calendar",
        "calendar": rung.calendar.name,
    }


def _rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "kind": rule.kind,
        "to": "next" if rule.target.next else (rule.target.rung.id if rule.target.rung else None),
        "priority": rule.actions.priority.label if rule.actions.priority else None,
        "tags": list(rule.actions.tags),
        "unassign": rule.actions.unassign,
        "customer_update": rule.actions.customer_update is not None,
        "line": rule.line,
    }


def matrix_json(matrix: Matrix) -> str:
    """Machine-readable: levels, teams, rules and limits."""
    data = {
        "name": matrix.name,
        "levels": [_rung_json(r) for r in matrix.levels],
        "teams": [_rung_json(r) for r in matrix.teams.values()],
        "rules": [_rule_json(r) for r in matrix.rules],
        "limits": {
            "cooldown_seconds": matrix.cooldown.total_seconds(),
            "daily_cap": matrix.daily_cap,
        },
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
