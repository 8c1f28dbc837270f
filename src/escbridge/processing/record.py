"""Record: what a plan came to, kept in one transaction with the lock given back.

An escalation that was written (or found on the ticket after a crash) goes to the history and
the ticket's state, its intent is cleared, its lock released and its job marked done, all at
once. A plan with nothing to write only gives its lock back. Several plans — a sync page —
are recorded in one transaction, together with the locks of tickets that failed (their intents
kept, for the next attempt to check) and the failures handed to workers through the inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from escbridge.errors import LockLostError
from escbridge.model import Decision, Ticket, TicketEvent
from escbridge.processing.plan import Plan

if TYPE_CHECKING:
    from escbridge.notify.deliver import Outbox
    from escbridge.processing.shadow import Shadower
    from escbridge.store import (
        NewNotification,
        ShadowWrite,
        Store,
        StoredEscalation,
        TicketLock,
        TicketWrites,
    )

log = logging.getLogger("escbridge.processing")

OutcomeStatus = Literal["escalated", "recovered", "unchanged", "dry_run", "busy", "own_change"]


@dataclass(frozen=True)
class Outcome:
    """What processing one ticket came to.

    ``escalated``: applied and recorded now. ``recovered``: an earlier apply had landed but was
    not recorded (the worker died); recorded now. ``unchanged``: the engine found nothing to
    do (``decision.summary`` says why). ``dry_run``: the decision, with nothing written.
    ``busy``: another worker holds the ticket; it will see the same state.
    """

    status: OutcomeStatus
    instance: str
    ticket_id: str
    decision: Decision | None = None
    ticket: Ticket | None = None
    escalation: StoredEscalation | None = None

    @property
    def summary(self) -> str:
        if self.status == "busy":
            return "another worker is processing this ticket"
        if self.status == "own_change":
            return "escbridge's own change: ignored"
        return self.decision.summary if self.decision is not None else self.status


class Recorder:
    """The record phase on one store; with a ``shadower``, every recorded ticket's shadow and
    next due time are written in the same transaction (:mod:`escbridge.processing.shadow`);
    with an ``outbox``, every recorded escalation's notifications too
    (:mod:`escbridge.notify.deliver`): a recorded escalation always has them, a rolled-back
    one never."""

    def __init__(
        self,
        store: Store,
        shadower: Shadower | None = None,
        on_due: Callable[[datetime], None] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.store = store
        self.shadower = shadower
        self.on_due = on_due  # told the earliest deadline each record stored
        self.outbox = outbox

    def record(
        self,
        plans: Sequence[Plan],
        now: datetime,
        *,
        cooldown: timedelta | None = None,
        helpdesk: str | None = None,
        failed: Sequence[Plan | TicketLock] = (),
        unsent: Sequence[Plan] = (),
        hand_off: Sequence[TicketEvent] = (),
    ) -> list[Outcome | LockLostError]:
        """Record ``plans`` (each written, or with nothing to write), release the locks of the
        ``failed`` ones keeping their intents (a write may have landed), release the
        ``unsent`` ones forgetting the intents of new decisions (no connector call was made
        for them: the next run decides afresh without re-reading the ticket), and keep
        ``hand_off`` events in the inbox: one transaction. One result per plan: its outcome,
        or LockLostError when its lock was taken over meanwhile (nothing of it written; the
        new holder sees the same ticket)."""
        from escbridge.store import APPLIED, RECOVERED, ToRecord

        results: list[Outcome | LockLostError | None] = []
        escalating: list[ToRecord] = []
        plan_of: dict[int, Plan] = {}
        told: list[NewNotification] = []
        if not plans and not failed and not unsent and not hand_off:
            return []
        kept: list[TicketLock] = []  # locks given back as they are (intent kept, no job)
        cleared: list[TicketLock] = []  # locks given back with their stale intent forgotten
        shadows = self._shadows(plans, now)  # computed outside the write transaction
        with self.store.batch() as batch:
            for plan in plans:
                _note_resolution(batch, plan, now)
                if plan.step == "release":
                    if plan.job is None:
                        (cleared if plan.clear_intent else kept).append(plan.lock)
                    else:
                        completed = batch.release(
                            plan.lock,
                            clear_intent=plan.clear_intent,
                            job=plan.job,
                            outcome="unchanged",
                            now=now,
                        )
                        _completed(completed, plan)
                    results.append(
                        Outcome(
                            "unchanged", plan.instance, plan.ticket_id, plan.decision, plan.ticket
                        )
                    )
                    continue
                assert plan.intent is not None
                outcome = APPLIED if plan.step == "apply" and not plan.recovered else RECOVERED
                job_outcome = "escalated" if outcome == APPLIED else outcome
                entry = ToRecord(plan.lock, plan.intent, outcome, plan.job, job_outcome)
                escalating.append(entry)
                plan_of[id(entry)] = plan
                results.append(None)
            stored = batch.record_escalations(
                escalating, now=now, cooldown=cooldown, helpdesk=helpdesk
            )
            if self.outbox is not None:
                told = self.outbox.write(
                    batch,
                    [
                        (entry.intent.decision, plan_of[id(entry)].ticket, escalation)
                        for entry, escalation in zip(escalating, stored, strict=True)
                        if escalation is not None
                    ],
                    now,
                )
            recorded = iter(zip(escalating, stored, strict=True))
            for index, plan in enumerate(plans):
                if results[index] is not None:
                    continue
                entry, escalation = next(recorded)
                if escalation is None:
                    results[index] = LockLostError(
                        f"lost the lock on ticket {plan.instance}/{plan.ticket_id}"
                    )
                    continue
                status: OutcomeStatus = "escalated" if entry.outcome == APPLIED else "recovered"
                results[index] = Outcome(
                    status,
                    plan.instance,
                    plan.ticket_id,
                    entry.intent.decision,
                    plan.ticket,
                    escalation,
                )
            saved = (
                [
                    write
                    for write, result in zip(shadows, results, strict=True)
                    if write is not None and not isinstance(result, LockLostError)
                ]
                if shadows
                else []
            )
            batch.save_shadows(saved, now)
            for item in failed:
                if isinstance(item, Plan):
                    _note_resolution(batch, item, now)
                    kept.append(item.lock)
                else:
                    kept.append(item)
            for plan in unsent:
                _note_resolution(batch, plan, now)
                (cleared if plan.step == "apply" else kept).append(plan.lock)
            batch.release_many(kept)
            batch.release_many(cleared, clear_intent=True, now=now)
            for event in hand_off:
                batch.enqueue(event, now)
        if self.outbox is not None:
            self.outbox.written(told)
        deadlines = [w.due_at for w in saved if w.due_at is not None]
        if deadlines and self.on_due is not None:
            self.on_due(min(deadlines))
        settled = [result for result in results if result is not None]
        for result in settled:
            if isinstance(result, Outcome) and result.status == "escalated":
                log.info("%s/%s: %s", result.instance, result.ticket_id, result.summary)
            elif isinstance(result, Outcome) and result.status == "recovered":
                log.warning(
                    "%s/%s: recorded an escalation applied before a crash: %s",
                    result.instance,
                    result.ticket_id,
                    result.summary,
                )
        return settled

    def _shadows(self, plans: Sequence[Plan], now: datetime) -> list[ShadowWrite | None]:
        """Each plan's shadow as recording it leaves it (one per plan; None: not computed)."""
        if self.shadower is None:
            return []
        writes: list[ShadowWrite | None] = []
        for plan in plans:
            decision = plan.intent.decision if plan.step != "release" and plan.intent else None
            decided = plan.decision if plan.step == "release" else None
            try:
                write: ShadowWrite | None = self.shadower.write(
                    plan.ticket, plan.lock.history, now, decision=decision, decided=decided
                )
            except Exception:  # a bug here must not lose the record; the old shadow stays
                log.exception("%s/%s: no next due time", plan.instance, plan.ticket_id)
                write = None
            writes.append(write)
        return writes

    def record_one(
        self,
        plan: Plan,
        now: datetime,
        *,
        cooldown: timedelta | None = None,
        helpdesk: str | None = None,
    ) -> Outcome:
        """:meth:`record` for one plan; LockLostError when its lock was lost."""
        [result] = self.record([plan], now, cooldown=cooldown, helpdesk=helpdesk)
        if isinstance(result, LockLostError):
            raise result
        return result

    def release(self, failed: Sequence[Plan | TicketLock], now: datetime) -> None:
        """Give back the locks of plans that failed, keeping their intents (the next attempt
        re-reads the ticket to learn whether a write landed)."""
        self.record((), now, failed=failed)


def _note_resolution(batch: TicketWrites, plan: Plan, now: datetime) -> None:
    if plan.resolved_changed:
        batch.set_resolved(plan.lock, plan.resolved, now)


def _completed(done: bool, plan: Plan) -> None:
    if not done and plan.job is not None:
        log.warning("job %s: lease lost before completion (another worker has it)", plan.job.id)
