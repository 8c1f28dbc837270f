"""The escalation chart: every route a rule can take, and the HTML page that draws the ladder.

Levels top to bottom, teams beside their rank; the routes are worked out with
``Matrix.resolve``, the rule the engine decides with, so the chart cannot promise a route the
engine would refuse.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jinja2

from escbridge.calendar import format_duration
from escbridge.conditions.describe import describe_condition
from escbridge.matrix import Matrix, Rule, Rung, expected_text
from escbridge.views.tables import LADDER_HEADERS, ladder_rows, limits_text, rule_rows


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


def routes(matrix: Matrix) -> list[Route]:
    """Every (source, target) pair some rule connects, in ladder order, with its rules."""
    found: dict[tuple[str, str], tuple[Rung, Rung, list[Rule], list[Rule]]] = {}
    for source in matrix.rungs:
        for rule in matrix.rules:
            target = matrix.resolve(rule, source)
            if isinstance(target, str):  # the engine would refuse: not a route
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


def rank_label(rung: Rung) -> str:
    return f"L{rung.rank + 1}"


def rung_name(rung: Rung) -> str:
    """How a chart names a rung in a sentence: a level by its rank, a team by its name."""
    return rank_label(rung) if rung.kind == "level" else rung.name


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


def _rung_view(rung: Rung, into: Sequence[Route]) -> dict[str, Any]:
    """One box of the chart; arrivals grouped by where tickets come from and how."""
    by_rule: dict[str, tuple[Rule, list[Rung]]] = {}
    for route in into:
        for rule in route.rules:
            by_rule.setdefault(rule.id, (rule, []))[1].append(route.source)
    groups: dict[tuple[bool, tuple[str, ...]], list[Rule]] = {}
    for rule, sources in by_rule.values():
        key = (bool(rule.target.next), tuple(rung_name(s) for s in sources))
        groups.setdefault(key, []).append(rule)
    arrivals = [
        {
            "how": f"One level up from {_or(sources)}" if step else f"Directly from {_or(sources)}",
            "rules": rules,
        }
        for (step, sources), rules in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
    return {
        "rung": rung,
        "anchor": f"rung-{rung.id}",
        "rank": rank_label(rung),
        "groups": list(rung.groups.items()),
        "min_priority": rung.min_priority.label if rung.min_priority else None,
        "response": expected_text(rung, "response") if rung.response else None,
        "resolution": expected_text(rung, "resolution") if rung.resolution else None,
        "time": _time_text(rung),
        "start": rung.kind == "level" and rung.rank == 0,
        "arrivals": arrivals,
    }


def _time_text(rung: Rung) -> str:
    """How the rung counts its expected times, with what a "1d" there is."""
    if not rung.business:
        return "calendar time (1d = 24h)"
    calendar = rung.calendar
    text = f"business time, calendar {calendar.name} ({calendar.tz.key})"
    day = calendar.day_seconds()
    if day is None:
        return f"{text}; its working days differ in length, so times are in hours"
    return f"{text}; 1d = a working day of {format_duration(timedelta(seconds=day))}"


def _or(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def matrix_html(matrix: Matrix) -> str:
    """One self-contained HTML page: the escalation chart and the matrix table."""
    into: dict[str, list[Route]] = {}
    for route in routes(matrix):
        into.setdefault(route.target.id, []).append(route)
    ranks = []
    for level in matrix.levels:
        rungs = [level, *(t for t in matrix.teams.values() if t.rank == level.rank)]
        ranks.append(
            {
                "label": rank_label(level),
                "rungs": [_rung_view(r, into.get(r.id, [])) for r in rungs],
            }
        )
    rules = [
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
        for rule, row in zip(matrix.rules, rule_rows(matrix), strict=True)
    ]
    template = html_environment().get_template("matrix.html.j2")
    return template.render(
        title=matrix.name,
        matrix=matrix,
        ranks=ranks,
        rules=rules,
        ladder_headers=LADDER_HEADERS,
        ladder_rows=ladder_rows(matrix),
        limits=limits_text(matrix),
    )
