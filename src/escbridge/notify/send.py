"""Senders: one message to one target, and what became of it.

Every sender answers with a :class:`Delivery` whose ``outcome`` is what the outbox needs to
know to deliver exactly once (ARCHITECTURE.md, "Exactly-once in effect", the same rules as a
helpdesk write):

- ``sent`` — the service took it;
- ``retry`` — it provably did not take it: the connection was refused or timed out before a
  byte was sent, the name did not resolve, 408, 429 or 503 came back, an SMTP server refused (4xx)
  before the message's final ``.``;
- ``failed`` — it will not take it as configured: another 4xx, an SMTP 5xx, bad credentials,
  a Slack API error such as ``channel_not_found``; retrying cannot help;
- ``unknown`` — it may have taken it: the answer was lost (read timeout, connection reset after
  sending, 500/502/504, SMTP lost after the final ``.``).

What happens to an ``unknown`` depends on the target (escbridge.notify.deliver): a signed
webhook is sent again with the same ``X-Escbridge-Delivery`` id (receivers dedupe on it), a
Slack bot message is looked for in the channel, and the rest are flagged for a person.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from escbridge.http import not_sent, parse_retry_after

Outcome = Literal["sent", "retry", "failed", "unknown"]

#: Seconds to connect, and to wait for an answer once the request is sent.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
USER_AGENT = "escbridge-notify"

#: Slack's own name for the metadata escbridge puts on a bot message: what a read-back finds.
SLACK_EVENT_TYPE = "escbridge_notification"
SLACK_API = "https://slack.com/api"
#: Pages of conversations.history a read-back looks through before it cannot tell.
SLACK_HISTORY_PAGES = 10

#: Headers of the signed webhook (Stripe style): see :func:`sign`.
TIMESTAMP_HEADER = "X-Escbridge-Timestamp"
SIGNATURE_HEADER = "X-Escbridge-Signature"
DELIVERY_HEADER = "X-Escbridge-Delivery"

#: Answers that say the request was not carried out (408: the server gave up reading it before
#: it was whole); other 5xx may have been (helpdesk rule).
_NOT_TAKEN = frozenset({408, 429, 503})
_MAYBE_TAKEN = frozenset({500, 502, 504})

#: Slack Web API errors (HTTP 200, ``ok: false``) that say the post may have been made.
_SLACK_MAYBE = frozenset({"internal_error", "fatal_error", "request_timeout"})
_SLACK_RETRY = frozenset({"ratelimited", "service_unavailable"})


@dataclass(frozen=True)
class Delivery:
    """What became of one send: ``outcome``, a line saying what happened (``detail``, no
    secret in it), and for ``retry`` how long the service asked to wait (Retry-After)."""

    outcome: Outcome
    detail: str
    retry_after: float | None = None


def _session(session: requests.Session | None) -> requests.Session:
    if session is not None:
        return session
    fresh = requests.Session()
    fresh.headers["User-Agent"] = USER_AGENT
    return fresh


def _where(url: str) -> str:
    """A URL fit for a message: scheme, host and port only (webhook paths hold secrets)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


def _body_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def post(
    url: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
) -> tuple[Delivery, requests.Response | None]:
    """POST ``data`` as JSON and classify the answer; the response when one came back."""
    where = _where(url)
    sent_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    try:
        response = _session(session).post(
            url, data=data, headers=sent_headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as error:
        kind = type(error).__name__
        if not_sent(error):
            return Delivery("retry", f"{where}: not reached ({kind})"), None
        return Delivery("unknown", f"{where}: no answer after sending ({kind})"), None
    status = response.status_code
    excerpt = response.text[:200].strip()
    said = f"{where} answered {status}" + (f": {excerpt}" if excerpt else "")
    if 200 <= status < 300:
        return Delivery("sent", f"{where} answered {status}"), response
    if status in _NOT_TAKEN:
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return Delivery("retry", said, wait), response
    if status in _MAYBE_TAKEN:
        return Delivery("unknown", said), response
    if 300 <= status < 400:
        moved = response.headers.get("Location", "elsewhere")
        return Delivery("failed", f"{where} redirects to {_where(moved)}: use that URL"), response
    return Delivery("failed", said), response


# --- Slack, Teams ------------------------------------------------------------------------------


def send_slack_webhook(
    url: str, body: Mapping[str, Any], *, session: requests.Session | None = None
) -> Delivery:
    """An incoming webhook: answers 200 ``ok``, or 4xx with Slack's reason
    (``invalid_payload``, ``channel_not_found``, ``channel_is_archived``…)."""
    delivery, _ = post(url, _body_bytes(body), session=session)
    return delivery


def send_teams(
    url: str, body: Mapping[str, Any], *, session: requests.Session | None = None
) -> Delivery:
    """A Teams incoming webhook or workflow URL: 200 or 202 when taken."""
    delivery, _ = post(url, _body_bytes(body), session=session)
    return delivery


def _slack_api(
    method: str,
    token: str,
    *,
    json_body: Mapping[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
    api: str = SLACK_API,
) -> tuple[Delivery, dict[str, Any]]:
    """One Slack Web API call: its HTTP outcome and, when it answered, its JSON."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{api}/{method}"
    if json_body is not None:
        delivery, response = post(url, _body_bytes(json_body), headers, session=session)
    else:
        try:
            response = _session(session).get(
                url,
                params=dict(params or {}),
                headers=headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,  # the token is not taken elsewhere
            )
        except requests.RequestException as error:
            return Delivery("retry", f"slack {method}: {type(error).__name__}"), {}
        delivery = Delivery("sent", f"slack {method} answered {response.status_code}")
        if response.status_code == 429:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            delivery = Delivery("retry", f"slack {method} answered 429", wait)
        elif response.status_code >= 300:
            delivery = Delivery("retry", f"slack {method} answered {response.status_code}")
    if response is None or delivery.outcome != "sent":
        return delivery, {}
    try:
        answer = response.json()
    except ValueError:
        return Delivery("unknown", f"slack {method}: an answer that is not JSON"), {}
    if not isinstance(answer, dict):
        return Delivery("unknown", f"slack {method}: an unexpected answer"), {}
    if answer.get("ok") is True:
        return delivery, answer
    code = str(answer.get("error", "unknown_error"))
    if code in _SLACK_RETRY:
        return Delivery("retry", f"slack {method}: {code}"), answer
    if code in _SLACK_MAYBE:
        return Delivery("unknown", f"slack {method}: {code}"), answer
    return Delivery("failed", f"slack {method}: {code}"), answer


def send_slack_bot(
    token: str,
    channel: str,
    body: Mapping[str, Any],
    delivery_id: int,
    *,
    session: requests.Session | None = None,
    api: str = SLACK_API,
) -> Delivery:
    """chat.postMessage to ``channel``, carrying the delivery id as message metadata so that
    :func:`find_slack_message` can tell afterwards whether an unanswered post was made."""
    payload = {
        **body,
        "channel": channel,
        "metadata": {"event_type": SLACK_EVENT_TYPE, "event_payload": {"id": str(delivery_id)}},
    }
    delivery, _ = _slack_api("chat.postMessage", token, json_body=payload, session=session, api=api)
    return delivery


def find_slack_message(
    token: str,
    channel: str,
    delivery_id: int,
    since: datetime,
    *,
    session: requests.Session | None = None,
    api: str = SLACK_API,
    pages: int = SLACK_HISTORY_PAGES,
) -> bool | None:
    """Whether ``channel`` holds escbridge's message ``delivery_id`` posted since ``since``
    (conversations.history with metadata); None when Slack could not be asked."""
    cursor = ""
    for _ in range(pages):
        params = {
            "channel": channel,
            "oldest": f"{since.timestamp() - 60:.6f}",  # a minute's slack for clock skew
            "include_all_metadata": "true",
            "limit": "200",
        }
        if cursor:
            params["cursor"] = cursor
        delivery, answer = _slack_api(
            "conversations.history", token, params=params, session=session, api=api
        )
        if delivery.outcome != "sent":
            return None
        for message in answer.get("messages") or ():
            metadata = message.get("metadata") if isinstance(message, dict) else None
            if not isinstance(metadata, dict) or metadata.get("event_type") != SLACK_EVENT_TYPE:
                continue
            payload = metadata.get("event_payload")
            if isinstance(payload, dict) and str(payload.get("id")) == str(delivery_id):
                return True
        cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
        if not cursor:
            return False
    return None  # too many messages since: cannot tell


# --- the signed webhook -------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``: what a receiver recomputes from
    the raw body and the timestamp header, compares in constant time, and checks the timestamp
    is recent (5 minutes) to refuse replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def send_webhook(
    url: str,
    secret: str,
    body: Mapping[str, Any],
    delivery_id: int,
    now: datetime,
    *,
    session: requests.Session | None = None,
) -> Delivery:
    """POST the JSON body, signed; the same ``delivery_id`` on every attempt of one message."""
    data = _body_bytes(body)
    timestamp = int(now.timestamp())
    headers = {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, data),
        DELIVERY_HEADER: str(delivery_id),
    }
    delivery, _ = post(url, data, headers, session=session)
    return delivery


# --- e-mail ------------------------------------------------------------------------------------

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def message_id(delivery_id: int, target: str, sender: str) -> str:
    """A Message-ID that is the same on every attempt of one notification, so a mail sent twice
    after a lost answer is recognisably one (and threads and filters can dedupe it)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "escbridge.invalid"
    safe_target = re.sub(r"[^A-Za-z0-9._-]", "-", target)
    return f"<escbridge.{delivery_id}.{safe_target}@{domain}>"


def build_mail(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None,
    msg_id: str,
    now: datetime,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = msg_id
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    return mail


def _smtp_says(code: int, text: bytes | str, what: str) -> Delivery:
    said = text.decode(errors="replace") if isinstance(text, bytes) else text
    line = f"{what}: {code} {said}".strip()
    return Delivery("retry" if 400 <= code < 500 else "failed", line)


def send_mail(
    *,
    host: str,
    port: int | None,
    security: str,
    username: str | None,
    password: str | None,
    mail: EmailMessage,
    recipients: Sequence[str],
    timeout: float = READ_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> Delivery:
    """Hand ``mail`` to an SMTP server: STARTTLS, TLS or plain, AUTH when a username is given.

    The steps are taken one by one, so a failure is known to be before the final ``.`` of the
    message (nothing delivered: ``retry`` on 4xx and lost connections, ``failed`` on 5xx and
    authentication) or after it (``unknown``).
    """
    port = port or DEFAULT_PORTS.get(security, 25)
    where = f"smtp {host}:{port}"
    context = context or ssl.create_default_context()
    try:
        smtp: smtplib.SMTP
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
    except ssl.SSLCertVerificationError as error:  # tls: checked while connecting
        return Delivery("failed", f"{where}: certificate not trusted ({error.verify_message})")
    except (OSError, smtplib.SMTPException) as error:
        return Delivery("retry", f"{where}: not reached ({type(error).__name__}: {error})")
    try:
        return _converse(smtp, where, security, username, password, mail, recipients, context)
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


def _converse(
    smtp: smtplib.SMTP,
    where: str,
    security: str,
    username: str | None,
    password: str | None,
    mail: EmailMessage,
    recipients: Sequence[str],
    context: ssl.SSLContext,
) -> Delivery:
    sender = parseaddr(str(mail["From"]))[1]
    try:
        smtp.ehlo()
        if security == "starttls":
            if not smtp.has_extn("starttls"):
                return Delivery("failed", f"{where} does not offer STARTTLS")
            smtp.starttls(context=context)
            smtp.ehlo()
        if username:
            smtp.login(username, password or "")
        code, said = smtp.mail(sender)
        if code != 250:
            return _smtp_says(code, said, f"{where} refused the sender")
        for recipient in recipients:
            code, said = smtp.rcpt(recipient)
            if code not in (250, 251):
                return _smtp_says(code, said, f"{where} refused {recipient}")
        code, said = smtp.docmd("data")
        if code != 354:
            return _smtp_says(code, said, f"{where} refused the message")
    except smtplib.SMTPAuthenticationError as error:
        return Delivery("failed", f"{where}: authentication failed ({error.smtp_code})")
    except smtplib.SMTPNotSupportedError as error:
        return Delivery("failed", f"{where}: {error}")
    except ssl.SSLCertVerificationError as error:
        return Delivery("failed", f"{where}: certificate not trusted ({error.verify_message})")
    except smtplib.SMTPResponseException as error:
        return _smtp_says(error.smtp_code, error.smtp_error, where)
    except (OSError, smtplib.SMTPException) as error:
        return Delivery("retry", f"{where}: lost before the message ({type(error).__name__})")
    # From here the server may have the message once the final "." is through.
    data = re.sub(
        rb"(?m)^\.", b"..", mail.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    )
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    try:
        smtp.send(data + b".\r\n")
    except (OSError, smtplib.SMTPException) as error:
        # The "." was not handed over whole: the server drops a message it never saw end.
        return Delivery("retry", f"{where}: lost while sending ({type(error).__name__})")
    try:
        code, said = smtp.getreply()
    except (TimeoutError, OSError, smtplib.SMTPException) as error:
        return Delivery("unknown", f"{where}: no answer after the message ({type(error).__name__})")
    if code == 250:
        return Delivery("sent", f"{where} accepted it")
    return _smtp_says(code, said, f"{where} refused the message")


__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_PORTS",
    "DELIVERY_HEADER",
    "READ_TIMEOUT",
    "SIGNATURE_HEADER",
    "SLACK_API",
    "SLACK_EVENT_TYPE",
    "SLACK_HISTORY_PAGES",
    "TIMESTAMP_HEADER",
    "Delivery",
    "Outcome",
    "build_mail",
    "find_slack_message",
    "message_id",
    "post",
    "send_mail",
    "send_slack_bot",
    "send_slack_webhook",
    "send_teams",
    "send_webhook",
    "sign",
]
