"""The matrix as tables: plain text for a terminal, Markdown for a wiki or a pull request.

One row per rule: trigger → destination → responsible group per helpdesk → expected time; one
row per level or team. The HTML chart shows the same rows (``ladder_rows``, ``rule_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence

from escbridge.calendar import format_duration
from escbridge.matrix import Matrix, Rung, describe_expected, describe_target

LADDER_HEADERS = ("id", "level / team", "responsible group", "min priority", "expected")
RULE_HEADERS = ("rule", "trigger", "destination", "responsible", "expected")
Row = tuple[str, str, str, str, str]


def groups_text(rung: Rung) -> str:
    """``zendesk: Support, freshdesk: Frontline``."""
    return ", ".join(f"{helpdesk}: {group}" for helpdesk, group in rung.groups.items())


def rule_rows(matrix: Matrix) -> list[Row]:
    rows = []
    for rule in matrix.rules:
        rung = rule.target.rung
        responsible = groups_text(rung) if rung else "the level above the current one"
        expected = describe_expected(rung) if rung else "that level's"
        rows.append((rule.id, rule.name, describe_target(rule), responsible, expected))
    return rows


def ladder_rows(matrix: Matrix) -> list[Row]:
    rows = []
    for rung in matrix.rungs:
        kind = f"L{rung.rank + 1}" if rung.kind == "level" else f"team (rank L{rung.rank + 1})"
        floor = rung.min_priority.label if rung.min_priority else "—"
        rows.append(
            (rung.id, f"{rung.name} [{kind}]", groups_text(rung), floor, describe_expected(rung))
        )
    return rows


def limits_text(matrix: Matrix) -> str:
    return (
        f"cooldown {format_duration(matrix.cooldown)} per ticket, "
        f"at most {matrix.daily_cap} escalations per ticket per 24h"
    )


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the headers."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(s.rstrip() for s in out) + "\n"


def matrix_table(matrix: Matrix) -> str:
    """Plain-text tables for a terminal."""
    ladder = text_table(LADDER_HEADERS, ladder_rows(matrix))
    rules = text_table(RULE_HEADERS, rule_rows(matrix))
    return f"{matrix.name}\n\n{ladder}\n{rules}\nLimits: {limits_text(matrix)}\n"


def _md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def matrix_markdown(matrix: Matrix) -> str:
    """Markdown for a wiki or a pull request."""
    return (
        f"# {matrix.name}\n\n## Levels and teams\n\n"
        + _md(LADDER_HEADERS, ladder_rows(matrix))
        + "\n## Rules\n\n"
        + _md(RULE_HEADERS, rule_rows(matrix))
        + f"\n**Limits:** {limits_text(matrix)}\n"
    )
