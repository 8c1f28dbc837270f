"""The matrix as people read it: a terminal table, Markdown, JSON, an HTML chart, Mermaid.

One row per rule: trigger → destination → responsible group per helpdesk → expected time.
The chart forms (HTML, Mermaid) add the ladder: levels top to bottom, teams beside their rank,
and every route a rule can take, worked out with the engine's own never-de-escalate logic.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jinja2

from escbridge.calendar import format_duration
from escbridge.matrix import (
    TIME_MEASURES,
    AllOf,
    AnyOf,
    Condition,
    FieldTest,
    KeywordTest,
    Matrix,
    NotOf,
    Rule,
    Rung,
    TagTest,
    TimeTest,
    describe_expected,
    describe_target,
)
from escbridge.model import Priority


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


# --- routes: which rule can take a ticket from where to where --------------------------------


@dataclass(frozen=True)
class Route:
    """Rules that can move a ticket from ``source`` to ``target`` (``step``: by ``to: next``)."""

    source: Rung
    target: Rung
    rules: tuple[Rule, ...]
    step: tuple[Rule, ...]

    @property
    def lateral(self) -> bool:
        """A level handing over to a team of the same rank."""
        return self.source.rank == self.target.rank


def _leads(matrix: Matrix, rule: Rule, source: Rung) -> Rung | None:
    """Where ``rule`` takes a ticket sitting at ``source`` (the engine's ``_resolve``)."""
    if rule.target.next or rule.target.rung is None:
        above = source.rank + 1
        return matrix.levels[above] if above < len(matrix.levels) else None
    target = rule.target.rung
    if target.id == source.id or target.rank < source.rank:
        return None
    if target.rank == source.rank and (target.kind == "level" or source.kind == "team"):
        return None
    return target


def routes(matrix: Matrix) -> list[Route]:
    """Every (source, target) pair some rule connects, in ladder order, with its rules."""
    found: dict[tuple[str, str], tuple[Rung, Rung, list[Rule], list[Rule]]] = {}
    for source in matrix.rungs:
        for rule in matrix.rules:
            target = _leads(matrix, rule, source)
            if target is None:
                continue
            entry = found.setdefault((source.id, target.id), (source, target, [], []))
            entry[2].append(rule)
            if rule.target.next:
                entry[3].append(rule)
    order = {rung.id: i for i, rung in enumerate(matrix.rungs)}
    return [
        Route(source, target, tuple(rules), tuple(step))
        for source, target, rules, step in sorted(
            found.values(), key=lambda e: (order[e[1].id], e[0].rank, order[e[0].id])
        )
    ]


def _rank_label(rung: Rung) -> str:
    return f"L{rung.rank + 1}"


# --- conditions in words ----------------------------------------------------------------------

_OP_WORDS = {
    "equals": "is",
    "not_equals": "is not",
    "in": "is",
    "not_in": "is not",
    "contains": "contains",
    "regex": "matches",
    "gt": "above",
    "gte": "at least",
    "lt": "below",
    "lte": "at most",
}
_PARTY_FIELDS = {"requester": "requester", "organization": "organization"}


def _value_text(value: Any) -> str:
    if isinstance(value, Priority):
        return value.label
    if isinstance(value, frozenset):
        return " or ".join(sorted(_value_text(v) for v in value))
    if isinstance(value, re.Pattern):
        return f"/{value.pattern}/"
    return str(value)


def _field_text(cond: FieldTest) -> str:
    name = cond.field.replace("custom_fields.", "").replace("_", " ")
    if cond.op == "exists":
        return f"{name} {'is set' if cond.value else 'is empty'}"
    if cond.field == "priority" and cond.op in ("gt", "gte", "lt", "lte"):
        return f"priority {_OP_WORDS[cond.op]} {_value_text(cond.value)}"
    return f"{name} {_OP_WORDS[cond.op]} {_value_text(cond.value)}"


def _party_text(cond: AnyOf) -> str | None:
    """The ``organization: [Globex, Initech]`` shorthand reads back as one clause."""
    if not all(isinstance(c, FieldTest) for c in cond.items):
        return None
    parties = {c.field.split(".")[0] for c in cond.items if isinstance(c, FieldTest)}
    if len(parties) != 1 or not parties <= set(_PARTY_FIELDS):
        return None
    values: list[str] = []
    for c in cond.items:
        assert isinstance(c, FieldTest)
        text = _value_text(c.value).strip("/").removesuffix("$").replace("\\", "")
        if text not in values:
            values.append(text)
    return f"{parties.pop()} is {' or '.join(values)}"


def describe_condition(cond: Condition, *, nested: bool = False) -> str:
    """A rule's trigger in words, for people: ``tagged vip and idle over 2h``."""
    if isinstance(cond, AllOf | AnyOf):
        party = _party_text(cond) if isinstance(cond, AnyOf) else None
        if party is not None:
            return party
        joiner = " and " if isinstance(cond, AllOf) else " or "
        text = joiner.join(describe_condition(c, nested=True) for c in cond.items)
        return f"({text})" if nested and len(cond.items) > 1 else text
    if isinstance(cond, NotOf):
        return f"not {describe_condition(cond.item, nested=True)}"
    if isinstance(cond, FieldTest):
        return _field_text(cond)
    if isinstance(cond, TagTest):
        parts = []
        if cond.any_of:
            parts.append("tagged " + " or ".join(sorted(cond.any_of)))
        if cond.all_of:
            parts.append("tagged " + " and ".join(sorted(cond.all_of)))
        if cond.none_of:
            parts.append("not tagged " + " or ".join(sorted(cond.none_of)))
        return " and ".join(parts) or "any tags"
    if isinstance(cond, KeywordTest):
        words = ", ".join(f"“{' '.join(p)}”" for p in cond.phrases)
        where = " or ".join(f.replace("_", " ") for f in cond.fields)
        return f"mentions {words} in the {where}"
    assert isinstance(cond, TimeTest)
    return time_condition_text(cond.measure, cond.over, cond.under, business=cond.business)


#: ``over: 0m`` on these measures reads better as what it means.
_RUN_OUT = {
    "level_overdue": "the current level's expected resolution time has run out",
    "response_overdue": "the level's expected first-response time has run out, unanswered",
    "overdue": "the ticket is past its due time",
}


def time_condition_text(
    measure: str, over: timedelta | None, under: timedelta | None, *, business: bool
) -> str:
    """``time since the ticket was last updated over 2h`` (calendar time says so)."""
    mode = "" if business else " (calendar time)"
    if over == timedelta(0) and under is None and measure in _RUN_OUT:
        return _RUN_OUT[measure] + mode
    bounds = []
    if over is not None:
        bounds.append(f"over {format_duration(over)}")
    if under is not None:
        bounds.append(f"under {format_duration(under)}")
    return f"{TIME_MEASURES[measure]} {' and '.join(bounds)}{mode}"


def _actions_text(rule: Rule) -> list[str]:
    a = rule.actions
    out = []
    if a.priority is not None:
        out.append(f"priority at least {a.priority.label}")
    if a.tags:
        out.append("tags " + ", ".join(a.tags))
    out.append("custom note" if a.note is not None else "standard note")
    if a.customer_update is not None:
        out.append("customer update")
    if a.unassign:
        out.append("unassign")
    return out


# --- HTML ---------------------------------------------------------------------------------------


@functools.cache
def html_environment() -> jinja2.Environment:
    """The Jinja2 environment for the HTML pages: the package's templates, autoescape on."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("escbridge", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _rung_name(rung: Rung) -> str:
    return _rank_label(rung) if rung.kind == "level" else rung.name


def _rung_view(rung: Rung, into: Sequence[Route]) -> dict[str, Any]:
    """One box of the chart; arrivals grouped by where tickets come from and how."""
    by_rule: dict[str, tuple[Rule, list[Rung]]] = {}
    for route in into:
        for rule in route.rules:
            by_rule.setdefault(rule.id, (rule, []))[1].append(route.source)
    groups: dict[tuple[bool, tuple[str, ...]], list[Rule]] = {}
    for rule, sources in by_rule.values():
        key = (bool(rule.target.next), tuple(_rung_name(s) for s in sources))
        groups.setdefault(key, []).append(rule)
    arrivals = [
        {
            "how": f"One level up from {_or(sources)}" if step else f"Directly from {_or(sources)}",
            "rules": rules,
        }
        for (step, sources), rules in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
    calendar = rung.calendar
    return {
        "rung": rung,
        "anchor": f"rung-{rung.id}",
        "rank": _rank_label(rung),
        "groups": list(rung.groups.items()),
        "min_priority": rung.min_priority.label if rung.min_priority else None,
        "response": format_duration(rung.response) if rung.response else None,
        "resolution": format_duration(rung.resolution) if rung.resolution else None,
        "time": (
            f"business time, calendar {calendar.name} ({calendar.tz.key})"
            if rung.business
            else "calendar time"
        ),
        "start": rung.kind == "level" and rung.rank == 0,
        "arrivals": arrivals,
    }


def _or(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def matrix_html(matrix: Matrix) -> str:
    """One self-contained HTML page: the escalation chart and the matrix table."""
    all_routes = routes(matrix)
    into: dict[str, list[Route]] = {}
    for route in all_routes:
        into.setdefault(route.target.id, []).append(route)
    ranks = []
    for level in matrix.levels:
        rungs = [level, *(t for t in matrix.teams.values() if t.rank == level.rank)]
        ranks.append(
            {
                "label": _rank_label(level),
                "rungs": [_rung_view(r, into.get(r.id, [])) for r in rungs],
            }
        )
    rule_rows = [
        {
            "rule": rule,
            "row": row,
            "trigger": describe_condition(rule.condition),
            "responsible": (
                [f"{helpdesk}: {group}" for helpdesk, group in rule.target.rung.groups.items()]
                if rule.target.rung is not None
                else [row[3]]
            ),
            "actions": _actions_text(rule),
        }
        for rule, row in zip(matrix.rules, _rule_rows(matrix), strict=True)
    ]
    template = html_environment().get_template("matrix.html.j2")
    return template.render(
        title=matrix.name,
        matrix=matrix,
        ranks=ranks,
        rules=rule_rows,
        ladder_headers=("id", "level / team", "responsible group", "min priority", "expected"),
        ladder_rows=_ladder_rows(matrix),
        limits=_limits(matrix),
    )


# --- Mermaid ------------------------------------------------------------------------------------

_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;"}
_MERMAID_ESCAPE = re.compile("[" + re.escape("".join(_MERMAID_ESCAPES)) + "]")


def mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: quotes, brackets and pipes as entity codes."""
    return _MERMAID_ESCAPE.sub(lambda m: _MERMAID_ESCAPES[m.group(0)], " ".join(text.split()))


def _mermaid_ids(rungs: Iterable[Rung]) -> dict[str, str]:
    """Node ids Mermaid accepts: letters, digits, underscores; prefixed, so never a keyword."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for rung in rungs:
        base = f"{rung.kind}_" + re.sub(r"[^A-Za-z0-9_]", "_", rung.id)
        node, n = base, 2
        while node in used:
            node, n = f"{base}_{n}", n + 1
        used.add(node)
        ids[rung.id] = node
    return ids


def _mermaid_label(rung: Rung, lateral_sources: Sequence[str]) -> str:
    title = f"{_rank_label(rung)} · {rung.name}" if rung.kind == "level" else f"{rung.name}"
    lines = [f"<b>{mermaid_text(title)}</b>"]
    if rung.kind == "team":
        lines.append(mermaid_text(f"functional team, rank {_rank_label(rung)}"))
    lines += [mermaid_text(f"{helpdesk}: {group}") for helpdesk, group in rung.groups.items()]
    if rung.min_priority is not None:
        lines.append(mermaid_text(f"min priority {rung.min_priority.label}"))
    expected = describe_expected(rung)
    if expected != "—":
        lines.append(mermaid_text(expected))
    if lateral_sources:
        lines.append(mermaid_text("also from " + ", ".join(lateral_sources)))
    return "<br/>".join(lines)


def _mermaid_edge_label(route: Route) -> str:
    ids = [r.id for r in route.rules]
    lines = [", ".join(ids[i : i + 2]) for i in range(0, len(ids), 2)]
    return "<br/>".join(mermaid_text(line) for line in lines)


def matrix_mermaid(matrix: Matrix) -> str:
    """A Mermaid ``flowchart``: the ladder top to bottom, teams beside their rank, rules on the
    arrows (solid: hierarchical moves, dotted: to a functional team).

    Same-rank handovers (a level to a team of its rank) are named inside the team's box rather
    than drawn: an arrow would push the team a row down and break the ladder's shape.
    """
    ids = _mermaid_ids(matrix.rungs)
    all_routes = routes(matrix)
    lateral: dict[str, list[str]] = {}
    for route in all_routes:
        if route.lateral:
            lateral.setdefault(route.target.id, []).append(_rung_name(route.source))
    out = ["flowchart TB", f"    %% {mermaid_text(matrix.name)}"]
    out.append('    start(["New ticket"])')
    for rung in matrix.rungs:
        label = _mermaid_label(rung, lateral.get(rung.id, []))
        shape = ('["', '"]') if rung.kind == "level" else ('[["', '"]]')
        out.append(f"    {ids[rung.id]}{shape[0]}{label}{shape[1]}")
    first = matrix.levels[0]
    out.append(f"    start --> {ids[first.id]}")
    for route in all_routes:
        if route.lateral:
            continue
        span = max(1, route.target.rank - route.source.rank)
        arrow = (
            ("-" * (span + 1) + ">") if route.target.kind == "level" else ("-" + "." * span + "->")
        )
        source, target = ids[route.source.id], ids[route.target.id]
        out.append(f'    {source} {arrow}|"{_mermaid_edge_label(route)}"| {target}')
    out.append("    classDef level fill:#e8f0fe,stroke:#1d4ed8,color:#0b1f44")
    out.append("    classDef team fill:#fff4e0,stroke:#b45309,color:#3b2003")
    out.append("    classDef entry fill:#f1f5f9,stroke:#64748b,color:#0f172a")
    out.append("    class " + ",".join(ids[r.id] for r in matrix.levels) + " level")
    if matrix.teams:
        out.append("    class " + ",".join(ids[r.id] for r in matrix.teams.values()) + " team")
    out.append("    class start entry")
    return "\n".join(out) + "\n"
