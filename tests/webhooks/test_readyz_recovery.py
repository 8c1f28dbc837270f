"""The receiver when its store goes away and comes back: 503 and "not ready" while it is away,
every redelivery taken and "ready" once it is back — the same app, never restarted.

SQLite: the database file made read-only, then writable again (tests/store_outage.py); the
receiver's connections were opened while it was read-only. PostgreSQL: the server stopped,
then started again on the same data and port; the receiver's pooled connection dies with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from store_outage import PostgresOutage, SqliteOutage
from webhook_support import SCRAPE, MakeRig, Rig, event_body, json_of, signed

Outage = SqliteOutage | PostgresOutage

URL = "/webhooks/eu"
DELIVERIES = 20


@pytest.fixture
def outage(db_backend: str, request: pytest.FixtureRequest) -> Iterator[Outage]:
    made: Outage
    if db_backend == "sqlite":
        made = SqliteOutage(request.getfixturevalue("_sqlite_template"))
    else:
        made = PostgresOutage(
            request.getfixturevalue("postgresql_server"), request.getfixturevalue("store_url")
        )
    try:
        yield made
    finally:
        made.remove()


def _deliver(rig: Rig, bodies: list[bytes]) -> dict[int, int]:
    """Each delivery once; how many got each status code."""
    statuses: dict[int, int] = {}
    for body in bodies:
        response: Any = rig.client.post(URL, data=body, headers=signed(body))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "30"
    return statuses


def test_the_receiver_is_not_ready_while_the_store_is_away_and_takes_everything_once_back(
    outage: Outage, make_rig: MakeRig
) -> None:
    rig = make_rig(outage.url, metrics_cache_seconds=0)
    other = make_rig(outage.url)
    bodies = [event_body(ticket) for ticket in range(1, DELIVERIES + 1)]
    with outage.acting():
        # Another receiver took a delivery before and keeps the database open throughout
        # (on SQLite, a database nobody wrote to behaves differently: see store_outage.py).
        assert _deliver(other, [event_body(DELIVERIES + 1)]) == {202: 1}
        if isinstance(outage, PostgresOutage):
            assert rig.client.get("/readyz").status_code == 200  # a pooled connection
        outage.begin()

        refused = _deliver(rig, bodies)
        ready = rig.client.get("/readyz")
        metrics = rig.client.get("/metrics", headers=SCRAPE)  # reads: on SQLite they still work
        assert rig.client.get("/healthz").status_code == 200  # alive, just not ready

        outage.end()

        after = _deliver(rig, bodies)  # the helpdesk delivers each again (before any probe)
        ready_again = rig.client.get("/readyz")
        again = _deliver(rig, bodies)  # ... and once more: duplicates now
        pending = rig.pending()

    assert refused == {503: DELIVERIES}
    assert ready.status_code == 503
    assert json_of(ready)["status"] == "not ready"
    expected = (
        "store does not take writes" if isinstance(outage, SqliteOutage) else "store unreachable"
    )
    assert json_of(ready)["problems"] == [expected]
    assert metrics.status_code == 200

    assert (ready_again.status_code, json_of(ready_again)) == (200, {"status": "ready"})
    assert after == {202: DELIVERIES}  # deliveries refused after recovery: none
    assert again == {200: DELIVERIES}
    assert pending == DELIVERIES + 1
