"""The shared emulator machinery every connector's sandbox is built on."""

from __future__ import annotations

import pytest
import requests

from escbridge.connector.kit import SlidingWindow
from escbridge.sandbox import Change, RecordStore, WebhookDispatcher, serve
from escbridge.testing import FakeClock


def test_limiter_allows_up_to_the_limit_per_sliding_window() -> None:
    clock = FakeClock()
    lim = SlidingWindow(3, 60, clock.monotonic)
    assert [lim.acquire().allowed for _ in range(3)] == [True, True, True]
    refused = lim.acquire()
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == 60 and refused.retry_after_header == "60"
    clock.advance(seconds=30)
    assert lim.peek().reset_seconds == 30
    clock.advance(seconds=30)  # the first three expire together
    assert lim.acquire().allowed and lim.peek().remaining == 2


def test_limiter_costs_and_the_wait_for_a_batch_to_fit() -> None:
    clock = FakeClock()
    lim = SlidingWindow(100, 60, clock.monotonic)
    assert lim.acquire(60).allowed
    clock.advance(seconds=10)
    assert lim.acquire(30).allowed
    refused = lim.acquire(50)  # needs the first 60 to expire: 50 s from now
    assert not refused.allowed and refused.retry_after == pytest.approx(50)
    assert lim.peek().remaining == 10
    too_big = lim.acquire(101)
    assert not too_big.allowed and too_big.retry_after == 60
    with pytest.raises(ValueError):
        SlidingWindow(0)


def test_record_store_updates_atomically_and_notifies_with_copies() -> None:
    store = RecordStore()
    changes: list[Change] = []
    store.subscribe(changes.append)
    first = store.add({"name": "a", "tags": []}, actor=7)
    assert first["id"] == 1 and 1 in store and len(store) == 1

    def boom(rec: dict[str, object]) -> None:
        rec["name"] = "half-written"
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        store.update(1, boom)
    assert store.get(1) == {"id": 1, "name": "a", "tags": []}  # nothing half-written

    after = store.update(1, lambda r: r["tags"].append("x"), actor=8)
    assert after["tags"] == ["x"]
    assert [(c.kind, c.actor) for c in changes] == [("created", 7), ("updated", 8)]
    assert changes[1].before == {"id": 1, "name": "a", "tags": []}
    changes[1].after["tags"].append("mutated by a listener")  # type: ignore[index]
    assert store.get(1) == {"id": 1, "name": "a", "tags": ["x"]}


def test_record_store_orders_by_latest_change() -> None:
    store = RecordStore()
    for name in "abc":
        store.add({"name": name})
    store.update(1, lambda r: r.update(name="a2"))
    assert [r["name"] for _, r in store.ordered_by_change()] == ["b", "c", "a2"]
    seqs = [s for s, _ in store.ordered_by_change()]
    assert seqs == sorted(seqs)
    page = store.ordered_by_change(start=lambda s, r: s > seqs[0], limit=1)
    assert [r["name"] for _, r in page] == ["c"]
    assert store.ordered_by_change(stop=lambda r: r["name"] == "c") == [(seqs[0], store.get(2))]


def test_server_thread_serves_on_loopback_and_webhooks_are_delivered_in_order() -> None:
    from flask import Flask, request

    received: list[bytes] = []
    app = Flask("hook")

    @app.post("/hook")
    def hook() -> tuple[str, int]:
        received.append(request.get_data())
        return "", 204

    dispatcher = WebhookDispatcher()
    with serve(app) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        for i in range(5):
            dispatcher.send(f"{server.url}/hook", f"{i}".encode(), {"X-N": str(i)})
        assert dispatcher.flush(5)
        assert received == [b"0", b"1", b"2", b"3", b"4"]
        assert [d.status for d in dispatcher.deliveries] == [204] * 5
    dispatcher.send(f"{server.url}/hook", b"late", {})
    assert dispatcher.flush(15)
    assert dispatcher.deliveries[-1].status is None and dispatcher.deliveries[-1].error
    dispatcher.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url, timeout=1)
