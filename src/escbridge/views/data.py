"""The matrix as JSON, for scripts and other tools: levels, teams, rules and limits."""

from __future__ import annotations

import json
from typing import Any

from escbridge.matrix import Matrix, Rule, Rung


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
