"""The shared emulator machinery every connector's sandbox is built on."""

from __future__ import annotations

import logging
import sys
import types
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
import requests

from escbridge.connector import CAP_SANDBOX, ENTRY_POINT_GROUP, ConnectorInfo, Registry
from escbridge.connector.kit import SlidingWindow
from escbridge.sandbox import Change, RecordStore, WebhookDispatcher, serve
from escbridge.sandbox.driver import available_drivers
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


# --- finding the drivers --------------------------------------------------------------------------

DRIVER = object()  # what a connector's sandbox_driver() returns, as far as finding goes


def _sandbox_plugin(name: str, driver: Any) -> type:
    class Plugin:
        info: ClassVar[ConnectorInfo] = ConnectorInfo(
            name=name, version="1", display_name=name, capabilities=frozenset({CAP_SANDBOX})
        )

        @classmethod
        def sandbox_driver(cls) -> Any:
            if isinstance(driver, BaseException):
                raise driver
            return driver

    return Plugin


def test_a_connector_without_its_sandbox_extra_is_left_out_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = types.ModuleType("escbridge_test_sandboxes")
    module.Ready = _sandbox_plugin("ready", DRIVER)  # type: ignore[attr-defined]
    module.NoFlask = _sandbox_plugin(  # type: ignore[attr-defined]
        "noflask", ModuleNotFoundError("No module named 'flask'", name="flask")
    )
    module.NoDriver = _sandbox_plugin("nodriver", NotImplementedError())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "escbridge_test_sandboxes", module)
    registry = Registry(
        [
            EntryPoint(name, f"escbridge_test_sandboxes:{attr}", ENTRY_POINT_GROUP)
            for name, attr in (("ready", "Ready"), ("noflask", "NoFlask"), ("nodriver", "NoDriver"))
        ]
    )
    with caplog.at_level(logging.DEBUG, logger="escbridge.sandbox.driver"):
        assert available_drivers(registry) == [DRIVER]
    assert "install escbridge-noflask[sandbox]" in caplog.text
    assert "nodriver has a sandbox but no driver" in caplog.text


# --- the Flask side every emulator shares ---------------------------------------------------


def test_an_emulator_answers_refusals_in_its_helpdesk_shape_and_offers_control_routes() -> None:
    from flask import Flask

    from escbridge.sandbox.app import (
        HttpError,
        add_control_routes,
        basic_credentials,
        install,
        respond,
    )

    app = Flask("emulator")
    install(app)
    tickets: dict[int, dict[str, Any]] = {}

    @app.get("/refuse/<kind>")
    def refuse(kind: str) -> Any:
        bodies = {"json": {"error": "RecordInvalid"}, "text": "Too many requests", "empty": None}
        raise HttpError(429 if kind == "text" else 404, bodies[kind], {"Retry-After": "7"})

    @app.get("/me")
    def me() -> Any:
        return respond({"login": (basic_credentials() or ("", ""))[0]})

    def create(body: dict[str, Any]) -> dict[str, Any]:
        tickets[len(tickets) + 1] = {"id": len(tickets) + 1, **body}
        return {"ticket": tickets[len(tickets)]}

    def update(ticket_id: int, body: dict[str, Any]) -> dict[str, Any]:
        tickets[ticket_id].update(body)
        return {"ticket": tickets[ticket_id]}

    add_control_routes(app, create=create, update=update, stats=lambda: {"tickets": len(tickets)})
    client = app.test_client()

    as_json = client.get("/refuse/json")
    assert as_json.status_code == 404 and as_json.json == {"error": "RecordInvalid"}
    assert as_json.headers["Retry-After"] == "7"
    as_text = client.get("/refuse/text")
    assert as_text.status_code == 429 and as_text.content_type.startswith("text/plain")
    assert as_text.text == "Too many requests"
    assert client.get("/refuse/empty").data == b""

    assert client.get("/me", headers={"Authorization": "Basic YWdlbnQ6WA=="}).json == {
        "login": "agent"
    }
    assert client.get("/me", headers={"Authorization": "Basic not base64!"}).json == {"login": ""}

    created = client.post("/__sandbox/tickets", json={"subject": "Help"})
    assert created.status_code == 201 and created.json == {"ticket": {"id": 1, "subject": "Help"}}
    edited = client.patch("/__sandbox/tickets/1", json={"status": "open"})
    assert edited.json == {"ticket": {"id": 1, "subject": "Help", "status": "open"}}
    assert client.get("/__sandbox/stats").json == {"tickets": 1}
