"""The report as one self-contained HTML page, with charts drawn by matplotlib as inline SVG.

matplotlib is the optional extra ``escbridge[charts]``; it is imported only when a page is
drawn. Without it the page still renders, tables and figures included, and says how to get the
charts.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from typing import TYPE_CHECKING, Any

from escbridge.reports.figures import Breakdown, Report
from escbridge.reports.text import (
    APPLIED_TEXT,
    applied_text,
    change_text,
    human,
    length_text,
    pct,
    period_text,
    reasons_text,
    within_text,
)
from escbridge.views import html_environment
from escbridge.wording import pip_install

if TYPE_CHECKING:
    from markupsafe import Markup
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

#: What the page says in place of its charts when matplotlib is not installed.
CHARTS_NEED_MATPLOTLIB = (
    f"Charts are not shown: they need matplotlib, escbridge's [charts] extra: "
    f"{pip_install('escbridge[charts]')}."
)

PALETTE = {
    "current": "#1d4ed8",
    "previous": "#94a3b8",
    "within": "#15803d",
    "over": "#dc2626",
    "moved": "#f59e0b",
    "open": "#cbd5e1",
    "late": "#7c2d12",
    "untimed": "#60a5fa",
}


def _plt_rc() -> dict[RcKeyType, Any]:
    return {
        "svg.fonttype": "none",  # text stays text: no embedded glyphs, readable and small
        "svg.hashsalt": "escbridge",  # stable ids, so the same report renders the same file
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib: the same layout everywhere
        "font.size": 11,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#94a3b8",
        "axes.titleweight": "bold",
        "axes.titlesize": 11,
        "axes.titlelocation": "left",
        "xtick.color": "#334155",
        "ytick.color": "#334155",
        "legend.frameon": False,
    }


_FONTS = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"
_SVG_ID = re.compile(r'\bid="([^"]+)"')


def _svg(fig: Figure, name: str, label: str) -> Markup:
    """The figure as inline SVG: no XML prolog, ids made unique to this chart. CSS sizes it to
    the page's width (viewBox); on a phone it stops at a legible width and scrolls."""
    from markupsafe import Markup

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    ids = set(_SVG_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{name}-{old}"
        text = text.replace(f'id="{old}"', f'id="{new}"')
        text = text.replace(f'href="#{old}"', f'href="#{new}"')
        text = text.replace(f"url(#{old})", f"url(#{new})")
    text = text.replace("<svg", f'<svg role="img" aria-label="{_attr(label)}"', 1)
    # Metadata blocks name the generator's URLs; they are not needed to draw the chart.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.S)
    # Laid out with DejaVu Sans (shipped with matplotlib); shown in the page's own font.
    text = text.replace("font-family: 'DejaVu Sans', sans-serif", f"font-family: {_FONTS}")
    return Markup(text.strip())


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


#: Inches: about the page's width (72rem), so text drawn at 11 pt shows near the page's own size.
CHART_WIDTH = 10.0


def _figure(height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(CHART_WIDTH, height), layout="constrained")


def _whole_numbers(axis: Axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _legend(fig: Figure, columns: int) -> None:
    """The legend above the plot, outside it: never over a bar, whatever the data; bars first."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    pairs = sorted(
        zip(handles, labels, strict=True),
        key=lambda p: labels.index(p[1]) + (100 if p[1] == "previous period" else 0),
    )
    fig.legend(
        [h for h, _ in pairs],
        [lbl for _, lbl in pairs],
        loc="outside upper left",
        ncols=columns,
        fontsize=9.5,
        handlelength=1.5,
    )


def _trend_chart(report: Report) -> Markup | None:
    points = report.trend.points
    if not points or not any(p.count or p.previous for p in points):
        return None
    fig = _figure(3.4)
    ax = fig.subplots()
    xs = list(range(len(points)))
    ax.bar(xs, [p.count for p in points], color=PALETTE["current"], label="this period", width=0.8)
    ax.plot(
        xs,
        [p.previous for p in points],
        color=PALETTE["previous"],
        linewidth=2,
        linestyle="--",
        marker="o",
        markersize=3,
        label="previous period",
    )
    step = max(1, math.ceil(len(points) / 7))
    ticks = xs[::step]
    fmt = "%b %d" if report.trend.unit == "day" else "w/c %b %d"
    ax.set_xticks(ticks, [points[i].start.strftime(fmt) for i in ticks])
    _whole_numbers(ax.yaxis)
    ax.set_ylabel("escalations")
    ax.grid(axis="y", color="#e2e8f0")
    ax.set_axisbelow(True)
    _legend(fig, 2)
    return _svg(
        fig, "trend", f"Escalations per {report.trend.unit}, this period against the previous"
    )


def _wrap(text: str, width: int = 24) -> str:
    """A long label on at most two lines."""
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], _short(" ".join(lines[1:]), width)]
    return "\n".join(lines)


def _bars_chart(b: Breakdown, name: str, limit: int = 12) -> Markup | None:
    items = [s for s in b.items if s.count or s.previous][:limit]
    if not items:
        return None
    fig = _figure(0.7 + 0.5 * len(items))
    ax = fig.subplots()
    ys = list(range(len(items)))
    height = 0.4
    ax.barh(
        [y - height / 2 for y in ys],
        [s.count for s in items],
        height=height,
        color=PALETTE["current"],
        label="this period",
    )
    ax.barh(
        [y + height / 2 for y in ys],
        [s.previous for s in items],
        height=height,
        color=PALETTE["previous"],
        label="previous period",
    )
    ax.set_yticks(ys, [_wrap(s.label) for s in items])
    ax.invert_yaxis()
    _whole_numbers(ax.xaxis)
    ax.margins(x=0.08)
    for y, s in zip(ys, items, strict=True):
        if s.count:
            ax.annotate(
                str(s.count),
                (s.count, y - height / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
            )
    ax.grid(axis="x", color="#e2e8f0")
    ax.set_axisbelow(True)
    _legend(fig, 2)
    return _svg(fig, name, f"Escalations by {b.title.lower()}, this period against the previous")


def _target_chart(report: Report) -> Markup | None:
    rows = [t for t in report.timings if t.escalations]
    if not rows:
        return None
    fig = _figure(1.0 + 0.5 * len(rows))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    timed = [t.expected is not None for t in rows]
    parts = (
        ("resolved within target", PALETTE["within"], [t.within_target for t in rows]),
        (
            "resolved late",
            PALETTE["over"],
            [t.resolved - t.within_target if ok else 0 for t, ok in zip(rows, timed, strict=True)],
        ),
        (
            "resolved (no target)",
            PALETTE["untimed"],
            [0 if ok else t.resolved for t, ok in zip(rows, timed, strict=True)],
        ),
        ("moved on", PALETTE["moved"], [t.moved_on for t in rows]),
        ("open, late", PALETTE["late"], [t.open_past_target for t in rows]),
        (
            "open" if all(t.resolution_recorded for t in rows) else "not escalated further",
            PALETTE["open"],
            [t.open - t.open_past_target for t in rows],
        ),
    )
    left = [0] * len(rows)
    shown = 0
    for label, color, values in parts:
        if any(values):
            ax.barh(ys, values, left=left, color=color, label=label, height=0.6)
            left = [a + b for a, b in zip(left, values, strict=True)]
            shown += 1
    ax.set_yticks(ys, [_wrap(t.label) for t in rows])
    ax.invert_yaxis()
    _whole_numbers(ax.xaxis)
    ax.set_xlabel("escalations in the period")
    _legend(fig, min(3, shown))
    return _svg(fig, "target", "What became of each escalation, by level or team")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_html(report: Report) -> str:
    """One self-contained page: figures, charts (inline SVG) and tables, readable on a phone."""
    charts = _charts(report)
    within, measured = report.within_target
    template = html_environment().get_template("report.html.j2")
    return template.render(
        title=report.title,
        r=report,
        charts=dict.fromkeys(CHARTS) if charts is None else charts,
        charts_note=CHARTS_NEED_MATPLOTLIB if charts is None else None,
        has_trend=any(p.count or p.previous for p in report.trend.points),
        period=period_text(report),
        length=length_text(report.window),
        within=within,
        measured=measured,
        within_text=within_text(report),
        reasons_text=reasons_text(report),
        applied_text=applied_text,
        applied_intro=APPLIED_TEXT,
        pct=pct,
        human=human,
        change_text=change_text,
        small=[b for b in report.breakdowns if b.name not in ("level", "rule")],
    )


#: The page's charts, by the names the template knows them by.
CHARTS = ("trend", "level", "rule", "target")


def _charts(report: Report) -> dict[str, Markup | None] | None:
    """The page's charts by name (None where there is nothing to draw); None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    # The object API only (Figure, no pyplot): no GUI backend, no global figure list; SVG
    # output needs no raster backend at all.
    with matplotlib.rc_context(_plt_rc()):
        return {
            "trend": _trend_chart(report),
            "level": _bars_chart(report.breakdown("level"), "level"),
            "rule": _bars_chart(report.breakdown("rule"), "rule"),
            "target": _target_chart(report),
        }
