"""The worker drops escbridge's own changes, also when the webhook cannot say who made them.

A Freshdesk rule body may carry no performer (``{{event_performer.email}}`` is found in no
public source: api-audit.md row 14), and a door that has not learned who escbridge writes as
yet stores every event. The worker, which fetches the ticket anyway, compares it with what
escbridge's last write left: the same version and level means nothing has happened since, so
the event is dropped; any later change gives the ticket a new version and is processed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from processing_harness import engine, event

from escbridge.connector.kit import Identity
from escbridge.processing import Processor
from escbridge.store import Store
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk


@pytest.fixture
def helpdesk(tmp_path: Path) -> FakeHelpdesk:
    return FakeHelpdesk(tmp_path / "helpdesk.db")


@pytest.fixture
def make(store: Store, helpdesk: FakeHelpdesk) -> Callable[..., Processor]:
    """A processor (one worker process) over the test store and helpdesk."""

    def build(connector: FakeConnector | None = None) -> Processor:
        return Processor(
            store,
            engine(),
            {"fake": connector or FakeConnector(helpdesk)},
            clock=FakeClock(),
            rng=random.Random(7),
            worker_id="test-worker",
        )

    return build


def escalate(processor: Processor, helpdesk: FakeHelpdesk, ticket_id: str) -> None:
    helpdesk.add(ticket_id, tags=["vip"])
    processor.enqueue(event(ticket_id, key=f"{ticket_id}-customer", actor="a-customer"))
    assert processor.run_once().outcomes == {"escalated": 1}


def test_an_event_without_an_actor_for_the_ticket_as_escbridge_left_it_is_dropped(
    make, helpdesk, store
):
    processor = make()
    escalate(processor, helpdesk, "1")

    # escbridge's write fired the rule; the body says nothing about who changed the ticket.
    processor.enqueue(event("1", key="1-echo", actor=None))
    report = processor.run_once()

    assert report.outcomes == {"own_change": 1}
    [job] = store.jobs(["done"], ticket_id="1", limit=None)[-1:]
    assert job.outcome == "own_change"
    assert helpdesk.applies() == {"1": 1}
    assert len(store.escalations(ticket_id="1")) == 1
    state = store.ticket_state("fake", "1")
    assert state is not None and state.lock_owner is None  # the ticket is free again


def test_a_change_made_after_escbridges_write_is_never_dropped(make, helpdesk, store):
    connector = FakeConnector(helpdesk)
    processor = make(connector)
    escalate(processor, helpdesk, "2")
    helpdesk.edit("2", tags=["vip", "escbridge_l2", "callback-requested"])  # a person, later
    fetches = connector.calls["fetch"]

    processor.enqueue(event("2", key="2-person", actor=None))
    report = processor.run_once()

    assert report.outcomes == {"unchanged": 1}  # decided on, not dropped
    assert connector.calls["fetch"] == fetches + 1  # read once: the comparison's read is reused


def test_another_process_without_the_memory_processes_the_echo_and_changes_nothing(
    make, helpdesk, store
):
    escalate(make(), helpdesk, "3")
    elsewhere = make()  # a second worker process: it did not make the write

    elsewhere.enqueue(event("3", key="3-echo", actor=None))

    assert elsewhere.run_once().outcomes == {"unchanged": 1}  # the level marker stops it
    assert helpdesk.applies() == {"3": 1}


def test_an_own_change_stored_before_the_identity_was_known_is_dropped_by_the_worker(
    make, helpdesk, store
):
    class Unconfigured(FakeConnector):
        """A helpdesk whose API user is learned, not configured."""

        def _configured_identity(self) -> None:
            return None

        def _whoami(self) -> Identity:
            return Identity("escbridge")

    connector = Unconfigured(helpdesk)
    helpdesk.add("4", tags=["vip"])
    own = event("4", key="4-own", actor="escbridge")
    assert connector.own_change_known(own) is None  # the door could not tell: stored
    processor = make(connector)
    processor.enqueue(own)

    assert processor.run_once().outcomes == {"own_change": 1}
    assert helpdesk.applies() == {} and "fetch" not in connector.calls
