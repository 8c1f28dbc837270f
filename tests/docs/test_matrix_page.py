"""docs/matrix.md documents every condition, action and key the matrix accepts.

The names come from the code (the condition parser's own list of what it knows, the pydantic
spec's fields, the enums), so a condition or action added there fails here until the page
describes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from escbridge.calendar import BusinessCalendar
from escbridge.conditions import FIELD_NAMES, FIELD_OPS_ALL, PRIORITY_OPS, TIME_MEASURES
from escbridge.conditions.parse import ConditionParser
from escbridge.matrix.spec import (
    ActionsSpec,
    CalendarSpec,
    HolidaysSpec,
    LevelSpec,
    LimitsSpec,
    RuleSpec,
    TeamSpec,
)
from escbridge.matrix.templates import TEMPLATE_VARIABLES
from escbridge.model import Channel, Status

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "matrix.md"
TEXT = PAGE.read_text(encoding="utf-8")
#: keys a page of their own documents, not this one (the matrix page links to it)
ELSEWHERE = {"notify": DOCS / "notifications.md"}
#: every inline code span of the page's prose (fenced blocks left out), e.g. `level_overdue`
CODE = set(re.findall(r"`([^`]+)`", re.sub(r"(?ms)^```.*?^```", "", TEXT)))


def documented(name: str) -> bool:
    """A code span is the name, or starts with it as a key: `all: [...]`, `{at_least: high}`."""
    return any(re.match(rf"\{{?{re.escape(name)}(?![\w.])", span) for span in CODE)


def condition_names() -> list[str]:
    """What the condition parser accepts, as it lists it when it meets an unknown key."""
    said: list[str] = []

    def fail(path: Sequence[str | int], message: str) -> None:
        said.append(message)

    parser = ConditionParser(
        fail,
        lambda name, at: BusinessCalendar.always_open(),
        BusinessCalendar.always_open(),
        business=True,
    )
    assert parser.parse({"no_such_condition": 1}, ("when",)) is None
    listed = re.search(r"\(one of ([^)]*)\)", said[0])
    assert listed is not None, said
    return [name.strip() for name in listed[1].split(",")]


CONDITIONS = condition_names()
ACTIONS = list(ActionsSpec.model_fields)


def test_the_names_come_from_the_code() -> None:
    """Not vacuously green: the parser's list has the groups and every time measure."""
    assert {"all", "any", "not", "keywords", "tags", "field"} <= set(CONDITIONS)
    assert set(TIME_MEASURES) <= set(CONDITIONS)
    assert {"priority", "note", "tags", "customer_update", "unassign"} <= set(ACTIONS)


@pytest.mark.parametrize("name", CONDITIONS)
def test_every_condition_is_documented(name: str) -> None:
    """Each condition appears as code in the page: its table row or its combinator."""
    assert documented(name), f"docs/matrix.md does not document the condition `{name}`"


@pytest.mark.parametrize("name", ACTIONS)
def test_every_action_is_in_the_actions_table(name: str) -> None:
    section = TEXT.split("\n## Actions", 1)[1].split("\n## ", 1)[0]
    assert f"| `{name}` |" in section, f"docs/matrix.md's Actions table lacks `{name}`"


@pytest.mark.parametrize(
    "name",
    [
        *FIELD_NAMES,
        "custom_fields.NAME",
        *FIELD_OPS_ALL,
        *PRIORITY_OPS,
        *(c.value for c in Channel),
        *(s.value for s in Status),
        *TEMPLATE_VARIABLES,
    ],
)
def test_every_field_comparison_and_value_is_named(name: str) -> None:
    assert documented(name), f"docs/matrix.md does not name `{name}`"


@pytest.mark.parametrize(
    "name",
    sorted(
        {
            *RuleSpec.model_fields,
            *LevelSpec.model_fields,
            *TeamSpec.model_fields,
            *LimitsSpec.model_fields,
            *CalendarSpec.model_fields,
            *HolidaysSpec.model_fields,
        }
    ),
)
def test_every_key_of_rules_levels_teams_and_calendars_is_named(name: str) -> None:
    page = ELSEWHERE.get(name)
    if page is None:
        assert documented(name), f"docs/matrix.md does not name the key `{name}`"
        return
    if not page.is_file():
        pytest.skip(f"`{name}` is documented on docs/{page.name}, which is not written yet")
    assert f"`{name}" in page.read_text(encoding="utf-8"), f"docs/{page.name} lacks `{name}`"
    assert f"({page.name}" in TEXT, f"docs/matrix.md does not link to docs/{page.name}"
