"""The API token goes only to https://<subdomain>.zendesk.com, or to a loopback sandbox.

Issue 14: ``base_url`` accepted any host and plain http (``http://169.254.169.254/…``,
``http://10.0.0.5``), and `escbridge check` sent ``Authorization: Basic …/token:<secret>`` to a
listener there. The rule is the one Freshdesk and Zoho follow
(``escbridge.connector.kit.credential_url_problem``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import responses
from escbridge_zendesk import ZendeskConfig
from escbridge_zendesk.sandbox import ZendeskSandbox
from pydantic import ValidationError

from escbridge.cli._common import EXIT_PROBLEM
from escbridge.cli.connectors import run_check
from escbridge.connector.kit import credential_url_problem
from escbridge.sandbox import serve

TOKEN = "zd-token-that-must-stay-home-0123456789"
AUTH = {"email": "escbridge@acme.example", "api_token": TOKEN}


def config(**values: Any) -> ZendeskConfig:
    return ZendeskConfig.model_validate({**AUTH, **values})


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5",
        "https://10.0.0.5",
        "https://evil.example",
        "http://acme.zendesk.com",  # the token in clear text
        "https://acme.zendesk.com.evil.example",
        "https://acme.zendesk.com@evil.example",
        "https://evil.example\\@acme.zendesk.com",
        "https://user:pw@acme.zendesk.com",
        "https://acme%2ezendesk.com",
        "https://zendesk.com",
        "https://a.b.zendesk.com",
        "https://acme.zendesk.com:8443",
        "https://acme.zendesk.com/api/v2",
        "http://127.0.0.1:8080",  # loopback only with sandbox: true
        "http://localhost:8080",
        "ftp://acme.zendesk.com",
        "acme.zendesk.com",
    ],
)
def test_base_url_outside_zendesk_is_refused(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        config(base_url=url)
    (error,) = raised.value.errors()
    assert error["loc"] == ("base_url",)
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "api_url"),
    [
        ("https://acme.zendesk.com", "https://acme.zendesk.com/api/v2"),
        ("https://acme.zendesk.com/", "https://acme.zendesk.com/api/v2"),
        ("https://acme-eu.zendesk.com:443", "https://acme-eu.zendesk.com:443/api/v2"),
    ],
)
def test_the_accounts_own_address_is_accepted(url: str, api_url: str) -> None:
    assert config(base_url=url).api_url == api_url
    assert config(subdomain="acme").api_url == "https://acme.zendesk.com/api/v2"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5000", "http://localhost:1", "http://[::1]:2", "https://127.0.0.2"]
)
def test_a_loopback_sandbox_needs_sandbox_true(url: str) -> None:
    assert config(base_url=url, sandbox=True).api_url == f"{url}/api/v2"


@pytest.mark.parametrize(
    "values",
    [
        {"base_url": "http://10.0.0.5", "sandbox": True},
        {"base_url": "https://acme.zendesk.com", "sandbox": True},
        {"base_url": "http://127.0.0.1.evil.example", "sandbox": True},
        {"subdomain": "acme", "sandbox": True},
    ],
)
def test_sandbox_true_never_opens_another_host(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"127\.0\.0\.1|loopback"):
        config(**values)


def test_the_shared_rule_is_the_one_every_connector_can_use() -> None:
    zoho = ("zoho.com", "zoho.eu")
    assert credential_url_problem("https://desk.zoho.eu", domains=zoho, sandbox=False) is None
    assert credential_url_problem("https://desk.zoho.eu.x.io", domains=zoho, sandbox=False)
    assert credential_url_problem("http://127.0.0.1:1", domains=(), sandbox=True) is None
    assert "sandbox: true" in str(
        credential_url_problem("http://127.0.0.1:1", domains=zoho, sandbox=False)
    )
    assert credential_url_problem("http://[::1", domains=zoho, sandbox=True) == (
        "is not a valid URL"
    )


# --------------------------------------------------------------------------- escbridge check


class _Listener(BaseHTTPRequestHandler):
    """Records every request it gets (what a hostile host at a mistyped URL would see)."""

    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Redirector(BaseHTTPRequestHandler):
    """Answers every request with a redirect to ``target`` (another host, as far as the
    client can tell: another port)."""

    target: str

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", f"{self.target}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def listener() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    with _serving(type("Listener", (_Listener,), {"seen": seen})) as url:
        yield url, seen


def write_config(directory: Path, base_url: str, *, sandbox: bool = False) -> argparse.Namespace:
    (directory / "matrix.yaml").write_text(
        "version: 1\nname: m\nlevels:\n  - id: l1\n    name: L1\n    groups: {'*': Support}\n"
        "rules: []\n",
        encoding="utf-8",
    )
    (directory / "escbridge.yaml").write_text(
        "matrix: matrix.yaml\n"
        "instances:\n"
        "  eu:\n"
        "    type: zendesk\n"
        f"    base_url: {base_url}\n"
        + ("    sandbox: true\n" if sandbox else "")
        + "    email: escbridge@sandbox.example\n"
        "    api_token: ${ZENDESK_API_TOKEN}\n",
        encoding="utf-8",
    )
    return argparse.Namespace(config=str(directory / "escbridge.yaml"), instance=[])


def test_check_sends_nothing_to_a_listener_at_a_mistyped_url(
    listener: tuple[str, list[dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = listener
    monkeypatch.setenv("ZENDESK_API_TOKEN", TOKEN)
    out = io.StringIO()
    assert run_check(write_config(tmp_path, url), out=out) == EXIT_PROBLEM
    assert seen == []  # not one request, so no Authorization header
    text = out.getvalue()
    assert "NOT READY: invalid settings" in text and "base_url" in text
    assert "sandbox: true" in text and TOKEN not in text


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254", "http://10.0.0.5", "https://evil.example"]
)
def test_check_never_calls_a_foreign_host(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZENDESK_API_TOKEN", TOKEN)
    out = io.StringIO()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as calls:
        assert run_check(write_config(tmp_path, url), out=out) == EXIT_PROBLEM
        assert len(calls.calls) == 0
    assert TOKEN not in out.getvalue()


def test_check_talks_to_a_loopback_sandbox_when_sandbox_is_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = ZendeskSandbox()
    monkeypatch.setenv("ZENDESK_API_TOKEN", "sandbox-admin-token")
    with serve(emulator.app) as server:
        out = io.StringIO()
        run_check(write_config(tmp_path, server.url, sandbox=True), out=out)
    emulator.webhooks.close()
    assert "connected as escbridge <escbridge@sandbox.example>" in out.getvalue()
    basic = base64.b64encode(b"escbridge@sandbox.example/token:sandbox-admin-token").decode()
    assert basic not in out.getvalue()


def test_a_redirect_from_the_configured_host_does_not_carry_the_token(
    listener: tuple[str, list[dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere, seen = listener
    monkeypatch.setenv("ZENDESK_API_TOKEN", TOKEN)
    with _serving(type("Redirector", (_Redirector,), {"target": elsewhere})) as configured:
        run_check(write_config(tmp_path, configured, sandbox=True), out=io.StringIO())
    assert seen, "the redirect was followed"
    assert all("Authorization" not in headers for headers in seen), seen
