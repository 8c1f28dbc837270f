"""The shared vocabulary: every connector speaks it, the engine reasons in it, the store records it.

Pure data, no I/O. Helpdesk-specific values (Zendesk's ``hold``, Freshdesk's status 3, Zoho's
"Medium") are translated by connectors into these types, so rules are written once for all.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)


class LevelMarker:
    """The one convention for how a ticket carries its escalation level: the tag ``escbridge_<id>``.

    Written on every escalation (the previous marker removed), read back after a crash to see
    that an escalation already landed. Tags are compared lower-cased, as every helpdesk stores
    them. When several markers remain (a helpdesk that appended instead of replacing), the one
    with the highest rank wins if ranks are known, else the lexicographically last, so the answer
    never depends on the order a helpdesk lists tags in.
    """

    PREFIX: ClassVar[str] = "escbridge_"

    @classmethod
    def tag(cls, level: str) -> str:
        """The marker tag for ``level``."""
        return f"{cls.PREFIX}{level}".lower()

    @classmethod
    def is_marker(cls, tag: str) -> bool:
        text = tag.strip().lower()
        return text.startswith(cls.PREFIX) and len(text) > len(cls.PREFIX)

    @classmethod
    def level_of(cls, value: object) -> str | None:
        """The level in one marker value: ``escbridge_l2`` or a bare ``l2`` (a custom field)."""
        if value is None or isinstance(value, bool):
            return None
        text = str(value).strip().lower()
        if not text or text in ("null", "none", "-none-"):
            return None
        return text.removeprefix(cls.PREFIX) or None

    @classmethod
    def from_tags(cls, tags: Iterable[str], ranks: Mapping[str, int] | None = None) -> str | None:
        """The level a ticket's tags mark, or None; see the class docstring for the tie-break."""
        levels = sorted(
            str(t).strip().lower()[len(cls.PREFIX) :] for t in tags if cls.is_marker(str(t))
        )
        if not levels:
            return None
        if ranks:
            return max(levels, key=lambda lv: (ranks.get(lv, -1), lv))
        return levels[-1]


class Priority(enum.IntEnum):
    """Ordered so that comparisons (raise, never lower) are plain integer comparisons."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept a name (any case), a Priority or its number; ValueError names the choices."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        choices = ", ".join(p.name.lower() for p in cls)
        raise ValueError(f"{value!r} is not a priority (one of {choices})")

    @property
    def label(self) -> str:
        return self.name.lower()


PriorityField = Annotated[
    Priority,
    BeforeValidator(Priority.parse),
    PlainSerializer(lambda p: p.label, return_type=str, when_used="json"),
]
"""A priority that reads names or numbers and is written as its name in JSON."""


class Status(enum.StrEnum):
    """Status categories common to the three helpdesks (custom statuses map onto these)."""

    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    ON_HOLD = "on_hold"
    SOLVED = "solved"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        """Open for escalation purposes: someone still owes the customer an answer or a fix."""
        return self not in (Status.SOLVED, Status.CLOSED)


class Channel(enum.StrEnum):
    """Where the ticket came from; ``other`` keeps unknown platform sources instead of failing."""

    EMAIL = "email"
    PHONE = "phone"
    CHAT = "chat"
    WEB = "web"
    SOCIAL = "social"
    API = "api"
    OTHER = "other"


class Person(BaseModel):
    """A requester or an organisation, as far as rules need them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = None
    name: str | None = None
    email: str | None = None


class Ticket(BaseModel):
    """One helpdesk ticket, normalised. ``level`` is escbridge's own marker (a tag)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    instance: str = "default"
    subject: str = ""
    description: str = ""
    latest_comment: str = ""
    requester: Person = Field(default_factory=Person)
    organization: Person | None = None
    tags: frozenset[str] = frozenset()
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    channel: Channel = Channel.OTHER
    status: Status = Status.OPEN
    priority: PriorityField = Priority.NORMAL
    group: str | None = None
    assignee: str | None = None
    created_at: datetime
    updated_at: datetime
    first_response_at: datetime | None = None
    last_customer_reply_at: datetime | None = None
    due_at: datetime | None = None
    reopen_count: int = 0
    level: str | None = None
    version: str | None = None  # the platform's concurrency stamp (Zendesk updated_at, …)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # Zendesk and Freshdesk use numbers, Zoho uses long strings: one type for all.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: object) -> object:
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(str(t).lower() for t in value)
        return value

    @field_validator(
        "created_at", "updated_at", "first_response_at", "last_customer_reply_at", "due_at"
    )
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2026-03-11T09:30:00Z)")
        # UTC always: Python subtracts two datetimes that share a ZoneInfo by wall clock,
        # which is wrong across a DST change.
        return value.astimezone(UTC)


DestinationKind = Literal["level", "team"]


class Destination(BaseModel):
    """Where a ticket goes: a rung of the ladder or a functional team."""

    model_config = ConfigDict(frozen=True)

    kind: DestinationKind
    id: str
    name: str
    rank: int
    group: str | None = None  # the responsible group on the ticket's helpdesk, when known


class Actions(BaseModel):
    """What a connector writes for one escalation. Tags are added/removed, never set wholesale,
    so tags a human added meanwhile survive."""

    model_config = ConfigDict(frozen=True)

    group: str | None = None
    priority: PriorityField | None = None
    note: str | None = None
    tags_add: tuple[str, ...] = ()
    tags_remove: tuple[str, ...] = ()
    customer_update: str | None = None
    unassign: bool = False
    level: str | None = None  # the marker the ticket carries afterwards


class EscalationRecord(BaseModel):
    """One past escalation of a ticket: the history the engine needs for cooldown and caps."""

    model_config = ConfigDict(frozen=True)

    at: datetime

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a timezone")
        return value.astimezone(UTC)

    to: str
    from_level: str | None = None
    rule_id: str | None = None


class RuleOutcome(BaseModel):
    """Why one rule did or did not lead to an escalation."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    matched: bool
    details: tuple[str, ...] = ()
    blocked: str | None = None  # matched, but the engine would not act on it (and why)


class Decision(BaseModel):
    """What the engine concluded for one ticket at one moment."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    instance: str
    at: datetime
    escalate: bool
    from_level: str | None = None
    destination: Destination | None = None
    rule_id: str | None = None
    kind: Literal["hierarchical", "functional"] | None = None
    actions: Actions | None = None
    reasons: tuple[str, ...] = ()
    outcomes: tuple[RuleOutcome, ...] = ()
    summary: str = ""


class TicketEvent(BaseModel):
    """One thing a webhook says happened to a ticket. Only a hint: the ticket is re-fetched."""

    model_config = ConfigDict(frozen=True)

    instance: str
    ticket_id: str
    dedupe_key: str  # unique per delivery: the platform's event id, else a hash of the request
    kind: str = "ticket.updated"
    actor: str | None = None  # who made the change, for loop prevention
    occurred_at: datetime | None = None
