"""Apply: the one place a connector writes to a helpdesk.

One plan goes out through ``connector.apply``; several ready plans of one instance through one
``connector.apply_many`` (sync batches a page's writes this way, explicitly: nothing waits for
anything else to be ready). A conflict (409) reaches the plan's re-decision through
``on_conflict``; a conflict still there after the connector's bounded retries comes back as
``ApplyResult(ok=False, conflict=True, retryable=True)`` and, like every failed write, becomes
an :class:`~escbridge.errors.ApplyFailedError` the caller retries later: the event is never lost.
A recovery (``complete``, ``resume``) re-applies its intent as it is on the fresh ticket; a
:class:`~escbridge.errors.Conflict` raised by a connector is retried later the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from escbridge.errors import ApplyFailedError
from escbridge.model import Actions, Ticket
from escbridge.processing.plan import Plan

if TYPE_CHECKING:
    from escbridge.connector import ApplyResult, Connector

Redecide = Callable[[Plan, Ticket], Actions | None]
"""Asked, with the re-fetched ticket, what a plan should write after a conflict (None: nothing)."""


def on_conflict(plan: Plan, fresh: Ticket, redecide: Redecide) -> Actions | None:
    """What ``plan`` writes on the ticket as a concurrent edit left it: a new decision is
    decided again; a recovery re-applies its intent as it is (a resumable connector writes only
    what is still missing, and a one-call connector's write is whole or absent)."""
    if plan.step == "apply":
        return redecide(plan, fresh)
    return plan.actions


def apply_plan(connector: Connector, plan: Plan, redecide: Redecide) -> ApplyResult:
    """Write one plan."""

    def handler(fresh: Ticket) -> Actions | None:
        return on_conflict(plan, fresh, redecide)

    return connector.apply(plan.ticket, plan.actions, on_conflict=handler)


def apply_plans(
    connector: Connector, plans: Sequence[Plan], redecide: Redecide
) -> list[ApplyResult]:
    """Write several plans of one instance in one bulk call; one result per plan, in order
    (a plan the connector gave no result for is a retryable failure)."""
    if len(plans) == 1:
        return [apply_plan(connector, plans[0], redecide)]
    by_id = {plan.ticket_id: plan for plan in plans}

    def handler(fresh: Ticket) -> Actions | None:
        plan = by_id.get(fresh.id)
        return None if plan is None else on_conflict(plan, fresh, redecide)

    results = connector.apply_many(
        [(plan.ticket, plan.actions) for plan in plans], on_conflict=handler
    )
    return _aligned(plans, results)


def _aligned(plans: Sequence[Plan], results: Sequence[ApplyResult]) -> list[ApplyResult]:
    from escbridge.connector import ApplyResult

    by_id = {result.ticket_id: result for result in results}
    aligned: list[ApplyResult] = []
    for index, plan in enumerate(plans):
        found = results[index] if index < len(results) else None
        if found is None or found.ticket_id != plan.ticket_id:
            found = by_id.get(plan.ticket_id)
        aligned.append(
            found
            or ApplyResult(
                plan.ticket_id,
                ok=False,
                retryable=True,
                error="the bulk update returned no result for this ticket",
            )
        )
    return aligned


def check(plan: Plan, result: ApplyResult) -> None:
    """Fold the connector's answer into ``plan``: a re-decision that found nothing left to do
    turns it into a release; an escalation the connector found on the ticket already
    (``recovered``: the answer to its write was lost) is recorded as recovered; a failed write
    raises ApplyFailedError (retryable when the connector says so, and always for a conflict
    or an outcome still unknown)."""
    reason = result.error or ("a concurrent edit" if result.conflict else "no reason given")
    retryable = result.retryable or result.conflict or result.unknown
    if plan.step == "apply":
        if not result.ok:
            raise ApplyFailedError(f"apply failed: {reason}", retryable=retryable)
        if result.recovered:  # found on the ticket (skipped or not): recorded, not "unchanged"
            plan.recovered = True
        elif result.skipped:
            plan.step, plan.clear_intent = "release", True
        return
    if plan.step == "complete" and not result.ok:
        raise ApplyFailedError(
            f"completing an escalation that landed in part failed: {reason}", retryable=retryable
        )
    if plan.step == "resume" and (not result.ok or result.skipped):
        raise ApplyFailedError(
            "completing an escalation that landed in part failed: "
            f"{reason if not result.ok else 'the connector skipped it'}",
            retryable=retryable if not result.ok else True,
        )
