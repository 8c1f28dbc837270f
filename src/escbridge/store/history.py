"""What escbridge knows of one ticket, and of the whole store at a glance: read-only queries for
`escbridge history`, `escbridge status` and `escbridge jobs --ticket`, plus the record of each
instance's last sync (and check) run, which nothing else keeps.

Why here: every SQL statement lives in the store package; the commands only print what these
functions return. Reads run on a connection of their own (:func:`escbridge.store.reads.reading`),
outside the queue the store's writers take turns in, so asking never slows a worker down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from escbridge.store.database import unavailable_as_typed
from escbridge.store.migrate import current_revision, head_revision, sqlite_file
from escbridge.store.reads import reading
from escbridge.store.records import Job, Notification, StoredEscalation, TicketState
from escbridge.store.schema import (
    DONE,
    FAILED,
    NOTIFY_FAILED,
    NOTIFY_PENDING,
    NOTIFY_SENDING,
    NOTIFY_SENT,
    PENDING,
    PROCESSING,
    escalations,
    inbox,
    instance_runs,
    notifications,
    ticket_shadow,
    ticket_state,
)
from escbridge.store.shadow import DUE_KIND, Shadow
from escbridge.store.store import Store

__all__ = [
    "CHECK",
    "SYNC",
    "DueHead",
    "Lease",
    "Moment",
    "Overview",
    "QueueCounts",
    "Run",
    "TicketHistory",
    "escalated_without_job",
    "last_runs",
    "overview",
    "record_run",
    "store_exists",
    "ticket_history",
]

#: The kinds of run kept per instance.
SYNC, CHECK = "sync", "check"


def store_exists(url: str) -> bool:
    """False for a SQLite file that is not there yet (reading it would create it empty);
    True for any other store, which only a connection can tell about."""
    file = sqlite_file(url)
    return file is None or file.exists()


# --- the last run of each instance ----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One instance's last run of a kind (``sync``, ``check``): whether it got through, its
    one-line summary and its result, and when a run of that kind last got through."""

    instance: str
    kind: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    summary: str
    result: Mapping[str, Any] | None = None
    last_ok_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "ok": self.ok,
            "summary": self.summary,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "result": dict(self.result) if self.result is not None else None,
        }


def record_run(store: Store, run: Run) -> None:
    """Keep ``run`` as its instance's last of its kind; ``last_ok_at`` moves only when it got
    through, so a failing sync still shows when the last good one ended."""
    insert = (postgresql.insert if store.dialect == "postgresql" else sqlite.insert)(instance_runs)
    values = {
        "instance": run.instance,
        "kind": run.kind,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "ok": run.ok,
        "summary": run.summary,
        "result": dict(run.result) if run.result is not None else None,
        "last_ok_at": run.finished_at if run.ok else None,
    }
    changed = ("started_at", "finished_at", "ok", "summary", "result")
    statement = insert.values(**values).on_conflict_do_update(
        index_elements=["instance", "kind"],
        set_={
            **{name: insert.excluded[name] for name in changed},
            "last_ok_at": sa.func.coalesce(insert.excluded.last_ok_at, instance_runs.c.last_ok_at),
        },
    )
    store.check_schema()
    with store.writing(), unavailable_as_typed(store.url), store.engine.begin() as connection:
        connection.execute(statement)


def last_runs(store: Store) -> dict[tuple[str, str], Run]:
    """Every instance's last run of each kind, by (instance, kind)."""
    with reading(store) as connection:
        rows = connection.execute(sa.select(instance_runs)).mappings().all()
    return {(row["instance"], row["kind"]): Run(**dict(row)) for row in rows}


# --- one ticket -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """One thing that happened to a ticket, as `escbridge history` lists it."""

    at: datetime
    kind: str  # event | job | escalation | note | state | due
    text: str
    details: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "text": self.text,
            "details": list(self.details),
            **dict(self.data),
        }


@dataclass(frozen=True)
class TicketHistory:
    """Everything the store holds about one ticket: its inbox events (each also a job), its
    escalations, its state (level, cooldown, a write in flight) and its shadow (next due)."""

    instance: str
    ticket_id: str
    jobs: tuple[Job, ...]
    escalations: tuple[StoredEscalation, ...]
    state: TicketState | None
    shadow: Shadow | None
    notifications: tuple[Notification, ...] = ()  # the outbox rows of its escalations

    @property
    def known(self) -> bool:
        """Whether escbridge has seen this ticket at all."""
        return bool(
            self.jobs or self.escalations or self.state or self.shadow or self.notifications
        )

    def timeline(self, options: str = "") -> list[Moment]:
        """What happened, oldest first (ties: in the order it happened within one step);
        ``options`` (`` --config X``, as the user gave them) end the commands hints suggest."""
        moments: list[Moment] = []
        for job in self.jobs:
            moments.extend(_job_moments(job, options))
        for escalation in self.escalations:
            moments.extend(_escalation_moments(escalation))
        moments.extend(_notification_moment(n, options) for n in self.notifications)
        state = self.state
        if state is not None and state.intent is not None and state.intent_at is not None:
            to = state.intent.decision.destination
            moments.append(
                Moment(
                    state.intent_at,
                    "state",
                    f"write in flight: escalation to {to.id if to else '?'} noted before "
                    "applying, not recorded yet (the next attempt checks what landed)",
                )
            )
        if state is not None and state.resolved_at is not None:
            moments.append(Moment(state.resolved_at, "state", "seen solved or closed"))
        if self.shadow is not None:
            moments.append(
                Moment(
                    self.shadow.seen_at,
                    "state",
                    "last seen open"
                    + (f" at level {self.shadow.ticket.level}" if self.shadow.ticket.level else ""),
                )
            )
        order = {
            "event": 0,
            "escalation": 1,
            "note": 2,
            "notification": 3,
            "job": 4,
            "state": 5,
            "due": 6,
        }
        moments.sort(key=lambda m: (m.at, order.get(m.kind, 9)))
        if self.shadow is not None and self.shadow.due_at is not None:
            moments.append(
                Moment(
                    self.shadow.due_at,
                    "due",
                    "next due: the decision may change by time alone then; a worker "
                    "re-reads the ticket at that instant",
                )
            )
        return moments


def _job_moments(job: Job, options: str = "") -> list[Moment]:
    """An inbox row: the event as it arrived, and where its job stands or how it ended."""
    source, text = {
        DUE_KIND: ("due", f"deadline reached: queued for a worker as job #{job.id}"),
        "sync.failed": ("sync", f"sync could not finish it: handed to a worker as job #{job.id}"),
    }.get(job.kind, ("webhook", f"webhook event {job.kind} received as job #{job.id}"))
    extra = [f"dedupe key {job.dedupe_key}"]
    if job.actor:
        extra.append(f"by {job.actor}")
    if job.occurred_at and job.kind != DUE_KIND:  # a due event occurs at its deadline
        occurred = job.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        extra.append(f"occurred {occurred}")  # as the helpdesk dated it, written like `at`
    data = {"job": job.id, "event": job.kind, "source": source, "dedupe_key": job.dedupe_key}
    moments = [Moment(job.received_at, "event", text, tuple(extra), data)]
    tries = f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"
    status = {"job": job.id, "status": job.status, "attempts": job.attempts}
    if job.status == DONE and job.finished_at is not None:
        moments.append(
            Moment(
                job.finished_at,
                "job",
                f"job #{job.id} done: {job.outcome or 'no outcome'} ({tries})",
                data={**status, "outcome": job.outcome},
            )
        )
    elif job.status == FAILED:
        moments.append(
            Moment(
                job.finished_at or job.next_attempt_at,
                "job",
                f"job #{job.id} dead-lettered after {tries}: replay with "
                f"`escbridge jobs retry {job.id}{options}`",
                (job.last_error or "",),
                {**status, "error": job.last_error},
            )
        )
    elif job.status == PENDING and job.attempts:
        moments.append(
            Moment(
                job.next_attempt_at,
                "job",
                f"job #{job.id} retries (after {tries})",
                (f"last error: {job.last_error}",) if job.last_error else (),
                {**status, "error": job.last_error},
            )
        )
    elif job.status == PROCESSING:
        moments.append(
            Moment(
                job.next_attempt_at,
                "job",
                f"job #{job.id} held by {job.lease_owner} until then (attempt {job.attempts})",
                data={**status, "worker": job.lease_owner},
            )
        )
    return moments


def _notification_moment(n: Notification, options: str = "") -> Moment:
    """An outbox row: who was (or is to be) told of an escalation, and how that went."""
    tries = f"{n.attempts} attempt{'s' if n.attempts != 1 else ''}"
    head = f"notification #{n.id} to {n.target}"
    data = {
        "notification": n.id,
        "escalation": n.escalation_id,
        "target": n.target,
        "state": n.state,
        "attempts": n.attempts,
        "digest_of": n.digest_of,
        "error": n.last_error,
    }
    error = (n.last_error,) if n.last_error else ()
    if n.state == NOTIFY_SENT:
        digest = f" in digest #{n.digest_of}" if n.digest_of not in (None, n.id) else ""
        return Moment(n.sent_at or n.created_at, "notification", f"{head} sent{digest}", (), data)
    if n.state == NOTIFY_PENDING:
        text = f"{head} due" + (f" again (after {tries})" if n.attempts else "")
        return Moment(n.not_before, "notification", text, error, data)
    if n.state == NOTIFY_SENDING:
        text = f"{head} being sent by {n.claimed_by} (attempt {n.attempts})"
        return Moment(n.lease_until or n.created_at, "notification", text, (), data)
    replay = f"`escbridge jobs --replay-notification {n.id}{options}`"
    if n.state == NOTIFY_FAILED:
        text = f"{head} failed after {tries}: replay with {replay}"
    else:
        text = (
            f"{head}: outcome unknown (it may have gone out): check the channel or mailbox; "
            f"{replay} sends it again"
        )
    return Moment(n.created_at, "notification", text, error, data)


def _escalation_moments(e: StoredEscalation) -> list[Moment]:
    """An escalation with its rule, reasons and changes; the note it wrote, as its own line."""
    by = f"job #{e.job_id}" if e.job_id is not None else "sync"
    changes = []
    if e.actions.group:
        frm = f"{e.from_group} → " if e.from_group else ""
        changes.append(f"group {frm}{e.actions.group}")
    if e.actions.priority is not None:
        changes.append(f"priority → {e.actions.priority.label}")
    tags = [*(f"+{t}" for t in e.actions.tags_add), *(f"-{t}" for t in e.actions.tags_remove)]
    if tags:
        changes.append("tags " + " ".join(tags))
    if e.actions.unassign:
        changes.append("unassigned")
    recovered = (
        " (found on the helpdesk after a lost answer; recorded)" if e.outcome != "applied" else ""
    )
    details = [f"reason: {reason}" for reason in e.reasons]
    if changes:
        details.append("; ".join(changes))
    data: dict[str, Any] = {
        "escalation": e.id,
        "from": e.from_level,
        "to": e.to_level,
        "destination_kind": e.destination_kind,
        "rule": e.rule_id,
        "reasons": list(e.reasons),
        "group": e.to_group,
        "by": by,
        "outcome": e.outcome,
        "actions": e.actions.model_dump(mode="json"),
    }
    moments = [
        Moment(
            e.decided_at,
            "escalation",
            f"escalated {e.from_level or '?'} → {e.to_level} by rule {e.rule_id or '?'} "
            f"(by {by}){recovered}",
            tuple(details),
            data,
        )
    ]
    written = [("internal note", e.actions.note), ("customer update", e.actions.customer_update)]
    for what, text in written:
        if text:
            first = text.strip().splitlines()[0] if text.strip() else ""
            moments.append(
                Moment(
                    e.recorded_at,
                    "note",
                    f"{what} written",
                    (first,),
                    {"escalation": e.id, "note": what, "text": text},
                )
            )
    return moments


def ticket_history(store: Store, instance: str, ticket_id: str) -> TicketHistory:
    """One ticket's inbox rows, escalations, state and shadow, in one read."""
    with reading(store) as connection:
        jobs = connection.execute(
            sa.select(inbox)
            .where(inbox.c.instance == instance, inbox.c.ticket_id == ticket_id)
            .order_by(inbox.c.id)
        ).mappings()
        found_jobs = tuple(Job.from_row(row) for row in jobs)
        rows = connection.execute(
            sa.select(escalations)
            .where(escalations.c.instance == instance, escalations.c.ticket_id == ticket_id)
            .order_by(escalations.c.decided_at, escalations.c.id)
        ).mappings()
        found = tuple(StoredEscalation.from_row(row) for row in rows)
        state = (
            connection.execute(
                sa.select(ticket_state).where(
                    ticket_state.c.instance == instance, ticket_state.c.ticket_id == ticket_id
                )
            )
            .mappings()
            .first()
        )
        told = connection.execute(
            sa.select(notifications)
            .where(notifications.c.instance == instance, notifications.c.ticket_id == ticket_id)
            .order_by(notifications.c.id)
        ).mappings()
        found_notifications = tuple(Notification.from_row(row) for row in told)
        shadow = (
            connection.execute(
                sa.select(ticket_shadow).where(
                    ticket_shadow.c.instance == instance, ticket_shadow.c.ticket_id == ticket_id
                )
            )
            .mappings()
            .first()
        )
    return TicketHistory(
        instance=instance,
        ticket_id=ticket_id,
        jobs=found_jobs,
        escalations=found,
        state=None if state is None else TicketState.from_row(state),
        shadow=None if shadow is None else Shadow.from_row(shadow),
        notifications=found_notifications,
    )


def escalated_without_job(
    store: Store, ticket_id: str, instance: str | None = None
) -> dict[str, int]:
    """Escalations of a ticket no inbox job made (sync's), by instance: what `escbridge jobs
    --ticket` cannot list, so it points at `escbridge history` instead."""
    query = (
        sa.select(escalations.c.instance, sa.func.count())
        .where(escalations.c.ticket_id == ticket_id, escalations.c.job_id.is_(None))
        .group_by(escalations.c.instance)
    )
    if instance is not None:
        query = query.where(escalations.c.instance == instance)
    with reading(store) as connection:
        return {str(name): int(n) for name, n in connection.execute(query)}


# --- the whole store at a glance ------------------------------------------------------------


@dataclass
class QueueCounts:
    """One instance's inbox: waiting (first try), retrying, claimed by a worker, dead, done."""

    pending: int = 0
    retrying: int = 0
    claimed: int = 0
    failed: int = 0
    done: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "pending": self.pending,
            "retrying": self.retrying,
            "claimed": self.claimed,
            "failed": self.failed,
            "done": self.done,
        }


@dataclass(frozen=True)
class Lease:
    """A lock held now: a ticket being decided, or (on its reserved ticket id) a sync run."""

    instance: str
    ticket_id: str
    owner: str
    expires_at: datetime


@dataclass(frozen=True)
class DueHead:
    """One instance's due-queue: open tickets known, with a deadline, overdue, and the next."""

    open: int
    with_deadline: int
    overdue: int
    next_due: datetime | None


@dataclass
class Overview:
    """The store at one instant, for `escbridge status`. ``schema`` is None when the store
    is at the head revision; otherwise what is wrong, and nothing else was read."""

    schema_revision: str | None
    schema_head: str
    schema: str | None = None
    queues: dict[str, QueueCounts] = field(default_factory=dict)
    oldest_failed: dict[str, datetime] = field(default_factory=dict)
    leases: list[Lease] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)  # intents not yet recorded
    due: dict[str, DueHead] = field(default_factory=dict)
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)
    #: per instance, the notifications of its escalations by state (pending, failed, …)
    notifications: dict[str, dict[str, int]] = field(default_factory=dict)


def overview(store: Store, now: datetime, *, lease_limit: int = 50) -> Overview:
    """Queue depth, dead letters, leases held, writes in flight, due-queue heads and last runs,
    read in one connection; only the schema version when the store is not at this version."""
    from escbridge.store.migrate import schema_problem

    head = head_revision()
    with reading(store) as connection:
        current = current_revision(connection)
        tables = set(sa.inspect(connection).get_table_names()) if current is None else set()
        problem = schema_problem(current, tables)
        result = Overview(current, head, problem)
        if problem is not None:
            return result
        retrying = sa.and_(inbox.c.status == PENDING, inbox.c.attempts > 0)
        state = sa.case((retrying, "retrying"), else_=inbox.c.status)
        for name, status, count in connection.execute(
            sa.select(inbox.c.instance, state, sa.func.count()).group_by(inbox.c.instance, state)
        ):
            counts = result.queues.setdefault(str(name), QueueCounts())
            attribute = "claimed" if status == PROCESSING else str(status)
            setattr(counts, attribute, getattr(counts, attribute) + int(count))
        for name, oldest in connection.execute(
            sa.select(inbox.c.instance, sa.func.min(inbox.c.finished_at))
            .where(inbox.c.status == FAILED)
            .group_by(inbox.c.instance)
        ):
            if oldest is not None:
                result.oldest_failed[str(name)] = _aware(oldest)
        held = (
            sa.select(
                ticket_state.c.instance,
                ticket_state.c.ticket_id,
                ticket_state.c.lock_owner,
                ticket_state.c.lock_expires_at,
            )
            .where(ticket_state.c.lock_token.is_not(None), ticket_state.c.lock_expires_at > now)
            .order_by(ticket_state.c.lock_expires_at)
            .limit(lease_limit)
        )
        result.leases = [
            Lease(str(i), str(t), str(owner or "?"), _aware(expires))
            for i, t, owner, expires in connection.execute(held)
        ]
        for name, count in connection.execute(
            sa.select(ticket_state.c.instance, sa.func.count())
            .where(ticket_state.c.intent.is_not(None))
            .group_by(ticket_state.c.instance)
        ):
            result.in_flight[str(name)] = int(count)
        overdue = sa.func.sum(sa.case((ticket_shadow.c.due_at <= now, 1), else_=0))
        for name, n, d, late, soonest in connection.execute(
            sa.select(
                ticket_shadow.c.instance,
                sa.func.count(),
                sa.func.count(ticket_shadow.c.due_at),
                overdue,
                sa.func.min(ticket_shadow.c.due_at),
            ).group_by(ticket_shadow.c.instance)
        ):
            result.due[str(name)] = DueHead(
                int(n), int(d), int(late or 0), _aware(soonest) if soonest else None
            )
        for name, told, count in connection.execute(
            sa.select(notifications.c.instance, notifications.c.state, sa.func.count()).group_by(
                notifications.c.instance, notifications.c.state
            )
        ):
            result.notifications.setdefault(str(name), {})[str(told)] = int(count)
        rows = connection.execute(sa.select(instance_runs)).mappings().all()
        result.runs = {(row["instance"], row["kind"]): Run(**dict(row)) for row in rows}
    return result


def _aware(value: datetime) -> datetime:
    """Aggregates (min) bypass the column type on SQLite: put UTC back on a naive time."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
