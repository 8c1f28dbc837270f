"""Who escbridge writes as: learned once, in the background, never while a webhook waits.

``escbridge.connector.kit.SelfIdentity`` is the one place that learns and remembers it, for
every connector (``BaseConnector.identity``). Time is a FakeClock; the thread tests wait on
events the learn function sets, never on the clock.
"""

from __future__ import annotations

import math
import random
import threading

import pytest

from escbridge.connector.kit import Identity, SelfIdentity
from escbridge.errors import AuthError, RateLimited, TransientError
from escbridge.model import TicketEvent
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk

GUARD = 30.0  # failure guard only
ME = Identity("9001", aliases=frozenset({"Escbridge@Acme.example"}), label="escbridge <e@a>")


class Helpdesk:
    """A "who am I" endpoint with a script of answers (an Identity, or an error to raise)."""

    def __init__(self, *answers: Identity | Exception | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def whoami(self) -> Identity | None:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else ME
        if isinstance(answer, Exception):
            raise answer
        return answer


def learner(helpdesk: Helpdesk, clock: FakeClock, **options: object) -> SelfIdentity:
    return SelfIdentity(
        helpdesk.whoami, instance="eu", clock=clock.monotonic, rng=random.Random(7), **options
    )


def event(actor: str | None) -> TicketEvent:
    return TicketEvent(instance="fake", ticket_id="1", dedupe_key="k", actor=actor)


def test_an_identity_matches_its_id_and_aliases_whatever_the_case() -> None:
    assert ME.matches("9001") and ME.matches(" escbridge@acme.EXAMPLE ")
    assert not ME.matches("9003") and not ME.matches(None) and not ME.matches("")
    assert str(ME) == "escbridge <e@a>" and str(Identity("7")) == "7"


def test_a_configured_identity_is_never_asked_for() -> None:
    helpdesk, clock = Helpdesk(), FakeClock()
    identity = learner(helpdesk, clock, known=ME)
    identity.start()
    assert identity.known == ME and identity.learn_now() == ME
    assert not identity.running and helpdesk.calls == 0


def test_it_is_learned_once_and_remembered() -> None:
    helpdesk, clock = Helpdesk(), FakeClock()
    identity = learner(helpdesk, clock)
    assert identity.known is None  # asking what is known never calls
    assert identity.learn_now() == ME
    assert identity.learn_now() == ME and identity.known == ME
    assert helpdesk.calls == 1


def test_after_a_429_it_waits_at_least_the_retry_after() -> None:
    helpdesk, clock = Helpdesk(RateLimited("slow down", retry_after=60, status=429)), FakeClock()
    identity = learner(helpdesk, clock)
    assert identity.learn_now() is None
    assert identity.retry_in() == pytest.approx(60)
    assert "rate limited" in (identity.last_error or "")

    clock.advance(seconds=59)
    assert identity.learn_now() is None and helpdesk.calls == 1  # not before Retry-After

    clock.advance(seconds=1)
    assert identity.learn_now() == ME and helpdesk.calls == 2
    assert identity.last_error is None


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    outage = [TransientError("503", status=503) for _ in range(12)]
    helpdesk, clock = Helpdesk(*outage), FakeClock()
    identity = learner(helpdesk, clock, first_delay=1.0, max_delay=300.0)
    waits = []
    for _ in range(12):
        assert identity.learn_now() is None
        waits.append(identity.retry_in())
        clock.advance(seconds=math.ceil(identity.retry_in()))  # timedelta: whole µs
    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= wait <= ceiling  # equal jitter under a doubling, capped ceiling
    assert waits[-1] >= 150  # capped at 300 s, never more
    assert helpdesk.calls == 12
    assert identity.learn_now() == ME


def test_refused_credentials_are_retried_later_too_never_raised() -> None:
    helpdesk, clock = Helpdesk(AuthError("bad token", status=401)), FakeClock()
    identity = learner(helpdesk, clock)
    assert identity.learn_now() is None
    assert identity.failures == 1 and "AuthError" in (identity.last_error or "")


def test_a_helpdesk_that_cannot_say_is_never_asked_again() -> None:
    helpdesk, clock = Helpdesk(NotImplementedError()), FakeClock()
    identity = learner(helpdesk, clock)
    assert identity.learn_now() is None
    clock.advance(hours=1)
    identity.start()
    assert identity.learn_now() is None and helpdesk.calls == 1 and not identity.running


def test_while_one_attempt_is_in_flight_nobody_asks_again() -> None:
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow_whoami() -> Identity:
        calls.append(threading.current_thread().name)
        entered.set()
        release.wait(GUARD)
        return ME

    identity = SelfIdentity(slow_whoami, instance="eu", clock=FakeClock().monotonic)
    identity.start()
    try:
        assert entered.wait(GUARD)
        assert identity.learn_now() is None  # a worker does not queue behind the hanging call
        assert calls == ["escbridge-identity-eu"]
    finally:
        release.set()
    assert identity.join(GUARD) == ME
    assert not identity.running and len(calls) == 1


def test_stop_ends_a_thread_that_waits_out_a_back_off() -> None:
    asked = threading.Event()

    def throttled() -> Identity:
        asked.set()
        raise RateLimited("slow down", retry_after=3600, status=429)

    identity = SelfIdentity(throttled, instance="eu")
    identity.start()
    assert asked.wait(GUARD)
    assert identity.stop(timeout=GUARD)
    assert identity.known is None and not identity.running


def test_the_connector_answers_the_door_without_io_and_the_worker_by_learning() -> None:
    class Unconfigured(FakeConnector):
        asked = 0

        def _configured_identity(self) -> None:
            return None

        def _whoami(self) -> Identity:
            type(self).asked += 1
            return Identity("escbridge")

    connector = Unconfigured(FakeHelpdesk())
    own, theirs = event("escbridge"), event("a-person")
    assert connector.own_change_known(own) is None  # unknown yet: the door stores it
    assert connector.own_change_known(theirs) is None
    assert Unconfigured.asked == 0

    assert connector.is_own_change(own)  # the worker may ask the helpdesk
    assert Unconfigured.asked == 1
    assert connector.own_change_known(own) is True
    assert connector.own_change_known(theirs) is False
    assert connector.own_change_known(event(None)) is None  # no actor: the worker compares
    assert not connector.is_own_change(event(None))
    assert Unconfigured.asked == 1
