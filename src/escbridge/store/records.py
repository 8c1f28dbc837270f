"""What the store hands back: plain frozen records, never SQLAlchemy rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from escbridge.model import Actions, Decision, EscalationRecord


@dataclass(frozen=True)
class Enqueued:
    """The answer to "keep this event": accepted as a new job, a duplicate of ``job_id``, or
    refused for a value the database cannot hold (``refused`` says which field and why; only
    :meth:`Store.enqueue_many` answers so, :meth:`Store.enqueue` raises StoreDataError)."""

    accepted: bool
    job_id: int | None
    refused: str | None = None

    @property
    def duplicate(self) -> bool:
        return not self.accepted and self.refused is None


@dataclass(frozen=True)
class Job:
    """One inbox row. ``claim_token`` identifies the claim a worker holds (None when unclaimed)."""

    id: int
    instance: str
    ticket_id: str
    dedupe_key: str
    kind: str
    actor: str | None
    occurred_at: datetime | None
    received_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    claim_token: str | None
    last_error: str | None
    outcome: str | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Intent:
    """A decision about to be applied, written before the connector is called.

    After a crash, the ticket's level marker says whether the apply landed; the intent says
    what was decided (rule, reasons, actions), so the escalation is recorded in full.
    """

    decision: Decision
    ticket_created_at: datetime | None = None
    job_id: int | None = None
    from_group: str | None = None  # the ticket's group and channel when it was decided
    channel: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.model_dump(mode="json", exclude={"outcomes"}),
            "ticket_created_at": (
                self.ticket_created_at.isoformat() if self.ticket_created_at else None
            ),
            "job_id": self.job_id,
            "from_group": self.from_group,
            "channel": self.channel,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intent:
        created = data.get("ticket_created_at")
        return cls(
            decision=Decision.model_validate(data["decision"]),
            ticket_created_at=datetime.fromisoformat(created) if created else None,
            job_id=data.get("job_id"),
            from_group=data.get("from_group"),
            channel=data.get("channel"),
        )


@dataclass(frozen=True)
class TicketState:
    """What escbridge knows about one ticket between events."""

    instance: str
    ticket_id: str
    level: str | None
    last_escalated_at: datetime | None
    cooldown_until: datetime | None
    day: date | None
    day_count: int
    escalation_count: int
    intent: Intent | None
    intent_at: datetime | None
    lock_owner: str | None
    lock_expires_at: datetime | None
    resolved_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> TicketState:
        intent = row["intent"]
        return cls(
            instance=row["instance"],
            ticket_id=row["ticket_id"],
            level=row["level"],
            last_escalated_at=row["last_escalated_at"],
            cooldown_until=row["cooldown_until"],
            day=row["day"],
            day_count=row["day_count"],
            escalation_count=row["escalation_count"],
            intent=Intent.from_json(intent) if intent else None,
            intent_at=row["intent_at"],
            lock_owner=row["lock_owner"],
            lock_expires_at=row["lock_expires_at"],
            resolved_at=row.get("resolved_at"),
        )


@dataclass(frozen=True)
class TicketLock:
    """Proof of holding one ticket: only the holder may write its intent or record for it."""

    instance: str
    ticket_id: str
    token: str
    owner: str
    expires_at: datetime
    state: TicketState
    history: tuple[EscalationRecord, ...] = ()  # past escalations, oldest first


@dataclass(frozen=True)
class ToRecord:
    """One escalation to record while its lock is held: the intent that was applied (or found
    on the ticket), the history's ``outcome``, and the job to mark done with it."""

    lock: TicketLock
    intent: Intent
    outcome: str
    job: Job | None = None
    job_outcome: str | None = None


@dataclass(frozen=True)
class StoredEscalation:
    """One row of the escalation history."""

    id: int
    instance: str
    ticket_id: str
    from_level: str | None
    to_level: str
    destination_kind: str
    to_group: str | None
    rule_id: str | None
    kind: str | None
    actions: Actions
    reasons: tuple[str, ...]
    summary: str
    ticket_created_at: datetime | None
    decided_at: datetime
    recorded_at: datetime
    outcome: str
    job_id: int | None
    channel: str | None = None
    helpdesk: str | None = None
    from_group: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StoredEscalation:
        values: dict[str, Any] = {name: row.get(name) for name in cls.__dataclass_fields__}
        values["actions"] = Actions.model_validate(row["actions"])
        values["reasons"] = tuple(row["reasons"])
        return cls(**values)

    def as_history(self) -> EscalationRecord:
        """The form the engine reasons about (cooldown, daily cap, time at level)."""
        return EscalationRecord(
            at=self.decided_at, to=self.to_level, from_level=self.from_level, rule_id=self.rule_id
        )


@dataclass(frozen=True)
class SyncCursor:
    """Where a scheduled scan of one instance resumes."""

    instance: str
    stream: str
    cursor: str | None
    since: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class NewNotification:
    """One outbox row to write with its escalation: the target told, the message's context
    (JSON-able), and when it may go out first (the end of a digest window or quiet hours)."""

    instance: str
    ticket_id: str
    escalation_id: int
    target: str
    context: Mapping[str, Any]
    not_before: datetime


@dataclass(frozen=True)
class Notification:
    """One outbox row. ``claimed_by`` identifies the claim a notifier holds on a ``sending``
    row; ``digest_of`` the row whose message carried this one (the first of a digest)."""

    id: int
    instance: str
    ticket_id: str
    escalation_id: int
    target: str
    context: Mapping[str, Any]
    state: str
    attempts: int
    not_before: datetime
    claimed_by: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    digest_of: int | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Notification:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class NotificationClaim:
    """The rows of one message, held by one notifier until ``lease_until``. ``stale``: they
    were found ``sending`` by a notifier that stopped mid-send (the outcome is unknown)."""

    target: str
    token: str
    rows: tuple[Notification, ...]
    stale: bool
    lease_until: datetime

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(row.id for row in self.rows)

    @property
    def delivery_id(self) -> int:
        """The message's id: the first row's (a digest's rows all carry it in ``digest_of``)."""
        return min(self.ids)
