"""Freshdesk own changes, with and without a performer in the rule's body.

``{{event_performer.email}}`` is found in no public source (api-audit.md row 14), so both are
handled: a body that names the performer (by e-mail or id) is told apart by who escbridge
writes as; one that does not is compared by the worker with the ticket as escbridge's last
write left it (``escbridge.processing.OwnWrites``). Loopback rig: the Freshdesk emulator, its
automation-rule webhook, a receiver and the worker.
"""

from __future__ import annotations

import pytest
import test_freshdesk_e2e
from escbridge_freshdesk.sandbox import WEBHOOK_TEMPLATE
from test_freshdesk_e2e import Rig, escalated

rig = test_freshdesk_e2e.rig  # the loopback rig (emulator, receiver, worker) of the e2e tests

WITHOUT_PERFORMER = WEBHOOK_TEMPLATE.replace('"performer": "{{event_performer.email}}", ', "")


def test_with_a_performer_the_echo_of_escbridges_write_is_dropped(rig: Rig) -> None:
    tid = rig.sandbox.create_ticket(subject="Checkout down", tags=["vip"], group="Frontline")["id"]
    assert rig.run() == {"escalated": 1}
    assert rig.run() == {"own_change": 1}
    assert rig.connector.identity.known is not None  # learned by the worker, not the door
    rig.sandbox.human_update(tid, priority=1)  # a person, afterwards
    assert rig.run() == {"unchanged": 1}  # processed, not dropped
    assert escalated(rig.sandbox, tid)[3] == 1


@pytest.mark.parametrize("rig", [{"webhook_template": WITHOUT_PERFORMER}], indirect=True)
def test_without_a_performer_a_change_after_escbridges_write_is_processed(rig: Rig) -> None:
    tid = rig.sandbox.create_ticket(subject="Checkout down", tags=["vip"], group="Frontline")["id"]
    assert rig.run() == {"escalated": 1}
    rig.run()  # the echo of escbridge's own write (see the next test)
    rig.sandbox.human_update(tid, priority=1)  # a person, afterwards

    assert rig.run() == {"unchanged": 1}  # decided on again, never dropped
    assert escalated(rig.sandbox, tid)[3] == 1  # and the level marker stops a second write


@pytest.mark.parametrize("rig", [{"webhook_template": WITHOUT_PERFORMER}], indirect=True)
def test_without_a_performer_the_echo_of_escbridges_write_is_dropped(rig: Rig) -> None:
    rig.sandbox.create_ticket(subject="Checkout down", tags=["vip"], group="Frontline")
    assert rig.run() == {"escalated": 1}
    assert rig.run() == {"own_change": 1}


def test_check_says_which_agent_escbridge_writes_as(rig: Rig) -> None:
    report = rig.connector.check(["Senior Support"])
    assert report.ok, report
    assert any(
        n.startswith("escbridge writes as") and "escbridge@sandbox.example" in n
        for n in report.notes
    ), report.notes
