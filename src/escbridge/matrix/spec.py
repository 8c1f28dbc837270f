"""The schema of a matrix file, as pydantic models: structure and types only.

Cross-checks (ids that must exist, ranks, templates, conditions) are the loader's work; a
structurally valid ``MatrixSpec`` may still be refused there.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator

from escbridge.calendar import WrittenDuration, read_duration
from escbridge.model import Priority
from escbridge.notify.spec import NotifySpec, one_or_many

#: Kept as written: a day's length is known only once the calendar that measures it is (loader).
Duration = Annotated[WrittenDuration, PlainValidator(read_duration)]
PriorityName = Annotated[Priority, BeforeValidator(Priority.parse)]
TimeMode = Literal["business", "calendar"]
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaysSpec(_Spec):
    country: str | None = None
    subdivision: str | None = None
    dates: list[date] = Field(default_factory=list)


def _office_hours() -> dict[str, str | list[str]]:
    return {"mon-fri": "09:00-17:00"}


class CalendarSpec(_Spec):
    timezone: str = "UTC"
    hours: dict[str, str | list[str]] = Field(default_factory=lambda: _office_hours())
    holidays: HolidaysSpec = Field(default_factory=HolidaysSpec)


class DefaultsSpec(_Spec):
    time: TimeMode = "business"
    calendar: str | None = None


class LimitsSpec(_Spec):
    cooldown: Duration = read_duration("30m")
    daily_cap: int = Field(default=3, ge=1)


#: The level marker tag is ``escbridge_<id>``; Zoho Desk takes tags of at most 50 characters
#: (zohodesk-oas v1.0/TicketTag.json), the tightest of the three helpdesks.
LEVEL_ID_MAX = 40


class LevelSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN, max_length=LEVEL_ID_MAX)
    name: str
    groups: dict[str, str]
    min_priority: PriorityName | None = None
    response: Duration | None = None
    resolution: Duration | None = None
    time: TimeMode | None = None
    calendar: str | None = None
    description: str = ""
    notify: Annotated[list[str], BeforeValidator(one_or_many)] = Field(default_factory=list)


class TeamSpec(_Spec):
    name: str
    groups: dict[str, str]
    level: str | None = None
    min_priority: PriorityName | None = None
    resolution: Duration | None = None
    time: TimeMode | None = None
    calendar: str | None = None
    description: str = ""
    notify: Annotated[list[str], BeforeValidator(one_or_many)] = Field(default_factory=list)


class ActionsSpec(_Spec):
    priority: PriorityName | None = None
    note: str | None = None
    tags: list[str] = Field(default_factory=list)
    customer_update: str | None = None
    unassign: bool = False


class RuleSpec(_Spec):
    id: str = Field(pattern=ID_PATTERN)
    name: str | None = None
    kind: Literal["hierarchical", "functional"]
    description: str = ""
    enabled: bool = True
    when: Any
    to: str | dict[str, str]
    actions: ActionsSpec = Field(default_factory=ActionsSpec)
    repeat: bool | None = None


def _none_as_empty(kind: type) -> BeforeValidator:
    """`rules:` with every rule commented out is YAML null: read it as an empty collection."""
    return BeforeValidator(lambda value: kind() if value is None else value)


class MatrixSpec(_Spec):
    version: Literal[1] = 1
    name: str = "escalation matrix"
    defaults: DefaultsSpec = Field(default_factory=DefaultsSpec)
    calendars: Annotated[dict[str, CalendarSpec], _none_as_empty(dict)] = Field(
        default_factory=dict
    )
    levels: list[LevelSpec] = Field(min_length=1)
    teams: Annotated[dict[str, TeamSpec], _none_as_empty(dict)] = Field(default_factory=dict)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    rules: Annotated[list[RuleSpec], _none_as_empty(list)] = Field(default_factory=list)
    notify: Annotated[NotifySpec, _none_as_empty(NotifySpec)] = Field(default_factory=NotifySpec)
