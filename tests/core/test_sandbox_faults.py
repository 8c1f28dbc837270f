"""Network faults in the emulators (escbridge.sandbox.faults), seen by a plain HTTP client.

Each kind is checked against a served emulator with ``requests``: what the client sees (a
status, or a real connection reset) and whether the write landed. Nothing sleeps and hopes: late
writes are released by the test, and slow answers are waited for with a bounded loop on the
emulator's state.
"""

from __future__ import annotations

import argparse
import io
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, request
from polling import wait_for

from escbridge.sandbox import ServerThread, serve
from escbridge.sandbox.app import Emulator, respond
from escbridge.sandbox.faults import FaultPlan, FaultRule, parse_fault


class Items(Emulator):
    """The smallest emulator: ``PUT /api/items/<id>`` stores a value, ``GET`` reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[int, Any] = {}
        self.writes = 0
        self.app: Flask = self.new_app("items")
        items = self

        def put(item_id: int) -> Any:
            body = request.get_json(silent=True) or {}
            items.values[item_id] = body.get("value")
            items.writes += 1
            return respond({"id": item_id, "value": body.get("value")})

        def get(item_id: int) -> Any:
            return respond({"id": item_id, "value": items.values.get(item_id)})

        self.app.add_url_rule("/api/items/<int:item_id>", "put", put, methods=["PUT"])
        self.app.add_url_rule("/api/items/<int:item_id>", "get", get, methods=["GET"])


@pytest.fixture
def served() -> Iterator[tuple[Items, str]]:
    items = Items()
    server = serve(items.app)
    try:
        yield items, server.url
    finally:
        items.faults.close()
        server.stop()


def put(url: str, item: int, value: str, timeout: float = 10.0) -> requests.Response:
    return requests.put(f"{url}/api/items/{item}", json={"value": value}, timeout=timeout)


def assert_reset(error: BaseException) -> None:
    """A real TCP reset, as requests reports it: ConnectionError caused by ECONNRESET."""
    assert isinstance(error, requests.ConnectionError)
    text = repr(error)
    assert "ConnectionResetError" in text or "Connection reset" in text, text


# --------------------------------------------------------------------------- each kind


def test_lost_answer_applies_the_write_and_answers_504(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "lost_answer")
    lost = put(url, 1, "a")
    assert lost.status_code == 504 and items.values == {1: "a"}
    assert put(url, 1, "b").status_code == 200  # times=1: the next one gets through
    assert items.faults.counts["lost_answer"] == 1 and items.writes == 2


def test_lost_answer_can_reset_the_connection_after_applying(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "lost_answer", answer="reset")
    with pytest.raises(requests.ConnectionError) as caught:
        put(url, 1, "a")
    assert_reset(caught.value)
    assert items.values == {1: "a"} and items.faults.fired("lost_answer") == 1


def test_lost_answer_does_not_fire_on_a_refused_write(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "lost_answer")
    refused = requests.put(f"{url}/api/items/x", json={}, timeout=10)  # no such route: 404
    assert refused.status_code == 404 and items.faults.fired() == 0
    assert put(url, 1, "a").status_code == 504  # the rule was still there for a real write


def test_reset_refuses_the_write_with_a_real_connection_reset(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "reset")
    with pytest.raises(requests.ConnectionError) as caught:
        put(url, 1, "a")
    assert_reset(caught.value)
    assert items.values == {} and items.faults.fired("reset") == 1
    assert put(url, 1, "b").status_code == 200 and items.values == {1: "b"}


def test_error_answers_a_configurable_5xx_without_applying(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "error", times=2)
    items.faults.add("PUT", "/api/items/*", "error", status=500)
    assert [put(url, 1, "a").status_code for _ in range(4)] == [503, 503, 500, 200]
    assert items.writes == 1 and items.faults.fired("error") == 3


def test_throttle_answers_429_with_retry_after(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "throttle", retry_after=7)
    throttled = put(url, 1, "a")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert items.values == {} and items.faults.fired("throttle") == 1


def test_late_applies_the_write_when_the_test_releases_it(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "late")
    assert put(url, 1, "a").status_code == 504
    assert items.values == {} and items.faults.pending_late == 1
    assert put(url, 1, "b").status_code == 200  # another write overtakes the late one
    assert items.faults.release_late() == 1
    assert items.values == {1: "a"} and items.faults.pending_late == 0
    assert items.faults.counts["late"] == 1 and items.faults.counts["late_applied"] == 1
    assert items.faults.release_late() == 0  # applied once only


def test_late_after_a_reset(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "late", answer="reset")
    with pytest.raises(requests.ConnectionError) as caught:
        put(url, 1, "a")
    assert_reset(caught.value)
    assert items.values == {}
    items.faults.release_late()
    assert items.values == {1: "a"}


def test_late_with_no_answer_until_the_client_gives_up(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "late", answer="hang")
    with pytest.raises(requests.ReadTimeout):
        put(url, 1, "a", timeout=0.3)
    assert items.values == {}
    assert items.faults.release_late() == 1  # the hanging request thread is let go too
    assert items.values == {1: "a"}


def test_late_after_a_delay_lands_on_its_own(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "late", delay=0.05)
    assert put(url, 1, "a").status_code == 504
    wait_for(lambda: items.values == {1: "a"})
    wait_for(lambda: items.faults.counts["late_applied"] == 1)


def test_slow_applies_at_once_and_holds_the_answer(served: tuple[Items, str]) -> None:
    items, url = served
    items.faults.add("PUT", "/api/items/*", "slow", delay=60)
    with pytest.raises(requests.ReadTimeout):
        put(url, 1, "a", timeout=0.3)
    wait_for(lambda: items.values == {1: "a"})
    assert items.faults.fired("slow") == 1


# --------------------------------------------------------------------------- matching, storms


def test_patterns_methods_and_the_control_routes() -> None:
    rule = FaultRule("put,post", "/api/v2/tickets/*", "error")
    assert rule.matches("PUT", "/api/v2/tickets/5") and rule.matches("POST", "/api/v2/tickets/x")
    assert not rule.matches("PUT", "/api/v2/tickets/5/notes") and not rule.matches("GET", "/x")
    deep = FaultRule("*", "/api/**", "error")
    assert deep.matches("DELETE", "/api/v1/tickets/5/comments")
    regex = FaultRule("POST", r"re:/api/v2/tickets/\d+/notes", "error")
    assert regex.matches("POST", "/api/v2/tickets/12/notes")
    assert not regex.matches("POST", "/api/v2/tickets/x/notes")
    items = Items()
    items.faults.add("*", "/**", "error", times=None)
    client = items.app.test_client()
    assert client.get("/api/items/1").status_code == 503
    assert client.get("/__sandbox/stats").status_code == 200  # control routes never fail


def draws(seed: int) -> list[int]:
    items = Items()
    items.faults.seed = seed
    items.faults.add("PUT", "/api/items/*", "error", probability=0.3, times=None)
    items.faults.add("PUT", "/api/items/*", "throttle", probability=0.2, times=None)
    client = items.app.test_client()
    return [client.put(f"/api/items/{i % 7}", json={"value": i}).status_code for i in range(200)]


def test_a_storm_is_seeded_and_reproducible() -> None:
    first, again, other = draws(11), draws(11), draws(12)
    assert first == again and first != other
    assert 40 <= first.count(503) <= 80  # 30% of 200
    assert 15 <= first.count(429) <= 45  # 20% of what is left
    assert first.count(200) == 200 - first.count(503) - first.count(429)


def test_the_draw_does_not_depend_on_other_paths_interleaving() -> None:
    """Per method and path, the n-th request draws the same whatever came between."""
    a, b = FaultPlan(seed=3), FaultPlan(seed=3)
    for plan in (a, b):
        plan.add("PUT", "/t/*", "error", probability=0.5, times=None)
    seq_a = [a._take("PUT", "/t/1") is not None for _ in range(20)]
    seq_b = []
    for _ in range(20):
        b._take("PUT", "/t/2")  # another ticket's traffic in between
        seq_b.append(b._take("PUT", "/t/1") is not None)
    assert seq_a == seq_b


# --------------------------------------------------------------------------- scripting


def test_fault_specs_parse_and_refuse_nonsense() -> None:
    assert parse_fault("PUT /api/v2/tickets/*=lost_answer") == {
        "method": "PUT",
        "path": "/api/v2/tickets/*",
        "kind": "lost_answer",
    }
    spec = parse_fault("POST /api/v2/tickets/*/notes=late,delay=8,answer=reset,times=always")
    assert spec["delay"] == 8.0 and spec["answer"] == "reset" and spec["times"] is None
    assert parse_fault("* /**=error,probability=0.1")["times"] is None
    for bad in (
        "PUT=error",
        "PUT /x",
        "PUT /x=explode",
        "PUT /x=error,colour=red",
        "PUT /x=slow",
        "PUT /x=error,answer=reset",
        "PUT /x=error,probability=2",
    ):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_a_running_emulator_is_scripted_over_http(served: tuple[Items, str]) -> None:
    items, url = served
    added = requests.post(
        f"{url}/__sandbox/faults",
        json={"spec": "PUT /api/items/*=late,times=2"},
        timeout=10,
    )
    assert added.status_code == 201 and added.json()["added"][0]["kind"] == "late"
    more = requests.post(
        f"{url}/__sandbox/faults",
        json={"method": "GET", "path": "/api/items/*", "kind": "throttle", "retry_after": 3},
        timeout=10,
    )
    assert more.status_code == 201
    assert put(url, 1, "a").status_code == 504
    state = requests.get(f"{url}/__sandbox/faults", timeout=10).json()
    assert state["counts"] == {"late": 1} and state["pending_late"] == 1
    assert [r["kind"] for r in state["rules"]] == ["late", "throttle"]
    released = requests.post(f"{url}/__sandbox/faults/release", timeout=10).json()
    assert released == {"released": 1} and items.values == {1: "a"}
    assert requests.delete(f"{url}/__sandbox/faults", timeout=10).json()["rules"] == []
    assert put(url, 1, "b").status_code == 200
    bad = requests.post(f"{url}/__sandbox/faults", json={"spec": "PUT /x=nope"}, timeout=10)
    assert bad.status_code == 400


def emulator_apps() -> list[tuple[str, Callable[[], tuple[Any, FaultPlan, str]]]]:
    def zendesk() -> tuple[Any, FaultPlan, str]:
        from escbridge_zendesk.sandbox import ZendeskSandbox

        sandbox = ZendeskSandbox()
        return sandbox.app, sandbox.faults, "/api/v2/users/me.json"

    def freshdesk() -> tuple[Any, FaultPlan, str]:
        from escbridge_freshdesk.sandbox import FreshdeskSandbox

        sandbox = FreshdeskSandbox()
        return sandbox.app, sandbox.faults, "/api/v2/agents/me"

    def zohodesk() -> tuple[Any, FaultPlan, str]:
        from escbridge_zohodesk.sandbox import create_app, emulator

        app = create_app(seed=False)
        return app, emulator(app).faults, "/api/v1/myinfo"

    return [("zendesk", zendesk), ("freshdesk", freshdesk), ("zohodesk", zohodesk)]


@pytest.mark.parametrize(("name", "make"), emulator_apps(), ids=[n for n, _ in emulator_apps()])
def test_every_emulator_has_the_same_faults(
    name: str, make: Callable[[], tuple[Any, FaultPlan, str]]
) -> None:
    app, faults, path = make()
    faults.add("GET", path, "throttle", retry_after=9)
    answer = app.test_client().get(path)
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "9")
    assert app.test_client().get("/__sandbox/faults").get_json()["counts"] == {"throttle": 1}


def test_escbridge_sandbox_takes_faults_on_the_command_line() -> None:
    from escbridge.cli.sandbox import configure_sandbox_parser, run_sandbox

    parser = argparse.ArgumentParser()
    configure_sandbox_parser(parser)
    args = parser.parse_args(
        [
            "--only",
            "zendesk",
            "--tickets",
            "0",
            "--fault",
            "PUT /api/v2/tickets/*=lost_answer,times=2",
            "--fault",
            "GET /api/v2/groups=error,status=502",
            "--fault-seed",
            "5",
        ]
    )
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def ready(sandboxes: Any) -> None:
        driver = sandboxes.running[0].driver
        seen["rules"] = [(r.kind, r.times) for r in driver.faults.rules]
        seen["seed"] = driver.faults.seed
        seen["status"] = requests.get(f"{driver.url}/api/v2/groups", timeout=10).status_code
        stop.set()

    out = io.StringIO()
    assert run_sandbox(args, out=out, stop=stop, ready=ready) == 0
    assert seen == {"rules": [("lost_answer", 2), ("error", 1)], "seed": 5, "status": 502}
    assert "fault: PUT /api/v2/tickets/*=lost_answer,times=2" in out.getvalue()
    bad = parser.parse_args(["--fault", "PUT /x=explode"])
    assert run_sandbox(bad, out=io.StringIO()) == 2


def test_server_thread_still_serves_plain_apps() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with ServerThread(app) as server:
        assert requests.get(server.url, timeout=10).text == "ok"
