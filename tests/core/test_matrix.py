"""The matrix file an admin writes: what it compiles to, and the file:line error for each mistake.

Errors are asserted whole (``file:line key.path: message``), because that line is what an admin
reads in the terminal and acts on.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from matrix_helpers import LADDER, matrix, rule_yaml

from escbridge.errors import InvalidInputError, MatrixError
from escbridge.matrix import load_matrix, parse_matrix
from escbridge.model import Priority

SHORT = """\
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support}
  - id: l2
    name: Senior support
    groups: {zendesk: Senior Support}
"""
RULES = SHORT + "rules:\n"


def problems(text: str) -> list[str]:
    """Every problem the loader reports, as the admin sees it."""
    with pytest.raises(MatrixError) as caught:
        parse_matrix(text, "matrix.yaml")
    return [str(p) for p in caught.value.problems]


def rule_problems(*rules: str, head: str = LADDER) -> list[str]:
    return problems(head + "rules:\n" + "".join(rules))


# --- what a valid matrix compiles to -------------------------------------------------------


class TestCompiledMatrix:
    def test_levels_are_ranked_in_order(self) -> None:
        m = matrix()
        assert [(lv.id, lv.rank) for lv in m.levels] == [("l1", 0), ("l2", 1), ("l3", 2)]
        l2 = m.levels[1]
        assert l2.name == "Senior support"
        assert dict(l2.groups) == {"zendesk": "Senior Support", "freshdesk": "Team Leads"}
        assert l2.min_priority is Priority.HIGH
        assert l2.resolution == timedelta(hours=8)
        assert l2.marker == "escbridge_l2"

    def test_teams_rank_as_the_level_they_name(self) -> None:
        m = matrix()
        assert m.teams["billing"].rank == 1
        assert m.teams["security"].rank == 2
        assert m.teams["billing"].kind == "team"
        assert m.rung("security") is m.teams["security"]
        assert m.rung("l3") is m.levels[2]
        assert m.rung("nowhere") is None

    def test_limits_default_to_30_minutes_and_3_a_day(self) -> None:
        m = parse_matrix(SHORT, "matrix.yaml")
        assert m.cooldown == timedelta(minutes=30)
        assert m.daily_cap == 3
        assert m.rules == ()

    @pytest.mark.parametrize(
        ("to", "kind", "expected"),
        [
            ("next", "hierarchical", (True, None)),
            ("l3", "hierarchical", (False, "l3")),
            ("{level: l3}", "hierarchical", (False, "l3")),
            ("billing", "functional", (False, "billing")),
            ("{team: billing}", "functional", (False, "billing")),
        ],
    )
    def test_destinations(self, to: str, kind: str, expected: tuple[bool, str | None]) -> None:
        rule = matrix(rule_yaml("{tags: [x]}", to=to, kind=kind)).rules[0]
        assert (rule.target.next, rule.target.rung.id if rule.target.rung else None) == expected

    def test_rules_keep_their_order_name_and_line(self) -> None:
        text = (
            RULES
            + "  - id: first\n    kind: hierarchical\n    when: {tags: [a]}\n    to: l2\n"
            + "  - id: second\n    name: The second rule\n    kind: hierarchical\n"
            + "    when: {tags: [b]}\n    to: l2\n"
        )
        m = parse_matrix(text, "matrix.yaml")
        assert [(r.id, r.name, r.line) for r in m.rules] == [
            ("first", "first", 9),
            ("second", "The second rule", 13),
        ]

    def test_disabled_rules_are_left_out(self) -> None:
        text = RULES + "  - id: off-rule\n    kind: hierarchical\n    enabled: false\n"
        text += "    when: {tags: [a]}\n    to: l2\n"
        assert parse_matrix(text, "matrix.yaml").rules == ()

    def test_a_disabled_rule_is_still_checked(self) -> None:
        text = RULES + "  - id: off-rule\n    kind: hierarchical\n    enabled: false\n"
        text += "    when: {idle: 2 hourss}\n    to: l2\n"
        assert problems(text) == [
            'matrix.yaml:12 rules[0].when.idle.over: "2 hourss" is not a duration '
            "(e.g. 90m, 2h, 1d 4h)"
        ]

    def test_rule_tags_are_normalised_to_lower_case(self) -> None:
        m = matrix(rule_yaml("{tags: [x]}", actions="{tags: [Legal_Risk]}"))
        assert m.rules[0].actions.tags == ("legal_risk",)

    def test_load_matrix_reads_a_file_and_names_it_in_errors(self, tmp_path: Path) -> None:
        path = tmp_path / "matrix.yaml"
        path.write_text(RULES + "  - id: r\n    kind: hierarchical\n    when: {tags: [a]}\n")
        with pytest.raises(MatrixError) as caught:
            load_matrix(path)
        assert [str(p) for p in caught.value.problems] == [f"{path}:9 rules[0].to: is required"]

    def test_load_matrix_says_when_the_file_cannot_be_read(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInputError) as caught:
            load_matrix(tmp_path / "missing.yaml")
        missing = tmp_path / "missing.yaml"
        assert str(caught.value) == f"{missing}: cannot read: No such file or directory"


# --- errors: file, line, key path, what was expected ------------------------------------------


class TestErrorMessages:
    def test_the_issues_duration_example(self) -> None:
        text = RULES + (
            "  - id: supervisor\n"  # 9
            "    kind: hierarchical\n"
            "    when: {keywords: [supervisor]}\n"
            "    to: l2\n"
            "  - id: vip\n"  # 13
            "    kind: hierarchical\n"
            "    when: {tags: [vip]}\n"
            "    to: l2\n"
            "  - id: idle-too-long\n"  # 17
            "    kind: hierarchical\n"
            "    when:\n"
            "      any:\n"
            "        - idle:\n"
            "            time: business\n"
            "            over: 2 hourss\n"  # 23
            "    to: next\n"
        )
        assert problems(text) == [
            'matrix.yaml:23 rules[2].when.any[0].idle.over: "2 hourss" is not a duration '
            "(e.g. 90m, 2h, 1d 4h)"
        ]

    def test_a_level_id_too_long_for_a_marker_tag_is_refused(self) -> None:
        # escbridge_<id> is the level marker tag; Zoho Desk takes tags of 50 characters at most.
        long_id = "l" * 41
        text = LADDER.replace("  - id: l1\n", f"  - id: {long_id}\n", 1) + "rules: []\n"
        found = problems(text)
        assert len(found) == 1 and "levels[0].id" in found[0]
        assert "at most 40 characters" in found[0]

    def test_a_yaml_syntax_error_gives_the_line(self) -> None:
        text = RULES + "  - id: r\n    kind: hierarchical\n    when: {tags: [a]\n    to: l2\n"
        found = problems(text)
        assert len(found) == 1
        assert found[0].startswith("matrix.yaml:12: not valid YAML: ")

    def test_a_tab_in_the_indentation_is_a_yaml_error_at_its_line(self) -> None:
        found = problems(SHORT.replace("    name: Senior support", "\tname: Senior support"))
        assert found[0].startswith("matrix.yaml:6: not valid YAML")

    def test_an_empty_file(self) -> None:
        assert problems("") == ["matrix.yaml:1: a matrix is a mapping with levels, teams and rules"]

    def test_levels_are_required(self) -> None:
        assert problems("name: x\nrules: []\n") == ["matrix.yaml:1 levels: is required"]

    def test_an_unknown_key(self) -> None:
        found = rule_problems(
            rule_yaml("{tags: [a]}") + "    acitons: {priority: high}\n",
        )
        assert found == [
            "matrix.yaml:43 rules[0].acitons: is not a known key here — did you mean actions?"
        ]

    def test_an_unknown_key_in_a_level(self) -> None:
        found = problems(SHORT.replace("name: Senior support", "name: S\n    min_prio: high"))
        assert found == [
            "matrix.yaml:7 levels[1].min_prio: is not a known key here — did you mean min_priority?"
        ]

    def test_a_wrong_priority_name_in_actions(self) -> None:
        assert rule_problems(rule_yaml("{tags: [a]}", actions="{priority: hihg}")) == [
            "matrix.yaml:43 rules[0].actions.priority: 'hihg' is not a priority "
            "(one of low, normal, high, urgent)"
        ]

    def test_a_wrong_priority_name_in_a_level(self) -> None:
        text = SHORT.replace("name: Senior support", "name: S\n    min_priority: top")
        assert problems(text) == [
            "matrix.yaml:7 levels[1].min_priority: 'top' is not a priority "
            "(one of low, normal, high, urgent)"
        ]

    def test_a_wrong_priority_name_in_a_condition(self) -> None:
        assert rule_problems(rule_yaml("{priority: {at_least: hihg}}")) == [
            "matrix.yaml:42 rules[0].when.priority.at_least: 'hihg' is not a priority "
            "(one of low, normal, high, urgent)"
        ]

    def test_a_wrong_duration_in_a_level(self) -> None:
        text = SHORT.replace("name: Senior support", "name: S\n    resolution: 8 hourss")
        assert problems(text) == [
            'matrix.yaml:7 levels[1].resolution: "8 hourss" is not a duration (e.g. 90m, 2h, 1d 4h)'
        ]

    def test_an_unknown_destination(self) -> None:
        assert rule_problems(rule_yaml("{tags: [a]}", to="l4")) == [
            'matrix.yaml:41 rules[0].to: "l4" is not a destination '
            "(one of next, l1, l2, l3, team billing, team security)"
        ]

    @pytest.mark.parametrize(
        ("to", "kind", "message"),
        [
            (
                "billing",
                "hierarchical",
                '"billing" is a team: hierarchical rules route to levels or next',
            ),
            ("l2", "functional", '"l2" is a level: functional rules route to teams'),
            ("next", "functional", "next climbs the ladder: only hierarchical rules can use it"),
            (
                "{team: l2}",
                "functional",
                '"l2" is not a destination (one of next, l1, l2, l3, team billing, team security)',
            ),
            ("{group: x}", "functional", "expected next, a level id, {level: ID} or {team: ID}"),
        ],
    )
    def test_a_destination_that_does_not_fit_the_rule(
        self, to: str, kind: str, message: str
    ) -> None:
        assert rule_problems(rule_yaml("{tags: [a]}", to=to, kind=kind)) == [
            f"matrix.yaml:41 rules[0].to: {message}"
        ]

    def test_an_unknown_rule_kind(self) -> None:
        found = rule_problems(rule_yaml("{tags: [a]}", kind="hierarchal"))
        assert found == [
            "matrix.yaml:40 rules[0].kind: Input should be 'hierarchical' or 'functional'"
        ]

    def test_an_unknown_condition(self) -> None:
        found = rule_problems(rule_yaml("{keyword: [manager]}"))
        assert len(found) == 1
        assert found[0].startswith(
            'matrix.yaml:42 rules[0].when.keyword: "keyword" is not a condition '
            "(one of all, any, not, field, tags, keywords, "
        )
        assert "idle" in found[0] and "level_overdue" in found[0]

    def test_a_bad_regular_expression(self) -> None:
        assert rule_problems(rule_yaml("{field: subject, regex: '(unclosed'}")) == [
            'matrix.yaml:42 rules[0].when.regex: "(unclosed" is not a valid regular expression: '
            "missing ), unterminated subpattern at position 0"
        ]

    def test_an_unknown_ticket_field(self) -> None:
        found = rule_problems(rule_yaml("{field: subjet, contains: refund}"))
        assert len(found) == 1
        assert found[0].startswith(
            'matrix.yaml:42 rules[0].when.field: "subjet" is not a ticket field (one of subject, '
        )
        assert found[0].endswith("or custom_fields.NAME)")

    def test_an_unknown_comparison(self) -> None:
        assert rule_problems(rule_yaml("{field: subject, like: refund}")) == [
            'matrix.yaml:42 rules[0].when.like: "like" is not a comparison (one of equals, '
            "not_equals, in, not_in, contains, regex, gt, gte, lt, lte, exists)"
        ]

    def test_an_unknown_channel(self) -> None:
        assert rule_problems(rule_yaml("{channel: [email, fax]}")) == [
            "matrix.yaml:42 rules[0].when.channel: 'fax' is not a channel "
            "(one of email, phone, chat, web, social, api, other)"
        ]

    def test_a_number_comparison_needs_a_number(self) -> None:
        assert rule_problems(rule_yaml("{field: custom_fields.amount, gt: lots}")) == [
            "matrix.yaml:42 rules[0].when.gt: gt compares numbers or priorities; got 'lots'"
        ]

    def test_one_condition_per_item(self) -> None:
        assert rule_problems(rule_yaml("{tags: [vip], keywords: [manager]}")) == [
            "matrix.yaml:42 rules[0].when: one condition per list item (found tags, keywords); "
            "combine with all/any"
        ]

    def test_an_empty_group(self) -> None:
        assert rule_problems(rule_yaml("{any: []}")) == [
            "matrix.yaml:42 rules[0].when.any: expected a non-empty list of conditions"
        ]

    def test_a_tag_condition_names_a_tag(self) -> None:
        expected = (
            "matrix.yaml:42 rules[0].when.tags: name at least one tag: [vip], "
            "or {any: [...], all: [...], none: [...]}"
        )
        assert rule_problems(rule_yaml("{tags: []}")) == [expected]
        assert rule_problems(rule_yaml("{tags: {any: [], none: []}}")) == [expected]

    def test_a_time_condition_needs_a_bound(self) -> None:
        assert rule_problems(rule_yaml("{idle: {time: calendar}}")) == [
            "matrix.yaml:42 rules[0].when.idle: needs over or under (e.g. over: 4h)"
        ]

    def test_a_misspelt_key_in_a_time_condition(self) -> None:
        assert rule_problems(rule_yaml("{idle: {ovr: 2h}}")) == [
            "matrix.yaml:42 rules[0].when.idle.ovr: is not a known key here "
            "(over, under, time, calendar)"
        ]

    def test_a_time_mode_is_business_or_calendar(self) -> None:
        assert rule_problems(rule_yaml("{idle: {over: 2h, time: weekdays}}")) == [
            "matrix.yaml:42 rules[0].when.idle.time: 'weekdays' is not business or calendar"
        ]

    def test_an_unknown_calendar(self) -> None:
        assert rule_problems(rule_yaml("{idle: {over: 2h, calendar: weekend}}")) == [
            'matrix.yaml:42 rules[0].when.idle.calendar: "weekend" is not a calendar '
            "(calendars: office)"
        ]

    def test_keywords_look_only_in_text_fields(self) -> None:
        assert rule_problems(rule_yaml("{keywords: {words: [x], in: [body]}}")) == [
            "matrix.yaml:42 rules[0].when.keywords.in: keywords look in subject, description, "
            "latest_comment"
        ]

    def test_a_team_names_a_level_that_exists(self) -> None:
        found = problems(LADDER.replace("    level: l2\n", "    level: l9\n"))
        assert found == [
            'matrix.yaml:30 teams.billing.level: "l9" is not a level (levels: l1, l2, l3)'
        ]

    def test_ids_are_unique(self) -> None:
        found = rule_problems(rule_yaml("{tags: [a]}"), rule_yaml("{tags: [b]}"))
        assert found == ['matrix.yaml:43 rules[1].id: "r" is used by another rule already']
        found = problems(SHORT.replace("id: l2", "id: l1"))
        assert found == ['matrix.yaml:5 levels[1].id: "l1" is used by another level already']

    def test_escbridges_own_marker_tags_are_reserved(self) -> None:
        assert rule_problems(rule_yaml("{tags: [a]}", actions="{tags: [ok, escbridge_l3]}")) == [
            "matrix.yaml:43 rules[0].actions.tags[1]: tags starting escbridge_ are escbridge's own"
        ]

    def test_a_tag_has_no_spaces(self) -> None:
        assert rule_problems(rule_yaml("{tags: [a]}", actions="{tags: [legal risk]}")) == [
            'matrix.yaml:43 rules[0].actions.tags[0]: "legal risk" is not a tag '
            "(no spaces, not empty)"
        ]

    def test_every_problem_in_the_rules_is_reported_at_once(self) -> None:
        found = rule_problems(
            rule_yaml("{idle: 2 hourss}", rule_id="a"),
            rule_yaml("{keyword: [manager]}", rule_id="b"),
            rule_yaml("{tags: [x]}", rule_id="c", to="l4"),
            rule_yaml("{field: subject, regex: '[a-'}", rule_id="d"),
        )
        assert [p.split(":", 2)[1].split(" ", 1) for p in found] == [
            ["42", "rules[0].when.idle.over"],
            ["46", "rules[1].when.keyword"],
            ["49", "rules[2].to"],
            ["54", "rules[3].when.regex"],
        ]

    def test_every_structural_problem_is_reported_at_once(self) -> None:
        found = rule_problems(
            rule_yaml("{tags: [a]}", rule_id="a", actions="{priority: hihg}"),
            rule_yaml("{tags: [b]}", rule_id="b") + "    acitons: {}\n",
            "  - id: c\n    kind: hierarchical\n    when: {tags: [c]}\n",
        )
        assert found == [
            "matrix.yaml:43 rules[0].actions.priority: 'hihg' is not a priority "
            "(one of low, normal, high, urgent)",
            "matrix.yaml:48 rules[1].acitons: is not a known key here — did you mean actions?",
            "matrix.yaml:49 rules[2].to: is required",
        ]


# --- note templates ---------------------------------------------------------------------------


def note_problems(template: str, key: str = "note") -> list[str]:
    quoted = template.replace('"', '\\"')
    return rule_problems(rule_yaml("{tags: [a]}", actions=f'{{{key}: "{quoted}"}}'))


class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "what"),
        [
            ("{{ ''.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe."),
            (
                "{{ ticket.created_at.__class__.__mro__ }}",
                "access to attribute '__class__' of 'datetime' object is unsafe.",
            ),
            (
                "{{ reasons.__class__.__base__.__subclasses__() }}",
                "access to attribute '__class__' of 'list' object is unsafe.",
            ),
            (
                "{{ rule.__init__.__globals__ }}",
                "access to attribute '__init__' of 'dict' object is unsafe.",
            ),
        ],
    )
    def test_the_sandbox_rejects_unsafe_access_at_load(self, template: str, what: str) -> None:
        assert note_problems(template) == [
            f"matrix.yaml:43 rules[0].actions.note: template does something unsafe: {what}"
        ]

    def test_an_unknown_variable_is_rejected_at_load(self) -> None:
        assert note_problems("Hello {{ tciket.id }}") == [
            "matrix.yaml:43 rules[0].actions.note: template uses unknown variable tciket "
            "(known: destination, from_level, now, reasons, rule, ticket)"
        ]

    def test_a_misspelt_attribute_is_rejected_at_load(self) -> None:
        assert note_problems("{{ ticket.requester.nmae }}") == [
            "matrix.yaml:43 rules[0].actions.note: template refers to something that does not "
            "exist: 'dict object' has no attribute 'nmae'"
        ]

    def test_the_customer_update_is_checked_too(self) -> None:
        assert note_problems("Dear {{ ticket.requestor.name }}", key="customer_update") == [
            "matrix.yaml:43 rules[0].actions.customer_update: template refers to something that "
            "does not exist: 'dict object' has no attribute 'requestor'"
        ]

    def test_a_template_syntax_error(self) -> None:
        found = note_problems("{{ ticket.id }")
        assert len(found) == 1
        assert found[0].startswith(
            "matrix.yaml:43 rules[0].actions.note: template syntax error on its line 1: "
        )

    def test_a_block_note_error_points_at_the_note_key(self) -> None:
        found = rule_problems(
            rule_yaml(
                "{tags: [a]}",
                actions="""
                priority: high
                note: |
                  Escalated by {{ rule.name }}
                  for {{ ticket.requester.emial }}
                """,
            )
        )
        assert found == [
            "matrix.yaml:45 rules[0].actions.note: template refers to something that does not "
            "exist: 'dict object' has no attribute 'emial'"
        ]

    def test_custom_fields_may_be_named_freely(self) -> None:
        m = matrix(rule_yaml("{tags: [a]}", actions='{note: "{{ ticket.custom_fields.plan }}"}'))
        assert m.rules[0].actions.note_source == "{{ ticket.custom_fields.plan }}"

    def test_every_documented_variable_is_usable(self) -> None:
        actions = """
        note: >-
          {{ ticket.subject }} {{ ticket.organization.name }} {{ ticket.tags | join(',') }}
          {{ rule.name }} {{ destination.group }} {{ from_level.name }}
          {{ reasons | length }} {{ now.strftime('%Y') }}
        """
        m = matrix(rule_yaml("{tags: [a]}", actions=actions))
        assert m.rules[0].actions.note is not None


def test_a_calendar_that_fails_is_one_problem_not_two() -> None:
    """A typo in a calendar used to bring a second, false error: "defaults.calendar: office is
    not a calendar (calendars: none defined)"."""
    text = (
        'version: 1\ncalendars:\n  office: {timezone: Berlin, hours: {mon-fri: "09:00-17:00"}}\n'
        "defaults: {calendar: office}\n"
        "levels:\n  - {id: l1, name: One, groups: {zendesk: A}}\n"
        "  - {id: l2, name: Two, groups: {zendesk: B}}\n"
        "rules:\n  - {id: r, name: R, kind: hierarchical, when: {idle: {over: 2h}}, to: next}\n"
    )
    with pytest.raises(InvalidInputError) as caught:
        parse_matrix(text)
    (problem,) = caught.value.problems
    assert problem.path == "calendars.office.timezone" and problem.line == 3
    assert 'time zone "Berlin" is not known' in problem.message


def test_a_misspelt_matrix_key_gets_the_nearest_known_one() -> None:
    text = (
        "version: 1\nlevels:\n  - {id: l1, name: One, groups: {zendesk: A}, resoluton: 2h}\n"
        "  - {id: l2, name: Two, groups: {zendesk: B}}\n"
        "rules:\n  - {id: r, name: R, kind: hierarchical, when: {idle: {over: 2h}}, to: next}\n"
    )
    with pytest.raises(InvalidInputError) as caught:
        parse_matrix(text)
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (3, "levels[0].resoluton")
    assert problem.message == "is not a known key here — did you mean resolution?"
