"""escbridge.testing: the fake clock, the fake connector and the loopback helpers behave as
their users (escbridge's tests and connector authors) rely on."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests

from escbridge.connector import Connector
from escbridge.errors import Conflict, TransientError
from escbridge.model import Actions, Priority
from escbridge.sandbox import serve
from escbridge.testing import FakeClock, FakeConnector, FakeHelpdesk
from escbridge.testing.wsgi import Outage, WebhookCatcher

L2 = Actions(
    group="Senior", priority=Priority.HIGH, note="Up.", tags_add=("escbridge_l2",), level="l2"
)


# --- FakeClock ----------------------------------------------------------------------------


def test_the_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock() == datetime(2026, 3, 2, 12, 0, tzinfo=UTC) == clock.now
    start = clock.monotonic()

    clock.sleep(2.5)
    assert clock.advance(minutes=5) == datetime(2026, 3, 2, 12, 5, 2, 500000, tzinfo=UTC)
    assert clock.advance(timedelta(hours=1), seconds=1) == datetime(
        2026, 3, 2, 13, 5, 3, 500000, tzinfo=UTC
    )
    assert clock.monotonic() - start == 2.5 + 300 + 3601
    assert clock.sleeps == [2.5]


def test_a_wall_clock_step_back_leaves_the_monotonic_clock_alone() -> None:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    before = clock.monotonic()
    assert clock.advance(minutes=-10) == datetime(2026, 5, 31, 23, 50, tzinfo=UTC)
    assert clock.monotonic() == before
    with pytest.raises(ValueError):
        clock.sleep(-1)
    with pytest.raises(ValueError):
        FakeClock(datetime(2026, 6, 1))  # naive: which zone?


def test_sleeps_from_many_threads_all_count() -> None:
    clock = FakeClock()
    start = clock.monotonic()

    def work() -> None:
        for _ in range(500):
            clock.sleep(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(clock.sleeps) == 4000
    assert clock.monotonic() - start == 4000
    assert clock() == datetime(2026, 3, 2, 12, 0, tzinfo=UTC) + timedelta(seconds=4000)


# --- FakeConnector ------------------------------------------------------------------------


@pytest.fixture
def helpdesk() -> FakeHelpdesk:
    desk = FakeHelpdesk()
    desk.add("1", tags=["vip"])
    return desk


def test_the_fake_connector_meets_the_contract(helpdesk: FakeHelpdesk) -> None:
    connector = FakeConnector(helpdesk)
    assert isinstance(connector, Connector)

    result = connector.apply(connector.fetch_ticket("1"), L2)

    assert result.ok and helpdesk.levels() == {"1": "l2"} and helpdesk.notes("1") == ["Up."]
    assert connector.calls == {"fetch": 1, "after_fetch": 1, "apply": 1, "after_apply": 1}
    again = connector.apply(connector.fetch_ticket("1"), L2)  # landed already: not rewritten
    assert again.ok and helpdesk.applies() == {"1": 1}


def test_the_fake_connector_has_the_contracts_conflict_semantics(helpdesk: FakeHelpdesk) -> None:
    connector = FakeConnector(helpdesk, conflict_retries=2)
    stale = connector.fetch_ticket("1")
    helpdesk.edit("1", tags=["vip", "hannah"])

    with pytest.raises(Conflict):
        connector.apply(stale, L2)

    def keeps_changing(fresh: object) -> Actions:
        helpdesk.edit("1", tags=["vip"])
        return L2

    given_up = connector.apply(stale, L2, on_conflict=keeps_changing)
    assert (given_up.ok, given_up.conflict, given_up.retryable, given_up.conflicts) == (
        False,
        True,
        True,
        3,
    )
    settled = connector.apply(stale, L2, on_conflict=lambda fresh: L2)
    assert settled.ok and settled.conflicts == 1 and helpdesk.applies() == {"1": 1}


def test_faults_are_injected_where_asked(helpdesk: FakeHelpdesk) -> None:
    def flaky(point: str, ticket_id: str) -> None:
        if point == "apply":
            raise TransientError("HTTP 503", status=503)

    connector = FakeConnector(helpdesk, fail=flaky)
    ticket = connector.fetch_ticket("1")
    with pytest.raises(TransientError):
        connector.apply(ticket, L2)
    assert helpdesk.applies() == {}

    lost = FakeConnector(helpdesk, land_then_fail=lambda _id: TransientError("read timed out"))
    with pytest.raises(TransientError):
        lost.apply(ticket, L2)
    assert helpdesk.applies() == {"1": 1}  # it landed; only the answer was lost


# --- loopback helpers ---------------------------------------------------------------------


def test_the_catcher_records_webhooks_as_the_receiver_gets_them() -> None:
    catcher = WebhookCatcher(validate=lambda query: 200 if query.get("token") == "t" else 401)
    with serve(catcher) as server:
        sent = requests.post(
            f"{server.url}/hooks?token=t",
            data=b'{"id": 1}',
            headers={"X-Signature": "abc", "Content-Type": "application/json"},
            timeout=10,
        )
        assert requests.get(f"{server.url}/hooks?token=t", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/hooks?token=x", timeout=10).status_code == 401
    assert sent.status_code == 200
    [request] = catcher.take()
    assert request.body == b'{"id": 1}' and request.query == {"token": "t"}
    assert (
        request.header("x-signature") == "abc"
        and request.header("CONTENT-TYPE") == "application/json"
    )
    assert catcher.take() == []


def test_an_outage_answers_every_request_until_it_ends() -> None:
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])  # type: ignore[operator]
        return [b"ok"]

    outage = Outage(app)
    with serve(outage) as server:
        with outage.during(503):
            down = requests.get(f"{server.url}/api/x?a=1", timeout=10)
        up = requests.get(f"{server.url}/api/x", timeout=10)
    assert down.status_code == 503 and down.json()["query"] == "a=1"
    assert up.text == "ok" and outage.failures == 1
