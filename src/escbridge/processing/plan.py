"""Plan: lock, fetch, recover, decide, write the intent — everything before a connector write.

A plan is one locked ticket, fetched and decided, with the step that finishes it:

``apply``
    a new decision to escalate: its intent is written (the fence before the write), then
    the connector writes it;
``record``
    an intent left by a worker that died after its apply landed: the level marker is on the
    ticket, so the escalation is recorded (``recovered``) and nothing is written again;
``complete``
    the same, for a connector that writes one escalation in several calls
    (``CAP_RESUMABLE_APPLY``): its idempotent apply writes whatever is still missing first;
``resume``
    an intent that landed only in part (the group or tags there, the marker not: Zoho Desk's
    bulk writes stopped by its daily credits), re-applied by a resumable connector;
``release``
    nothing to write: the lock is released (and a stale intent forgotten).

An intent with no trace on the ticket never reached the helpdesk: it is dropped and the ticket
decided afresh. Planning reads the store and the helpdesk but writes only intents, so a page of
tickets is planned with one lock statement and one intent transaction (:class:`Planner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from escbridge.connector.kit import landed as landed  # re-exported: processing.landed
from escbridge.connector.kit import partly_landed as partly_landed  # and processing.partly_landed
from escbridge.model import Actions, Decision, EscalationRecord, Status, Ticket

if TYPE_CHECKING:
    from escbridge.connector import Connector
    from escbridge.store import Intent, Job, Store, TicketLock

Step = Literal["apply", "record", "complete", "resume", "release"]

#: The steps whose plan needs a connector write before it is recorded.
WRITING_STEPS: frozenset[Step] = frozenset({"apply", "complete", "resume"})


class DecisionEngine(Protocol):
    """What processing needs of ``escbridge.policy.Engine``."""

    def decide(
        self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime
    ) -> Decision: ...


@dataclass
class Plan:
    """One locked, fetched and decided ticket, and the step that finishes it (see above).

    ``decision`` is what the outcome reports (the engine's, or the recovered intent's);
    ``intent`` what is applied and recorded (a conflict re-decision replaces both).
    ``resolved`` is the ticket's new ``resolved_at`` when it changed (``resolved_changed``),
    noted when the lock is given back. ``recovered``: an ``apply`` whose intent was found on
    the ticket already (the answer to its write was lost, or a re-decision met it there): it is
    recorded as recovered, never as "unchanged".
    """

    instance: str
    ticket: Ticket
    lock: TicketLock
    step: Step
    decision: Decision
    intent: Intent | None = None
    job: Job | None = None
    clear_intent: bool = False
    resolved: datetime | None = None
    resolved_changed: bool = False
    recovered: bool = False

    @property
    def ticket_id(self) -> str:
        return self.lock.ticket_id

    @property
    def writes(self) -> bool:
        return self.step in WRITING_STEPS

    @property
    def actions(self) -> Actions:
        """What the connector writes (only for a writing step)."""
        if self.intent is None or self.intent.decision.actions is None:
            raise ValueError(f"{self.instance}/{self.ticket_id}: a {self.step} plan has no actions")
        return self.intent.decision.actions


def as_instance(ticket: Ticket, instance: str) -> Ticket:
    """The ticket labelled with the instance it was read from (connectors may leave it blank)."""
    return (
        ticket if ticket.instance == instance else ticket.model_copy(update={"instance": instance})
    )


class Planner:
    """The plan phase on one store and engine; time and lease are passed in by the caller."""

    def __init__(self, store: Store, engine: DecisionEngine) -> None:
        self.store = store
        self.engine = engine

    # --- lock ---------------------------------------------------------------------------

    def lock(
        self, instance: str, ticket_id: str, owner: str, now: datetime, lease: timedelta
    ) -> TicketLock | None:
        """One ticket's lock, with its state and history; None when another worker holds it."""
        return self.store.lock_ticket(instance, ticket_id, owner, now, lease)

    def lock_page(
        self,
        instance: str,
        ticket_ids: Sequence[str],
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> dict[str, TicketLock]:
        """The locks of a page of tickets, taken in one statement (busy tickets left out)."""
        return self.store.lock_tickets(instance, ticket_ids, owner, now, lease)

    # --- fetch, recover, decide ----------------------------------------------------------

    def plan(
        self,
        connector: Connector,
        lock: TicketLock,
        ticket: str | Ticket,
        now: datetime,
        *,
        job: Job | None = None,
    ) -> Plan:
        """Fetch (unless a scanned ticket is given and no intent is pending), then recover a
        pending intent or decide. Writes nothing; connector errors propagate, typed."""
        from escbridge.connector import CAP_RESUMABLE_APPLY
        from escbridge.store import Intent

        instance = lock.instance
        pending = lock.state.intent
        if pending is not None or not isinstance(ticket, Ticket):
            ticket = connector.fetch_ticket(lock.ticket_id)
        current = as_instance(ticket, instance)
        resolved, changed = _resolution(lock, current, now)

        def make(
            step: Step, decision: Decision, intent: Intent | None = None, clear: bool = False
        ) -> Plan:
            return Plan(
                instance,
                current,
                lock,
                step,
                decision,
                intent,
                job=job,
                clear_intent=clear,
                resolved=resolved,
                resolved_changed=changed,
            )

        if pending is not None and pending.decision.actions is not None:
            actions = pending.decision.actions
            resumable = CAP_RESUMABLE_APPLY in connector.info.capabilities
            if landed(current, actions):
                return make("complete" if resumable else "record", pending.decision, pending)
            if resumable and partly_landed(current, actions):
                return make("resume", pending.decision, pending)
        decision = self.engine.decide(current, lock.history, now)
        stale = pending is not None  # it never reached the helpdesk: forgotten when released
        if not decision.escalate or decision.actions is None:
            return make("release", decision, clear=stale)
        intent = Intent(
            decision,
            current.created_at,
            job.id if job else None,
            from_group=current.group,
            channel=current.channel.value,
        )
        return make("apply", decision, intent, clear=stale)

    # --- write intent ----------------------------------------------------------------------

    def write_intents(self, plans: Sequence[Plan], now: datetime, lease: timedelta) -> list[Plan]:
        """Write the intents of the ``apply`` plans in one transaction, extending their locks
        by ``lease``: the fence before the connector writes. The plans whose lock was lost
        (another worker took the ticket over) come back: they must not be applied."""
        writing = [p for p in plans if p.step == "apply"]
        if not writing:
            return []
        with self.store.batch() as batch:
            written = batch.write_intents([(p.lock, _intent(p)) for p in writing], now, lease=lease)
        return [plan for plan, ok in zip(writing, written, strict=True) if not ok]

    def write_intent(self, plan: Plan, now: datetime, lease: timedelta) -> None:
        """:meth:`write_intents` for one plan (one statement, the event path's hot spot);
        LockLostError when its lock was lost."""
        if plan.step == "apply":
            self.store.write_intent(plan.lock, _intent(plan), now, lease=lease)

    def redecide(
        self, plan: Plan, fresh: Ticket, now: datetime, lease: timedelta
    ) -> Actions | None:
        """A connector met a concurrent edit (409): decide again on the ticket as it is now and
        make the intent say so before the connector writes it. None: nothing left to do.

        A 409 that answers the repeat of our own write whose answer was lost never gets here:
        ``BaseConnector`` compares the fresh ticket with the pending write first (``landed``)
        and, when it landed, returns it ``recovered`` — recorded, never "unchanged". A 409
        without an ambiguous write before it is a person's edit, even one that set the same
        level: it is decided again (and, nothing being left to do, found unchanged).
        """
        from escbridge.store import Intent

        fresh = as_instance(fresh, plan.instance)
        decision = self.engine.decide(fresh, plan.lock.history, now)
        if not decision.escalate or decision.actions is None:
            return None
        previous = plan.intent
        intent = Intent(
            decision,
            fresh.created_at,
            previous.job_id if previous else None,
            from_group=previous.from_group if previous else fresh.group,
            channel=previous.channel if previous else fresh.channel.value,
        )
        self.store.write_intent(plan.lock, intent, now, lease=lease)  # LockLostError: stop
        plan.intent, plan.decision = intent, decision
        return decision.actions


def _intent(plan: Plan) -> Intent:
    if plan.intent is None:
        raise ValueError(f"{plan.instance}/{plan.ticket_id}: an apply plan without an intent")
    return plan.intent


def _resolution(lock: TicketLock, ticket: Ticket, now: datetime) -> tuple[datetime | None, bool]:
    """``resolved_at`` in step with the ticket: set the first time it is seen solved or closed
    (at its last change, else now), cleared when it is open again; and whether it changed."""
    resolved = ticket.status in (Status.SOLVED, Status.CLOSED)
    known = lock.state.resolved_at
    if resolved and known is None:
        return (ticket.updated_at if ticket.updated_at <= now else now), True
    if not resolved and known is not None:
        return None, True
    return known, False
