"""`escbridge matrix --format html|mermaid`: the escalation chart a support manager shows the team.

The routes drawn are the routes the engine takes; the HTML is one valid, self-contained page
that reads on a phone; the Mermaid is a flowchart any Markdown viewer with Mermaid renders.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from html_checks import assert_valid_page, parse
from matrix_helpers import NOW, rule_yaml, ticket

from escbridge.conditions.describe import describe_condition
from escbridge.matrix import Matrix, load_matrix, parse_matrix
from escbridge.policy import Engine
from escbridge.views import matrix_html, matrix_mermaid, mermaid_text, routes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example() -> Matrix:
    return load_matrix(ROOT / "examples" / "matrix.yaml")


HOSTILE = """\
version: 1
name: 'Ops "matrix" <b>bold</b> & | pipes #1 [x] {y} (z) ; end'
defaults: {time: calendar}
levels:
  - id: end
    name: 'Front "line" | #1 <script>alert(1)</script>'
    groups: {zendesk: 'Support [EU] (main)', '*': 'A|B "C" {D}'}
    resolution: 1d
  - id: o-x
    name: "Level 2 ; graph TD; click"
    groups: {zendesk: "Senior --> Support"}
    min_priority: high
  - id: o_x
    name: "Same id once sanitised"
    groups: {zendesk: "Managers %% not a comment"}
teams:
  sub-graph:
    name: 'Team "subgraph" end'
    groups: {zendesk: "Billing"}
    level: o-x
  style:
    name: "class style click"
    groups: {zendesk: "X"}
    level: o_x
rules:
  - {id: a-b, kind: hierarchical, name: 'Rule "one" | #2 <i>', when: {keywords: [x]}, to: next}
  - {id: end-x, kind: hierarchical, when: {tags: [vip]}, to: o_x}
  - {id: t1, kind: functional, when: {tags: [billing]}, to: sub-graph}
  - {id: t2, kind: functional, when: {tags: [x]}, to: style}
"""


@pytest.fixture(scope="module")
def hostile() -> Matrix:
    return parse_matrix(HOSTILE, "hostile.yaml")


# --- routes ----------------------------------------------------------------------------------


class TestRoutes:
    def test_every_route_drawn_is_one_the_engine_takes(self, example: Matrix) -> None:
        # The example's ladder with one rule per destination, each fired by its own tag: a
        # ticket sitting on each rung with each tag shows where the engine really sends it.
        rules = [rule_yaml("{tags: [up]}", rule_id="up", to="next")]
        rules += [
            rule_yaml(f"{{tags: [to-{lv.id}]}}", rule_id=f"to-{lv.id}", to=lv.id)
            for lv in example.levels
        ]
        rules += [
            rule_yaml(
                f"{{tags: [to-{t}]}}", rule_id=f"to-{t}", kind="functional", to=f"{{team: {t}}}"
            )
            for t in example.teams
        ]
        head = (ROOT / "examples" / "matrix.yaml").read_text(encoding="utf-8")
        m = parse_matrix(head.split("\nrules:")[0] + "\nrules:\n" + "".join(rules), "m.yaml")
        engine = Engine(m, {"support-eu": "zendesk"})
        taken = set()
        for source in m.rungs:
            for rule in m.rules:
                t = ticket(level=source.id, tags=[rule.id], priority="urgent")
                decision = engine.decide(t, (), NOW)
                if decision.escalate:
                    assert decision.destination is not None
                    taken.add((source.id, decision.destination.id, rule.id))
        drawn = {(r.source.id, r.target.id, rule.id) for r in routes(m) for rule in r.rules}
        assert drawn == taken
        assert ("l2", "l1") not in {(s, t) for s, t, _ in drawn}  # never down

    def test_the_example_ladder(self, example: Matrix) -> None:
        by_pair = {(r.source.id, r.target.id): r for r in routes(example)}
        assert set(by_pair) == {
            ("l1", "l2"),
            ("l1", "l3"),
            ("l2", "l3"),
            ("billing", "l3"),
            ("technical", "l3"),
            ("l1", "billing"),
            ("l2", "billing"),
            ("l1", "technical"),
            ("l2", "technical"),
        }
        assert [r.id for r in by_pair["l1", "l3"].rules] == ["legal-threat"]
        up = by_pair["l1", "l2"]
        assert {r.id for r in up.step} == {
            "supervisor-requested",
            "vip-customer",
            "vip-idle",
            "sla-about-to-breach",
            "level-resolution-expired",
            "first-response-late",
        }
        assert {r.id for r in up.rules} - {r.id for r in up.step} == {
            "hostile-conversation",
            "policy-exception",
            "repeatedly-reopened",
        }
        assert by_pair["l2", "billing"].lateral and not by_pair["l1", "billing"].lateral
        assert all(r.target.id != "l1" for r in by_pair.values())


class TestConditionsInWords:
    def test_the_example_triggers_read_as_sentences(self, example: Matrix) -> None:
        words = {rule.id: describe_condition(rule.condition) for rule in example.rules}
        assert words["vip-idle"] == "tagged vip and time since the ticket was last updated over 2h"
        assert (
            words["refund-over-limit"] == "refund amount above 500 and not tagged refund_approved"
        )
        assert words["sla-about-to-breach"] == (
            "time left until the ticket is due under 1h (calendar time) "
            "and priority at least normal"
        )
        assert words["vip-customer"].startswith(
            "(tagged enterprise or vip or organization is globex corporation or initech)"
        )
        assert words["level-resolution-expired"] == (
            "the current level's expected resolution time has run out and status is new or open"
        )
        assert words["repeatedly-reopened"] == "reopen count at least 3"


# --- HTML ------------------------------------------------------------------------------------


class TestHtml:
    def test_the_example_is_a_valid_self_contained_page(self, example: Matrix) -> None:
        html = matrix_html(example)
        page = assert_valid_page(html)
        assert page.title == "Acme support escalation matrix"
        assert page.tags["table"] == 2
        assert html.count('<div class="table-wrap">') == page.tags["table"]  # tables scroll
        css = "\n".join(page.styles)
        assert "overflow-x: auto" in css and "@media (max-width:" in css

    def test_the_ladder_runs_top_down_with_teams_beside_their_rank(self, example: Matrix) -> None:
        html = matrix_html(example)
        ranks = re.findall(
            r'<li class="rank" data-rank="(L\d)">(.*?)</li>\n(?=<li class="rank"|</ol>)', html, re.S
        )
        assert [label for label, _ in ranks] == ["L1", "L2", "L3"]
        boxes = [
            re.findall(r'<article class="card (\w+)" id="rung-([\w-]+)"', body) for _, body in ranks
        ]
        assert boxes == [
            [("level", "l1")],
            [("level", "l2"), ("team", "billing"), ("team", "technical")],
            [("level", "l3")],
        ]

    def test_each_box_says_who_is_responsible_and_how_fast(self, example: Matrix) -> None:
        text = parse(matrix_html(example)).visible_text
        for rung in example.rungs:
            for helpdesk, group in rung.groups.items():
                assert f"{helpdesk} {group}" in text
        l2 = text[text.index("Senior support / team lead l2") :]
        assert l2.startswith(
            "Senior support / team lead l2 Responsible zendesk Senior Support freshdesk Team Leads"
            " zohodesk Tier 2 Min. priority high Response 2h Resolution 8h"
            " Counted in business time, calendar support-hours (Europe/Berlin)"
        )

    def test_each_box_lists_the_rules_that_reach_it_and_from_where(self, example: Matrix) -> None:
        text = parse(matrix_html(example)).visible_text
        start = text.index("Support manager l3")
        l3 = text[start : text.index("Matrix table", start)]
        assert (
            "Directly from L1, L2, Billing specialists or Technical specialists: "
            "Legal threat or cancellation"
        ) in l3
        assert "One level up from L2, Billing specialists or Technical specialists: " in l3
        billing = text[
            text.index("Billing specialists billing") : text.index(
                "Technical specialists technical"
            )
        ]
        assert (
            "Directly from L1 or L2: Refund beyond the frontline's authority "
            "Billing dispute needs a specialist"
        ) in billing

    def test_the_matrix_table_has_one_row_per_rule(self, example: Matrix) -> None:
        html = matrix_html(example)
        rows = re.findall(r'<tr id="rule-([\w-]+)">(.*?)</tr>', html, re.S)
        assert [rule_id for rule_id, _ in rows] == [r.id for r in example.rules]
        legal = dict(rows)["legal-threat"]
        cells = [
            " ".join(re.sub("<[^>]+>", " ", c).split())
            for c in re.findall(r"<td[^>]*>(.*?)</td>", legal, re.S)
        ]
        assert cells == [
            "Legal threat or cancellation legal-threat",
            "hierarchical",
            "mentions “lawyer”, “attorney”, “legal action”, “sue”, “cancel my account” "
            "in the subject or description or latest comment",
            "level l3",
            "zendesk: Support Managers freshdesk: Managers zohodesk: Management",
            "response 1h, resolution 4h (business time)",
            "priority at least urgent; tags legal_risk; standard note",
        ]
        # Every "Reached by" link points at a row of the table.
        targets = set(re.findall(r'href="#rule-([\w-]+)"', html))
        assert targets <= {r.id for r in example.rules}

    def test_names_from_the_yaml_are_escaped(self, hostile: Matrix) -> None:
        html = matrix_html(hostile)
        page = assert_valid_page(html)
        assert "<script>" not in html and "<b>bold</b>" not in html and "<i>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert 'Front "line" | #1 <script>alert(1)</script>' in page.visible_text

    def test_a_matrix_without_teams_or_rules_still_renders(self) -> None:
        bare = parse_matrix(
            "levels:\n  - {id: l1, name: Only, groups: {zendesk: Support}}\n", "bare.yaml"
        )
        page = assert_valid_page(matrix_html(bare))
        assert "This matrix has no rules yet." in page.visible_text


# --- Mermaid ---------------------------------------------------------------------------------

NODE = re.compile(r"^    (\w+)(\(\[|\[\[|\[)\"(.*)\"(\]\)|\]\]|\])$")
EDGE = re.compile(r'^    (\w+) (-{2,}>|-\.+->)(?:\|"([^"]*)"\|)? (\w+)$')
RESERVED = {
    "end",
    "graph",
    "subgraph",
    "flowchart",
    "style",
    "class",
    "classDef",
    "click",
    "default",
    "linkStyle",
    "direction",
}


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str, str]]]:
    """Nodes (id → label) and edges (source, arrow, label, target); fails on any other line."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TB"
    nodes: dict[str, str] = {}
    edges = []
    for line in lines[1:]:
        if line.startswith("    %%") or line.startswith(("    classDef ", "    class ")):
            continue
        if m := NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            assert {"([": "])", "[[": "]]", "[": "]"}[m[2]] == m[4], line
            nodes[m[1]] = m[3]
            continue
        m = EDGE.match(line)
        assert m, f"not a node, an edge or a style: {line!r}"
        edges.append((m[1], m[2], m[3] or "", m[4]))
    return nodes, edges


class TestMermaid:
    def test_the_example_is_a_plausible_flowchart(self, example: Matrix) -> None:
        text = matrix_mermaid(example)
        nodes, edges = parse_mermaid(text)
        assert list(nodes) == [
            "start",
            "level_l1",
            "level_l2",
            "level_l3",
            "team_billing",
            "team_technical",
        ]
        for source, _, label, target in edges:
            assert source in nodes and target in nodes
            assert '"' not in label
        for label in nodes.values():
            assert '"' not in label and "|" not in label
        for line in text.splitlines():
            assert line.count("[") == line.count("]") and line.count("(") == line.count(")")
            assert line.count('"') % 2 == 0
        classes = [ln for ln in text.splitlines() if ln.startswith("    class ")]
        assert classes == [
            "    class level_l1,level_l2,level_l3 level",
            "    class team_billing,team_technical team",
            "    class start entry",
        ]

    def test_rules_label_the_arrows_and_span_the_ranks_they_skip(self, example: Matrix) -> None:
        _, edges = parse_mermaid(matrix_mermaid(example))
        by_pair = {(s, t): (arrow, label) for s, arrow, label, t in edges}
        assert by_pair["start", "level_l1"] == ("-->", "")
        assert by_pair["level_l1", "level_l3"] == ("--->", "legal-threat")  # skips L2
        assert by_pair["level_l1", "team_billing"] == ("-.->", "refund-over-limit, billing-dispute")
        arrow, label = by_pair["level_l2", "level_l3"]
        assert arrow == "-->"
        assert label.replace("<br/>", ", ").split(", ") == [
            "supervisor-requested",
            "legal-threat",
            "vip-customer",
            "vip-idle",
            "sla-about-to-breach",
            "level-resolution-expired",
            "first-response-late",
        ]
        # Same-rank handovers stay inside the team's box, so teams stay beside their level.
        assert ("level_l2", "team_billing") not in by_pair

    def test_boxes_carry_groups_priority_and_expected_times(self, example: Matrix) -> None:
        nodes, _ = parse_mermaid(matrix_mermaid(example))
        assert nodes["level_l2"].split("<br/>") == [
            "<b>L2 · Senior support / team lead</b>",
            "zendesk: Senior Support",
            "freshdesk: Team Leads",
            "zohodesk: Tier 2",
            "min priority high",
            "response 2h, resolution 8h (business time)",
        ]
        assert nodes["team_billing"].split("<br/>")[1:2] == ["functional team, rank L2"]
        assert nodes["team_billing"].endswith("also from L2")

    def test_hostile_names_and_ids_are_made_safe(self, hostile: Matrix) -> None:
        text = matrix_mermaid(hostile)
        nodes, edges = parse_mermaid(text)
        assert set(nodes) == {
            "start",
            "level_end",
            "level_o_x",
            "level_o_x_2",
            "team_sub_graph",
            "team_style",
        }
        assert not set(nodes) & RESERVED
        assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) for n in nodes)
        assert {(s, t) for s, _, _, t in edges} >= {("level_end", "level_o_x_2")}
        assert nodes["level_end"].startswith(
            "<b>L1 · Front #quot;line#quot; #124; #35;1 #lt;script#gt;alert(1)#lt;/script#gt;</b>"
        )
        assert "zendesk: Senior --#gt; Support" in nodes["level_o_x"]
        assert text.splitlines()[1].startswith("    %% Ops #quot;matrix#quot;")

    def test_mermaid_text_escapes_what_would_end_a_label(self) -> None:
        assert mermaid_text('a "b" | <c> #d\n e') == "a #quot;b#quot; #124; #lt;c#gt; #35;d e"
