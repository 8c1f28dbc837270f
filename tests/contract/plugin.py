"""A pytest plugin that checks every helpdesk exchange of the suite against the kept contracts.

Registered from ``tests/conftest.py`` (``pytest_plugins``). For the whole session it wraps:

- ``requests.Session.send``: every request a connector sends to a real helpdesk host
  (``desk.zoho.*``, ``*.zendesk.com``, ``*.freshdesk.com``; the ``responses`` mocks answer
  those) is checked against the contract: method, path, query parameters, JSON body;
- ``flask.Flask.process_response``: every request an emulator (the connectors' ``sandbox.py``)
  accepted (status < 400) and every answer it gave are checked, whoever sent the request —
  a connector over HTTP, a test client, a driver.

Violations are collected per test; at the end of a test that had any, the test fails (at
teardown) listing them. Known disagreements (``known_deviations.py``, each with its reason and
owner) are let through and counted; a test marked ``@pytest.mark.contract_exempt(reason=…)``
sends wrong requests on purpose and is not failed. ``ESCBRIDGE_CONTRACT=report`` only reports
at the end of the session; ``ESCBRIDGE_CONTRACT=off`` installs nothing.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from contract.known_deviations import KNOWN, Deviation
from contract.spec import Contract, Violation, contract, parse_query

MODE = os.environ.get("ESCBRIDGE_CONTRACT", "strict").lower()


def helpdesk_of_host(host: str) -> str | None:
    """Which helpdesk a real API host belongs to (None: not a helpdesk API host)."""
    host = host.lower().split(":")[0]
    if host.startswith("desk.") and "zoho" in host:
        return "zohodesk"
    if host.endswith(".zendesk.com"):
        return "zendesk"
    if host.endswith(".freshdesk.com"):
        return "freshdesk"
    return None


def helpdesk_of_app(app: Any) -> str | None:
    """Which helpdesk an emulator's Flask app imitates (None: not one of the three)."""
    extensions = getattr(app, "extensions", {}) or {}
    if "zohodesk" in extensions:
        return "zohodesk"
    module = type(extensions.get("escbridge_sandbox")).__module__
    for name in ("zendesk", "freshdesk"):
        if module.startswith(f"escbridge_{name}"):
            return name
    return None


@dataclass
class Recorder:
    """What the session's traffic showed: violations per test, counts, uncovered endpoints."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    current: list[Violation] | None = None
    outside: list[Violation] = field(default_factory=list)
    checked: Counter[tuple[str, str]] = field(default_factory=Counter)
    uncovered: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    known_hits: Counter[int] = field(default_factory=Counter)
    failures: int = 0

    def add(self, violations: list[Violation]) -> None:
        with self.lock:
            (self.current if self.current is not None else self.outside).extend(violations)

    def count(self, helpdesk: str, kind: str) -> None:
        with self.lock:
            self.checked[(helpdesk, kind)] += 1

    def miss(self, helpdesk: str, method: str, path: str) -> None:
        with self.lock:
            self.uncovered[(helpdesk, method, path)] += 1


RECORDER = Recorder()


def _normalised(path: str) -> str:
    """``/api/v1/tickets/5543…/comments`` -> ``/api/v1/tickets/{n}/comments`` (for counting)."""
    return "/".join("{n}" if part.isdigit() else part for part in path.split("/"))


def check_request(
    helpdesk: str, method: str, url_path: str, query: str, headers: Any, body: bytes | None
) -> tuple[Contract, Any]:
    """Check one request; returns the contract and the matched operation (or None)."""
    spec = contract(helpdesk)
    if not spec.in_scope(url_path):
        return spec, None
    op, violations = spec.check_request(method, url_path, parse_query(query), headers, body)
    if op is None:
        RECORDER.miss(helpdesk, method, _normalised(url_path))
        return spec, None
    RECORDER.count(helpdesk, "request")
    RECORDER.add(violations)
    return spec, op


def _body_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    return (
        body.encode()
        if isinstance(body, str)
        else bytes(body)
        if isinstance(body, bytes | bytearray)
        else None
    )


@contextmanager
def _guard(helpdesk: str) -> Iterator[None]:
    """A bug in the checks fails the test that met it, never the request being checked."""
    try:
        yield
    except Exception as exc:
        RECORDER.add(
            [Violation(helpdesk, "check", "-", "-", "error", f"{type(exc).__name__}: {exc}")]
        )


def _install() -> list[tuple[Any, str, Any]]:
    """Wrap ``Session.send`` and ``Flask.process_response``; returns what to restore."""
    restore: list[tuple[Any, str, Any]] = []
    original_send = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        parts = urlsplit(request.url or "")
        helpdesk = helpdesk_of_host(parts.hostname or "")
        if helpdesk is not None:
            with _guard(helpdesk):
                check_request(
                    helpdesk,
                    request.method or "GET",
                    parts.path,
                    parts.query,
                    dict(request.headers),
                    _body_bytes(request.body),
                )
        return original_send(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    restore.append((requests.Session, "send", original_send))

    try:
        from flask import Flask
        from flask import request as flask_request
    except ImportError:  # the sandbox extra is not installed: no emulator to check
        return restore
    original_process = Flask.process_response

    def process_response(self: Flask, response: Any) -> Any:
        response = original_process(self, response)
        helpdesk = helpdesk_of_app(self)
        if helpdesk is None or response.direct_passthrough:
            return response
        with _guard(helpdesk):
            _check_emulator(helpdesk, response)
        return response

    def _check_emulator(helpdesk: str, response: Any) -> None:
        status = int(response.status_code)
        path = flask_request.path
        if status < 400:
            spec, op = check_request(
                helpdesk,
                flask_request.method,
                path,
                flask_request.query_string.decode("latin-1"),
                dict(flask_request.headers),
                flask_request.get_data(cache=True),
            )
        else:
            spec = contract(helpdesk)
            matched = spec.match(flask_request.method, path) if spec.in_scope(path) else None
            op = matched[0] if matched else None
        if op is not None:
            RECORDER.count(helpdesk, "response")
            RECORDER.add(spec.check_response(op, status, response.get_data()))

    Flask.process_response = process_response  # type: ignore[method-assign]
    restore.append((Flask, "process_response", original_process))
    return restore


_RESTORE: list[tuple[Any, str, Any]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "contract_exempt(reason): the test sends requests outside the helpdesk contract on "
        "purpose (tests/contract/plugin.py does not fail it)",
    )
    if MODE != "off" and not _RESTORE:
        _RESTORE.extend(_install())


def pytest_unconfigure(config: pytest.Config) -> None:
    while _RESTORE:
        owner, name, original = _RESTORE.pop()
        setattr(owner, name, original)


def _known(violation: Violation) -> Deviation | None:
    for index, deviation in enumerate(KNOWN):
        if deviation.matches(violation):
            with RECORDER.lock:
                RECORDER.known_hits[index] += 1
            return deviation
    return None


@pytest.fixture(autouse=True)
def _contract_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect this test's contract violations; fail the test when there are new ones."""
    if MODE == "off":
        yield
        return
    with RECORDER.lock:
        RECORDER.current = []
    yield
    with RECORDER.lock:
        seen, RECORDER.current = RECORDER.current or [], None
    new = [v for v in seen if _known(v) is None]
    unique = list(dict.fromkeys(str(v) for v in new))
    if not unique or request.node.get_closest_marker("contract_exempt") is not None:
        return
    RECORDER.failures += 1
    if MODE == "strict":
        shown = "\n  ".join(unique[:25])
        more = f"\n  … and {len(unique) - 25} more" if len(unique) > 25 else ""
        pytest.fail(
            f"helpdesk contract violations (tests/contract/, schemas/README.md):\n  {shown}{more}",
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MODE == "off" or not (RECORDER.checked or RECORDER.uncovered):
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "helpdesk contract checks (tests/contract)")
    for (helpdesk, kind), n in sorted(RECORDER.checked.items()):
        write(f"{helpdesk}: {n} {kind}s checked")
    outside = list(dict.fromkeys(str(v) for v in RECORDER.outside if _known(v) is None))
    if outside:
        write(f"{len(outside)} violations outside any test (server threads between tests):")
        for violation in outside[:20]:
            write(f"  {violation}")
    if RECORDER.known_hits:
        write("known deviations let through:")
        for index, n in sorted(RECORDER.known_hits.items()):
            write(f"  {n:5d} x {KNOWN[index].summary()}")
    if RECORDER.uncovered:
        write("endpoints outside the kept contracts (not checked):")
        for (helpdesk, method, path), n in sorted(RECORDER.uncovered.items()):
            write(f"  {n:5d} x {helpdesk} {method} {path}")
    if MODE == "report" and RECORDER.failures:
        write(f"{RECORDER.failures} tests had contract violations (ESCBRIDGE_CONTRACT=report)")
