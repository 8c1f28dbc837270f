"""Nothing for strangers: /metrics only for the scraper, and no way to probe instance names.

- /metrics answers with the bearer token, or on the metrics listener, or both; with neither it
  does not exist (404, the answer of any unknown path) — whoever the client is.
- A POST or GET that is not genuine gets one answer whether the URL names a configured instance
  or not: same status, body and headers (but the request id). The reason is in the log only.
- Zoho Desk's URL-validation GET gets its 200 only with the URL token of the instance.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from escbridge_webhooks import ReceiverSettings, create_app
from escbridge_webhooks.metrics import MetricsAccess
from escbridge_webhooks.serve import ServeOptions, serve
from webhook_support import (
    ENV,
    METRICS_TOKEN,
    SCRAPE,
    SECRET,
    LogLines,
    MakeRig,
    Rig,
    event_body,
    json_of,
    signed,
    write_config,
)

from escbridge.cli.serve import configure_serve_parser, run_serve
from escbridge.config import parse_config
from escbridge.processing import build_processor

ZOHO_URL_TOKEN = "zoho-url-token-0123456789abcdef"
ZOHO_ENV = {
    **ENV,
    "ZOHO_CLIENT_SECRET": "zoho-client-secret",
    "ZOHO_REFRESH_TOKEN": "zoho-refresh-token",
    "ZOHO_URL_TOKEN": ZOHO_URL_TOKEN,
}
ZOHO_INSTANCE = """\
  desk:
    type: zohodesk
    org_id: "2389290"
    client_id: strangers-test
    client_secret: ${ZOHO_CLIENT_SECRET}
    refresh_token: ${ZOHO_REFRESH_TOKEN}
    sandbox: true
    desk_url: http://127.0.0.1:9
    accounts_url: http://127.0.0.1:9
    jwks_url: http://127.0.0.1:9/jwks
    webhook_id: "700001"
    webhook_token: ${ZOHO_URL_TOKEN}
    agent_id: "42"
    token_cache: ""
"""
WWW_AUTHENTICATE = 'Bearer realm="escbridge metrics"'


def answer(response: Any) -> tuple[int, bytes, dict[str, str]]:
    """What a prober sees: status, body, headers, without the per-request X-Request-Id."""
    headers = {k: v for k, v in response.headers.items() if k != "X-Request-Id"}
    return response.status_code, response.get_data(), headers


@pytest.fixture
def two_helpdesks(tmp_path: Path, sqlite_url: str) -> Iterator[Rig]:
    """A receiver with a Zendesk instance "eu" and a Zoho Desk instance "desk"."""
    path = write_config(tmp_path, sqlite_url)
    path.write_text(path.read_text(encoding="utf-8") + ZOHO_INSTANCE, encoding="utf-8")
    config = parse_config(path.read_text(encoding="utf-8"), str(path), tmp_path, env=ZOHO_ENV)
    processor = build_processor(config)
    app = create_app(config, processor=processor, settings=ReceiverSettings())
    yield Rig(app, app.test_client(), processor)
    processor.store.close()


# --- /metrics: the bearer token ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": METRICS_TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "longer", "shorter", "basic", "no scheme", "empty"],
)
def test_metrics_without_the_right_token_is_401_and_shows_nothing(
    rig: Rig, headers: dict[str, str]
) -> None:
    post = rig.client.post("/webhooks/eu", data=b"{}")  # something to count
    assert post.status_code == 401
    response = rig.client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert json_of(response) == {"error": "unauthorized"}
    assert b"escbridge_" not in response.get_data()


def test_metrics_with_the_right_token_is_the_prometheus_text(rig: Rig) -> None:
    rig.client.post("/webhooks/eu", data=b"{}")
    for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive (RFC 7235)
        response = rig.client.get(
            "/metrics", headers={"Authorization": f"{scheme} {METRICS_TOKEN}"}
        )
        assert response.status_code == 200, scheme
        assert response.content_type.startswith("text/plain")
        text = response.get_data(as_text=True)
        assert 'escbridge_webhooks_rejected_total{instance="eu",reason="unauthorized"}' in text


def test_with_neither_token_nor_bind_metrics_does_not_exist_even_for_loopback(
    make_rig: MakeRig, sqlite_url: str, log_lines: LogLines
) -> None:
    rig = make_rig(sqlite_url, metrics_token=None)
    assert any("/metrics: off (404)" in e["msg"] for e in log_lines.entries())  # said at start
    unknown_path = answer(rig.client.get("/nothing-here"))
    # The test client is 127.0.0.1, as is every request behind a reverse proxy on the host.
    for headers in ({}, SCRAPE, {"X-Forwarded-For": "127.0.0.1"}):
        response = rig.client.get("/metrics", headers=headers)
        assert answer(response) == unknown_path
        assert response.status_code == 404


# --- /metrics: the listener of its own -------------------------------------------------------


class Connection:
    """The accepted socket gunicorn puts in the environ (``gunicorn.socket``)."""

    def __init__(self, local: Any) -> None:
        self.local = local

    def getsockname(self) -> Any:
        return self.local


def scrape(rig: Rig, local: Any, headers: Mapping[str, str] = SCRAPE, **environ: Any) -> int:
    """A scrape that gunicorn accepted on the local address ``local``."""
    overrides = {"gunicorn.socket": Connection(local), **environ}
    return int(
        rig.client.get("/metrics", headers=dict(headers), environ_overrides=overrides).status_code
    )


def test_under_gunicorn_metrics_answers_only_on_the_metrics_bind(
    make_rig: MakeRig, sqlite_url: str
) -> None:
    rig = make_rig(sqlite_url, metrics_token=None, metrics_bind="127.0.0.1:9100")
    assert scrape(rig, ("127.0.0.1", 9100), headers={}) == 200
    assert scrape(rig, ("127.0.0.1", 8000), headers={}) == 404  # the webhook listener
    # What the client claims does not count: only where the connection arrived.
    claimed = {"SERVER_PORT": "9100", "SERVER_NAME": "127.0.0.1"}
    assert scrape(rig, ("127.0.0.1", 8000), {"Host": "127.0.0.1:9100"}, **claimed) == 404
    assert rig.client.get("/metrics", headers={"Host": "127.0.0.1:9100"}).status_code == 404


@pytest.mark.parametrize(
    ("bind", "local", "status"),
    [
        ("0.0.0.0:9100", ("10.1.2.3", 9100), 200),  # any address, that port
        ("0.0.0.0:9100", ("10.1.2.3", 8000), 404),
        ("[::]:9100", ("::1", 9100, 0, 0), 200),
        ("10.0.0.5:9100", ("10.0.0.6", 9100), 404),  # another address of the host
        ("127.0.0.1:9100", ("::ffff:127.0.0.1", 9100, 0, 0), 200),  # IPv4 on an IPv6 socket
        ("[::1]:9100", ("::1", 9100, 0, 0), 200),
        ("localhost:9100", ("127.0.0.1", 9100), 200),  # a name, resolved as gunicorn does
        ("unix:/run/escbridge/metrics.sock", "/run/escbridge/metrics.sock", 200),
        ("unix:/run/escbridge/metrics.sock", "/run/escbridge/web.sock", 404),
        ("unix:/run/escbridge/metrics.sock", ("127.0.0.1", 9100), 404),
    ],
)
def test_the_metrics_bind_is_matched_on_the_local_address(
    bind: str, local: Any, status: int
) -> None:
    access = MetricsAccess(bind=bind)
    refusal = access.refusal({"gunicorn.socket": Connection(local)})
    assert (refusal or 200) == status


def test_with_both_a_scrape_needs_the_bind_and_the_token(
    make_rig: MakeRig, sqlite_url: str
) -> None:
    rig = make_rig(sqlite_url, metrics_bind="127.0.0.1:9100")  # and the fixture's token
    assert scrape(rig, ("127.0.0.1", 9100)) == 200
    assert scrape(rig, ("127.0.0.1", 9100), headers={}) == 401
    assert scrape(rig, ("127.0.0.1", 8000)) == 404


@contextlib.contextmanager
def serving(options: ServeOptions) -> Iterator[tuple[int, list[str]]]:
    """`escbridge serve` in a thread: (the webhook port, what it printed); stopped after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    said: list[str] = []
    ports: list[int] = []
    listening, stop = threading.Event(), threading.Event()

    def ready(port: int) -> None:
        ports.append(port)
        listening.set()

    thread = threading.Thread(
        target=serve, args=(options,), kwargs={"stop": stop, "ready": ready, "say": said.append}
    )
    thread.start()
    try:
        assert listening.wait(30), "escbridge serve did not start"
        yield ports[0], said
    finally:
        stop.set()
        thread.join(30)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert not thread.is_alive()


def get(address: str, path: str, headers: Mapping[str, str] | None = None) -> int:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path, headers=dict(headers or {}))
        return connection.getresponse().status
    finally:
        connection.close()


def test_escbridge_serve_answers_metrics_only_on_its_own_listener(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = write_config(tmp_path, sqlite_url)
    options = ServeOptions(
        config=str(config),
        port=0,
        workers=0,
        metrics_bind="127.0.0.1:0",
        metrics_token=METRICS_TOKEN,
    )
    assert METRICS_TOKEN not in repr(options)
    with serving(options) as (port, said):
        [line] = [s for s in said if "/metrics on" in s]
        found = re.search(r"/metrics on (127\.0\.0\.1:\d+) only", line)
        assert found, line
        metrics_at, web_at = found.group(1), f"127.0.0.1:{port}"
        assert metrics_at != web_at
        assert get(metrics_at, "/metrics", SCRAPE) == 200
        assert get(metrics_at, "/metrics") == 401  # the token is still wanted there
        assert get(web_at, "/metrics", SCRAPE) == 404  # the webhook listener has none
        assert get(web_at, "/healthz") == 200


def test_serve_refuses_a_weak_token_or_a_bad_bind_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    configure_serve_parser(parser)
    config = ["--config", str(tmp_path / "never-read.yaml")]
    monkeypatch.setenv("ESCBRIDGE_METRICS_TOKEN", "short-secret")
    assert run_serve(parser.parse_args(config)) == 2
    out, err = capsys.readouterr()  # errors are on stderr
    assert "ESCBRIDGE_METRICS_TOKEN must be at least 16 characters" in err
    assert "short-secret" not in out + err
    monkeypatch.setenv("ESCBRIDGE_METRICS_TOKEN", METRICS_TOKEN)
    assert run_serve(parser.parse_args([*config, "--metrics-bind", "9100"])) == 2
    assert "is not host:port or unix:/path" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gunicorn(
    tmp_path: Path, config: Path, binds: list[str], env: Mapping[str, str]
) -> Iterator[None]:
    """A real gunicorn with the shipped settings, listening on every address of ``binds``."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn"),
                *("-c", "python:escbridge_webhooks.gunicorn_conf"),
                *(arg for bind in binds for arg in ("--bind", bind)),
                *("--workers", "1"),
                "escbridge_webhooks.wsgi:app",
            ],
            env={
                **os.environ,
                **env,
                "ESCBRIDGE_CONFIG": str(config),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        _until(lambda: _up(binds[0], process, log_path), what="gunicorn to be ready")
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _up(address: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    assert process.poll() is None, log_path.read_text(errors="replace")
    try:
        return get(address, "/healthz") == 200
    except OSError:
        return False


def _until(check: Callable[[], bool], *, what: str, attempts: int = 600) -> None:
    """Polls ``check`` until true: the count is a failure guard (about 60 s), nothing more."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.slow
def test_gunicorn_answers_metrics_only_on_the_metrics_bind(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path, sqlite_url)
    web_at = f"127.0.0.1:{free_port()}"
    metrics_at = f"127.0.0.1:{free_port()}"
    env = {**ENV, "ESCBRIDGE_METRICS_BIND": metrics_at}
    with gunicorn(tmp_path, config, [web_at, metrics_at], env):
        assert get(metrics_at, "/metrics") == 200
        assert get(web_at, "/metrics") == 404
        # A Host header naming the metrics listener changes nothing.
        assert get(web_at, "/metrics", {"Host": metrics_at}) == 404
        assert get(web_at, "/healthz") == 200


# --- the token is a secret -------------------------------------------------------------------


def test_the_token_is_masked_in_logs_and_never_printed(
    log_lines: LogLines, make_rig: MakeRig, sqlite_url: str
) -> None:
    rig = make_rig(sqlite_url)  # guarded by METRICS_TOKEN: create_app installs it for the mask
    logging.getLogger("escbridge.test").warning("configured with %s", METRICS_TOKEN)
    assert METRICS_TOKEN not in log_lines.text and "[redacted]" in log_lines.text
    settings = ReceiverSettings(metrics_token=METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(settings)
    assert rig.client.get("/metrics", headers=SCRAPE).status_code == 200


def test_settings_from_the_environment_and_their_checks() -> None:
    env = {"ESCBRIDGE_METRICS_TOKEN": METRICS_TOKEN, "ESCBRIDGE_METRICS_BIND": "0.0.0.0:9100"}
    settings = ReceiverSettings.from_env(env)
    assert (settings.metrics_token, settings.metrics_bind) == (METRICS_TOKEN, "0.0.0.0:9100")
    assert ReceiverSettings.from_env({"ESCBRIDGE_METRICS_TOKEN": ""}).metrics_token is None
    for token in ("short-secret", "has spaces in the middle of it", "ünïcödé-token-0123456789"):
        with pytest.raises(ValueError, match="at least 16 characters") as raised:
            MetricsAccess(token=token)
        assert token not in str(raised.value)
    for bind in ("9100", "host:port", "127.0.0.1:70000", "unix:"):
        with pytest.raises(ValueError, match="ESCBRIDGE_METRICS_BIND"):
            MetricsAccess(bind=bind)


# --- instance names cannot be probed ---------------------------------------------------------


def test_a_post_to_an_unknown_name_and_an_unsigned_post_to_a_known_one_look_the_same(
    two_helpdesks: Rig, log_lines: LogLines
) -> None:
    rig = two_helpdesks
    body = event_body(77)
    probes = {
        "unknown name": ("/webhooks/no-such-desk", {}),
        "unknown name, signed": ("/webhooks/no-such-desk", signed(body)),
        "Zendesk, unsigned": ("/webhooks/eu", {"Content-Type": "application/json"}),
        "Zendesk, wrong secret": ("/webhooks/eu", signed(body, secret="a-guess")),
        "Zoho, no URL token": ("/webhooks/desk", {"Content-Type": "application/json"}),
        "Zoho, wrong URL token": ("/webhooks/desk?token=guess", {}),
    }
    answers = {
        name: answer(rig.client.post(url, data=body, headers=headers))
        for name, (url, headers) in probes.items()
    }
    first = answers["unknown name"]
    assert first[0] == 401 and first[1] == b'{"error":"invalid request"}\n'
    assert all(seen == first for seen in answers.values()), answers
    assert rig.pending() == 0
    # The operator still learns why, from the log only.
    lines = [e for e in log_lines.entries() if e.get("logger") == "escbridge_webhooks"]
    reasons = {e["outcome"]: e["reason"] for e in lines}
    assert reasons["unknown_instance"] == "no instance 'no-such-desk'"
    assert reasons["unauthorized"]
    assert SECRET not in log_lines.text and ZOHO_URL_TOKEN not in log_lines.text


def test_a_get_answers_200_only_to_zoho_desks_validation_with_the_url_token(
    two_helpdesks: Rig, log_lines: LogLines
) -> None:
    rig = two_helpdesks
    valid = rig.client.get(f"/webhooks/desk?token={ZOHO_URL_TOKEN}")
    assert valid.status_code == 200 and json_of(valid) == {"status": "ok"}
    probes = [
        "/webhooks/no-such-desk",
        f"/webhooks/no-such-desk?token={ZOHO_URL_TOKEN}",
        "/webhooks/desk",
        "/webhooks/desk?token=guess",
        f"/webhooks/desk?token={ZOHO_URL_TOKEN[:-1]}",
        f"/webhooks/eu?token={ZOHO_URL_TOKEN}",  # Zendesk sends no validation GET
    ]
    refused = answer(rig.client.post("/webhooks/no-such-desk", data=b""))
    for url in probes:
        assert answer(rig.client.get(url)) == refused, url
    assert rig.pending() == 0
    outcomes = [e["outcome"] for e in log_lines.entries() if e.get("outcome")]
    assert outcomes.count("unknown_instance") == 3 and outcomes.count("unauthorized") == 4
    assert ZOHO_URL_TOKEN not in log_lines.text


def test_unknown_names_are_still_counted_under_one_label(rig: Rig) -> None:
    for name in ("a", "b", "c"):
        rig.client.post(f"/webhooks/{name}", data=b"{}")
    text = rig.client.get("/metrics", headers=SCRAPE).get_data(as_text=True)
    assert 'escbridge_webhooks_rejected_total{instance="-",reason="unknown_instance"} 3.0' in text
    assert 'instance="a"' not in text
