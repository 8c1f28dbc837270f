"""Fixtures for the notification tests: the local sinks, a throw-away certificate for the SMTP
sink's STARTTLS, and the client context that trusts it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from notify_harness import SMTP_PASSWORD, SMTP_USER, Tls
from tls_certs import self_signed

from escbridge.sandbox.sinks import HttpSink, SmtpSink


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this run."""
    certificate = self_signed(tmp_path_factory.mktemp("tls"))
    return Tls(certificate.server_context(), certificate.client_context(), certificate.cert_file)


@pytest.fixture
def smtp(tls: Tls) -> Iterator[SmtpSink]:
    """An SMTP server requiring STARTTLS, then AUTH (LOGIN or PLAIN) as SMTP_USER."""
    with SmtpSink(tls=tls.server, user=SMTP_USER, password=SMTP_PASSWORD) as sink:
        yield sink


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    with HttpSink() as sink:
        yield sink
