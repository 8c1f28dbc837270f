"""A storm of network faults over a few hundred webhook deliveries, then recovery.

For each helpdesk and each store: customers open flagged tickets (each a webhook), every
delivery arrives twice, some tickets get a second, different event; meanwhile the emulator
fails a seeded mix of its write calls the ways real networks do (5xx, 429, resets before and
after the write, lost answers, late completions, slow answers). Then the faults stop, every
webhook is delivered once more, the late writes land, and the workers drain the inbox.

The promise, checked per ticket on the helpdesk's side and in the store: escalated exactly once
(one level change in the helpdesk's history), exactly one internal note, at most one customer
reply, every escalation that reached the helpdesk recorded, and no event lost (nothing pending,
nothing dead-lettered: none of these failures is permanent).
"""

from __future__ import annotations

from typing import Any

from fault_rig import SLOW_SECONDS, RigFactory

STORM_TICKETS = 60
WRITES = "PUT,POST,PATCH,DELETE"
#: kind, options, probability per write call (each rule draws on its own, first hit wins)
STORM: list[tuple[str, dict[str, Any], float]] = [
    ("error", {}, 0.10),
    ("error", {"status": 500}, 0.05),
    ("throttle", {"retry_after": 5}, 0.08),
    ("reset", {}, 0.05),
    ("lost_answer", {}, 0.06),
    ("lost_answer", {"answer": "reset"}, 0.04),
    ("late", {}, 0.04),
    ("late", {"answer": "reset"}, 0.03),
    ("slow", {"delay": SLOW_SECONDS, "times": 2}, 0.05),
]
KINDS = ("error", "throttle", "reset", "lost_answer", "late", "slow")


def test_a_fault_storm_then_recovery_keeps_the_promise(rig: RigFactory) -> None:
    r = rig(fault_seed=1313)
    for kind, options, probability in STORM:
        rule = dict(options)
        times = rule.pop("times", None)
        r.faults.add(WRITES, "/api/**", kind, probability=probability, times=times, **rule)

    tickets = r.open_tickets(STORM_TICKETS)
    assert r.driver.flush(30)
    r.redeliver(r.deliveries())  # every delivery twice
    for ticket in tickets[::3]:  # and a different event on a third of them
        r.driver.agent_adds_tags(ticket, ["customer_waiting"])
    storm_ends = r.clock.now().timestamp() + 15 * 60
    r.work(until=lambda: r.clock.now().timestamp() >= storm_ends)

    r.faults.clear()  # the network heals
    assert r.driver.flush(30)
    r.redeliver(r.deliveries())  # and the helpdesk retries every webhook once more
    r.work()

    r.events = len(r.deliveries()) + r.duplicates
    print("\n" + r.summary("storm", len(tickets)))
    fired = {kind: r.faults.counts[kind] for kind in KINDS}
    assert all(fired.values()), f"a kind of fault never fired, the storm proves less: {fired}"
    assert r.faults.pending_late == 0
    assert r.check(tickets) == []
