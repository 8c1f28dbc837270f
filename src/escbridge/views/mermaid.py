"""The matrix as a Mermaid ``flowchart``, for any Markdown viewer that renders Mermaid."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from escbridge.matrix import Matrix, Rung, describe_expected
from escbridge.views.chart import Route, rank_label, routes, rung_name

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
    title = f"{rank_label(rung)} · {rung.name}" if rung.kind == "level" else f"{rung.name}"
    lines = [f"<b>{mermaid_text(title)}</b>"]
    if rung.kind == "team":
        lines.append(mermaid_text(f"functional team, rank {rank_label(rung)}"))
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
            lateral.setdefault(route.target.id, []).append(rung_name(route.source))
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
