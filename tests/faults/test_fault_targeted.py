"""One fault on one write call, for every write call an escalation makes, then recovery.

A probe ticket is escalated without faults to learn the connector's write calls (method and
path, in order: the level change, the internal note, the customer reply, however the helpdesk
takes them). Then each call gets its own ticket and exactly one fault of a kind that leaves
the outcome unknown to the client:

- ``lost_answer``: the write is applied, the client gets a 504;
- ``reset_after_send``: the write is applied, the connection is reset before the answer;
- ``late``: the client gets a 504, the write lands ``LATE_SECONDS`` later;
- ``late_after_timeout``: no answer until the client's read timeout, the write lands later;
- ``slow``: the write is applied, the answer comes after the client's read timeout.

Every event is delivered twice. The promise is checked per ticket (see test_fault_storm.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fault_rig import SLOW_SECONDS, RigFactory, write_calls

FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lost_answer": ("lost_answer", {}),
    "reset_after_send": ("lost_answer", {"answer": "reset"}),
    "late": ("late", {}),
    "late_after_timeout": ("late", {"answer": "hang"}),
    "slow": ("slow", {"delay": SLOW_SECONDS}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_one_fault_on_each_write_call_then_recovery(rig: RigFactory, fault: str) -> None:
    r = rig()
    kind, options = FAULTS[fault]
    [probe] = r.open_tickets(1)
    r.work()
    calls = write_calls(r.faults.seen, probe)
    assert calls, "the escalation made no write call"

    tickets = r.open_tickets(len(calls))
    labels = {probe: "no fault"}
    for n, (ticket, (method, path)) in enumerate(zip(tickets, calls, strict=True)):
        target = re.sub(rf"/{re.escape(probe)}(?=\.json|/|$)", f"/{ticket}", path)
        skip = calls[:n].count((method, path))  # the n-th call to the same endpoint
        r.faults.add(method, target, kind, times=1, skip=skip, **options)
        labels[ticket] = f"{fault} on write call {n + 1} of {len(calls)}: {method} {target}"
    assert r.driver.flush(30)
    r.redeliver(r.deliveries())  # every event twice
    r.work()

    r.events = len(r.deliveries()) + r.duplicates
    print("\n" + r.summary(f"targeted {fault}", len(tickets) + 1))
    unfired = [labels[t] for t, rule in zip(tickets, r.faults.rules, strict=True) if not rule.fired]
    assert unfired == [], "a targeted fault never fired (the call was not made again)"
    assert r.faults.pending_late == 0
    assert r.check([probe, *tickets], label=lambda t: labels.get(t, "?")) == []
