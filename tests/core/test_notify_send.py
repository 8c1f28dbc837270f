"""The senders: what each answer of a service means for a notification (sent, retry, failed,
unknown), the webhook's signature, and mail handed to a real (loopback) SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
import requests
import responses
from tls_certs import self_signed

from escbridge.notify import send
from escbridge.sandbox.sinks import SmtpSink

URL = "https://hooks.example.com/escbridge"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SMTP_USER = "escbridge"
SMTP_PASSWORD = "smtp-pass-0123"


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A plain SMTP server (no STARTTLS) taking AUTH as SMTP_USER."""
    with SmtpSink(user=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


# --- HTTP answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"status": 200, "body": "ok"}, "sent"),
        ({"status": 202}, "sent"),
        ({"status": 429, "headers": {"Retry-After": "30"}}, "retry"),
        ({"status": 503}, "retry"),
        ({"status": 408}, "retry"),  # the server gave up reading the request: not taken
        ({"status": 500}, "unknown"),
        ({"status": 502}, "unknown"),
        ({"status": 504}, "unknown"),
        ({"status": 400, "body": "invalid_payload"}, "failed"),
        ({"status": 403, "body": "action_prohibited"}, "failed"),
        ({"status": 301, "headers": {"Location": "https://elsewhere.example.com/x"}}, "failed"),
        ({"body": requests.ConnectTimeout("connect timed out")}, "retry"),
        ({"body": requests.ReadTimeout("read timed out")}, "unknown"),
    ],
)
def test_each_answer_means_one_outcome(http, answer, outcome):
    http.post(URL, **answer)

    delivery = send.send_teams(URL, {"type": "message"})

    assert delivery.outcome == outcome
    assert "/escbridge" not in delivery.detail  # the path of a webhook URL is its secret


def test_retry_after_is_kept_for_the_backoff(http):
    http.post(URL, status=429, headers={"Retry-After": "30"})

    assert send.send_slack_webhook(URL, {"text": "x"}).retry_after == 30.0


def test_a_refused_connection_is_a_retry_nothing_was_sent():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    delivery = send.send_teams(f"http://127.0.0.1:{port}/hook", {"type": "message"})

    assert delivery.outcome == "retry" and "not reached" in delivery.detail


def test_a_slack_api_error_is_named(http):
    http.post(f"{send.SLACK_API}/chat.postMessage", json={"ok": False, "error": "not_in_channel"})

    delivery = send.send_slack_bot("xoxb-token-0123456789", "C0123", {"text": "x"}, 7)

    assert delivery.outcome == "failed" and "not_in_channel" in delivery.detail
    assert http.calls[0].request.headers["Authorization"] == "Bearer xoxb-token-0123456789"


def test_a_slack_read_back_does_not_follow_a_redirect_with_the_token(http):
    """A 3xx must not take the bot token (or the question) to another host."""
    history = f"{send.SLACK_API}/conversations.history"
    elsewhere = "https://elsewhere.example.com/api/conversations.history"
    http.get(history, status=302, headers={"Location": elsewhere})
    http.get(elsewhere, json={"ok": True, "messages": []})
    http.assert_all_requests_are_fired = False

    found = send.find_slack_message("xoxb-token-0123456789", "C0123", 7, NOW)

    assert found is None  # cannot tell: the claim waits, nothing is posted on a guess
    assert [call.request.url.split("?")[0] for call in http.calls] == [history]


# --- the signed webhook --------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"type":"escalation","id":7}'
    expected = hmac.new(b"s3cret", b"1772452800." + body, hashlib.sha256).hexdigest()

    assert send.sign("s3cret", 1772452800, body) == f"v1={expected}"


def test_a_webhook_carries_its_delivery_id_and_timestamp(http):
    http.post(URL, status=200)

    assert send.send_webhook(URL, "s3cret", {"id": 7}, 7, NOW).outcome == "sent"

    headers = http.calls[0].request.headers
    assert headers["X-Escbridge-Delivery"] == "7"
    assert headers["X-Escbridge-Timestamp"] == str(int(NOW.timestamp()))
    body = http.calls[0].request.body
    assert headers["X-Escbridge-Signature"] == send.sign("s3cret", int(NOW.timestamp()), body)


# --- e-mail -------------------------------------------------------------------------------


def mail(msg_id: str = "<escbridge.7.managers@example.com>") -> EmailMessage:
    return send.build_mail(
        sender="escbridge <escbridge@example.com>",
        to=["lead@example.com", "manager@example.com"],
        subject="Ticket 42 escalated to l2",
        text="Ticket 42 was escalated.\n.\nA line that starts with a dot.",
        html="<p>Ticket 42 was escalated.</p>",
        msg_id=msg_id,
        now=NOW,
    )


def deliver(
    sink: SmtpSink,
    *,
    password: str | None = None,
    security: str = "none",
    context: ssl.SSLContext | None = None,
) -> send.Delivery:
    """The sample mail to two recipients through ``sink`` (``context``: the system's CAs)."""
    return send.send_mail(
        host=sink.host,
        port=sink.port,
        security=security,
        username=sink.user,
        password=password or sink.password,
        mail=mail(),
        recipients=["lead@example.com", "manager@example.com"],
        timeout=5,
        context=context,
    )


def test_a_mail_reaches_every_recipient_as_text_and_html(sink):
    delivery = deliver(sink)

    assert delivery.outcome == "sent"
    [got] = sink.mails
    assert got.user == "escbridge"
    assert got.sender == "escbridge@example.com"
    assert got.recipients == ("lead@example.com", "manager@example.com")
    message = got.message
    assert message["Message-ID"] == "<escbridge.7.managers@example.com>"
    assert message["Subject"] == "Ticket 42 escalated to l2"
    assert message.is_multipart()
    kinds = [part.get_content_type() for part in message.walk()]
    assert "text/plain" in kinds and "text/html" in kinds
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    body = text.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert "\n.\nA line that starts with a dot." in body  # dot-stuffed on the wire, not here


def test_the_message_id_is_the_same_on_every_attempt():
    first = send.message_id(7, "managers", "escbridge <escbridge@example.com>")

    assert first == send.message_id(7, "managers", "escbridge@example.com")
    assert first == "<escbridge.7.managers@example.com>"
    assert first != send.message_id(8, "managers", "escbridge@example.com")


def test_bad_smtp_credentials_fail_at_once(sink):
    delivery = deliver(sink, password="wrong-password")

    assert delivery.outcome == "failed" and "authentication failed" in delivery.detail
    assert sink.mails == []


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ({"refuse_recipient": "550 5.1.1 no such user"}, "failed"),
        ({"refuse_recipient": "451 4.3.0 try again later"}, "retry"),
        ({"refuse_data": "554 5.7.1 rejected"}, "failed"),
    ],
)
def test_a_refusal_before_the_message_means_nothing_was_sent(sink, fault, outcome):
    for name, value in fault.items():
        setattr(sink, name, value)

    delivery = deliver(sink)

    assert delivery.outcome == outcome
    assert sink.mails == []
    said = next(iter(fault.values())).split(" ", 1)[0]
    assert said in delivery.detail


def test_a_connection_lost_after_the_final_dot_is_unknown(sink):
    sink.drop = True

    delivery = deliver(sink)

    assert delivery.outcome == "unknown"
    assert len(sink.mails) == 1  # it did arrive: which is why it must not be sent again


def test_an_smtp_server_that_is_not_there_is_a_retry():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    delivery = send.send_mail(
        host="127.0.0.1",
        port=port,
        security="none",
        username=None,
        password=None,
        mail=mail(),
        recipients=["lead@example.com"],
        timeout=5,
    )

    assert delivery.outcome == "retry"


def test_starttls_is_used_before_the_password_is_sent(tmp_path):
    certificate = self_signed(tmp_path)
    sink = SmtpSink(tls=certificate.server_context(), user=SMTP_USER, password=SMTP_PASSWORD)
    with sink:
        delivery = deliver(sink, security="starttls", context=certificate.client_context())
        untrusted = deliver(sink, security="starttls")

    assert delivery.outcome == "sent", delivery.detail
    assert sink.mails[0].user == "escbridge"
    assert untrusted.outcome == "failed" and "certificate not trusted" in untrusted.detail
    assert len(sink.mails) == 1


def test_a_server_without_starttls_is_refused_before_the_password(sink):
    delivery = deliver(sink, security="starttls")

    assert delivery.outcome == "failed" and "does not offer STARTTLS" in delivery.detail
    assert sink.mails == []
