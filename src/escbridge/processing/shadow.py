"""What a recorded decision leaves in the shadow: the ticket as the matrix needs it, and when
its decision can next change by time alone.

Computed in the record phase for every ticket processing decides — a webhook's, a sync page's,
a due one — so the due-queue always holds the next deadline of every open ticket escbridge has
seen. For a ticket just escalated, the ticket is taken as the escalation left it (level,
group, priority, tags; changed at the decision's instant) and the history with the new
escalation in it: the next deadline counts from there (time at the new level, the cooldown).
That instant is never later than the true one — the helpdesk stamps the write a moment after
the decision — so a deadline is never missed; at worst the due ticket is read once, found not
due yet, and queued again at its exact instant.

The free-text fields (description, latest comment) are kept only when the matrix reads them,
and the shadow records which it holds: after an edit that starts reading one, the shadows
without it are not passed over by a scan (``escbridge.store.shadow.unchanged``) but decided
again with the ticket as the helpdesk has it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from escbridge.conditions.ast import FieldTest, KeywordTest, walk
from escbridge.matrix import Matrix
from escbridge.model import Actions, Decision, EscalationRecord, Status, Ticket
from escbridge.store import Shadow, ShadowWrite, Store
from escbridge.store.shadow import partial_stamp

if TYPE_CHECKING:
    from escbridge.policy import Choice

#: Free-text fields of a ticket: kept in the shadow only when a rule reads them.
TEXT_FIELDS = ("description", "latest_comment")


class DueEngine(Protocol):
    """What the shadow needs of ``escbridge.policy.Engine``."""

    matrix: Matrix

    def choose(
        self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime
    ) -> Choice: ...

    def next_due(
        self, ticket: Ticket, history: Sequence[EscalationRecord], now: datetime
    ) -> datetime | None: ...


def text_fields_read(matrix: Matrix) -> frozenset[str]:
    """The free-text fields the matrix's conditions read (keyword rules, field tests)."""
    found: set[str] = set()
    for rule in matrix.rules:
        for leaf in walk(rule.condition):
            if isinstance(leaf, KeywordTest):
                found.update(leaf.fields)
            elif isinstance(leaf, FieldTest):
                found.add(leaf.field)
    return frozenset(found) & frozenset(TEXT_FIELDS)


def escalated(ticket: Ticket, actions: Actions, at: datetime) -> Ticket:
    """``ticket`` as an escalation with ``actions``, written at ``at``, leaves it."""
    update: dict[str, object] = {"version": None}
    if actions.level is not None:
        update["level"] = actions.level
    if actions.group is not None:
        update["group"] = actions.group
    if actions.priority is not None and actions.priority > ticket.priority:
        update["priority"] = actions.priority
    if actions.tags_add or actions.tags_remove:
        update["tags"] = (ticket.tags | set(actions.tags_add)) - set(actions.tags_remove)
    if actions.unassign:
        update["assignee"] = None
    if at > ticket.updated_at:
        update["updated_at"] = at
    return ticket.model_copy(update=update)


class Shadower:
    """Builds the shadow writes of the record phase from one engine."""

    #: Shadows recomputed per store round trip when the matrix has changed.
    CHUNK = 500

    def __init__(self, engine: DueEngine) -> None:
        self.engine = engine
        self.text = text_fields_read(engine.matrix)

    def write(
        self,
        ticket: Ticket,
        history: Sequence[EscalationRecord],
        now: datetime,
        *,
        decision: Decision | None = None,
        decided: Decision | None = None,
    ) -> ShadowWrite:
        """The shadow of ``ticket`` after the decision recorded at ``now`` (``decision``: an
        escalation that was written, or found written; ``decided``: the engine's decision not
        to escalate this very ticket, which spares deciding again).

        With ``decided``, the next due time counts from that decision's instant, so a limit
        that ran out between the decision and now is due at once, not missed."""
        instance = ticket.instance
        if ticket.status in (Status.SOLVED, Status.CLOSED):
            return ShadowWrite(instance, ticket.id, None)
        if decision is not None and decision.actions is not None and decision.destination:
            ticket = escalated(ticket, decision.actions, decision.at)
            history = [
                *history,
                EscalationRecord(
                    at=decision.at,
                    to=decision.destination.id,
                    from_level=decision.from_level,
                    rule_id=decision.rule_id,
                ),
            ]
        due: datetime | None
        if decision is None and decided is not None and not decided.escalate:
            due = self.engine.next_due(ticket, history, decided.at)
        elif self.engine.choose(ticket, history, now).escalate:  # no note needed to know
            due = now  # still escalates: at once (the guards bound this)
        else:
            due = self.engine.next_due(ticket, history, now)
        blank = {name: "" for name in TEXT_FIELDS if name not in self.text}
        kept = ticket.model_copy(update=blank) if blank else ticket
        return ShadowWrite(instance, ticket.id, kept, due, self.engine.matrix.digest, self.text)

    def refresh(self, store: Store, now: datetime) -> int:
        """Compute again the due times stored under another matrix than this engine's (the
        matrix was edited), from the shadows and histories alone — no helpdesk call — so a
        deadline the old matrix did not have is not missed. How many were stored.

        A shadow without a text field this matrix reads (it was blanked under the old one) is
        stamped partial (:func:`~escbridge.store.shadow.partial_stamp`): its due time stands,
        computed without that text, but a scan decides the ticket again rather than pass it
        over, so a new keyword rule meets the text it looks for."""
        digest = self.engine.matrix.digest
        partial = partial_stamp(digest)
        done = 0
        after: tuple[str, str] | None = None
        while stale := store.stale_shadows(digest, after, self.CHUNK):
            after = (stale[-1].instance, stale[-1].ticket_id)
            by_instance: dict[str, list[Shadow]] = {}
            for shadow in stale:
                by_instance.setdefault(shadow.instance, []).append(shadow)
            updated: list[Shadow] = []
            for instance, group in by_instance.items():
                histories = store.histories(instance, [s.ticket_id for s in group])
                for shadow in group:
                    ticket = shadow.ticket.model_copy(update={"instance": instance})
                    write = self.write(ticket, histories.get(shadow.ticket_id, []), now)
                    held = shadow.text is not None and self.text <= shadow.text
                    stamp = digest if held else partial
                    updated.append(dataclasses.replace(shadow, due_at=write.due_at, matrix=stamp))
            done += store.redate_shadows(updated, digest)
        return done
