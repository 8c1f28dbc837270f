"""Never a 5xx for a verified body: it is stored, or refused with a 4xx and a reason.

Each hostile body below is a genuine delivery of Zendesk, Freshdesk and Zoho Desk — validly
signed, of the helpdesk's own shape — with one thing in it that no store can keep or no parser
should meet: a NUL (PostgreSQL text refuses it), a lone surrogate (every UTF-8 encoder does),
a string past the limit, nesting past the limit, numbers of thousands of digits, NaN and
Infinity, invalid UTF-8, duplicate keys. On both stores, each is answered 4xx with a reason,
nothing is stored, and no log record carries the marker planted in the body. A broken transfer
encoding (an invalid chunk size, a chunked body cut short, a client gone mid-body) sent over a
raw socket to a real gunicorn and a real `escbridge serve` (waitress) is a 4xx too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from escbridge_webhooks import ReceiverSettings, create_app
from flask.testing import FlaskClient
from webhook_support import ENV, MATRIX, LogLines, event_body, signed, webhook_bench

from escbridge.config import Config, parse_config
from escbridge.connector.payload import DEFAULT_LIMITS
from escbridge.model import TicketEvent
from escbridge.processing import Processor, build_processor
from escbridge.store import Store, upgrade

MARKER = "PLANTEDxMARKERx7Q"  # what a log line would show if it printed the body
GUARD = 30.0  # seconds: a failure guard only; every answer here comes at once

# --- three helpdesks, one receiver -----------------------------------------------------------

FRESHDESK_SECRET = "freshdesk-rule-secret-0c1d"
ZOHO_URL_TOKEN = "zoho-url-token-4b9e2f7a1c3d"
ZOHO_ORG = "20065432"
ZOHO_WEBHOOK = "55430000001230001"
ZOHO_JWKS = "https://desk.zoho.eu/.well-known/jwks.json"
ZOHO_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SECRETS_ENV = {
    **ENV,
    "FRESHDESK_API_KEY": "freshdesk-api-key-never-logged",
    "FRESHDESK_WEBHOOK_SECRET": FRESHDESK_SECRET,
    "ZOHO_CLIENT_SECRET": "zoho-client-secret-never-logged",
    "ZOHO_REFRESH_TOKEN": "1000.refresh.never-logged",
    "ZOHO_WEBHOOK_TOKEN": ZOHO_URL_TOKEN,
}

CONFIG = """\
store: %s
matrix: matrix.yaml
instances:
  eu:
    type: zendesk
    base_url: https://acme.zendesk.com
    email: escbridge@acme.example
    api_token: ${ZENDESK_API_TOKEN}
    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}
    integration_user_id: 9001
"""
OTHER_INSTANCES = """\
  fd:
    type: freshdesk
    domain: acme
    api_key: ${FRESHDESK_API_KEY}
    webhook_secret: ${FRESHDESK_WEBHOOK_SECRET}
  zo:
    type: zohodesk
    data_centre: eu
    org_id: "%s"
    client_id: 1000.ESCBRIDGECLIENT
    client_secret: ${ZOHO_CLIENT_SECRET}
    refresh_token: ${ZOHO_REFRESH_TOKEN}
    webhook_id: "%s"
    webhook_token: ${ZOHO_WEBHOOK_TOKEN}
    agent_id: "55430000000064999"
    token_cache: ""
"""


def write_escbridge_yaml(directory: Path, store_url: str, *, only_zendesk: bool = False) -> Path:
    """escbridge.yaml with a Zendesk ("eu"), a Freshdesk ("fd") and a Zoho Desk ("zo")."""
    (directory / "matrix.yaml").write_text(MATRIX, encoding="utf-8")
    path = directory / "escbridge.yaml"
    others = "" if only_zendesk else OTHER_INSTANCES % (ZOHO_ORG, ZOHO_WEBHOOK)
    path.write_text(CONFIG % store_url + others, encoding="utf-8")
    return path


def load_config(path: Path) -> Config:
    return parse_config(path.read_text(encoding="utf-8"), str(path), path.parent, env=SECRETS_ENV)


SLOT = b'"@@slot@@"'


@dataclass(frozen=True)
class Helpdesk:
    """How one helpdesk's genuine delivery looks: a body around a slot, and its credentials."""

    name: str
    instance: str
    template: bytes  # a genuine body; the value SLOT is replaced by a case's JSON fragment
    sign: Callable[[bytes], dict[str, str]]
    query: str = ""

    def body(self, fragment: bytes) -> bytes:
        assert self.template.count(SLOT) == 1
        return self.template.replace(SLOT, fragment)


def _zendesk_template() -> bytes:
    data = json.loads(event_body(4711))
    data["detail"]["subject"] = "@@slot@@"
    data["detail"]["description"] = f"{MARKER} customer text"
    return json.dumps(data).encode()


def _freshdesk_template() -> bytes:
    data = {
        "freshdesk_webhook": {
            "ticket_id": 4711,
            "ticket_subject": "@@slot@@",
            "ticket_description": f"{MARKER} customer text",
        }
    }
    return json.dumps(data).encode()


def _zoho_template() -> bytes:
    event = {
        "eventType": "Ticket_Update",
        "orgId": ZOHO_ORG,
        "eventTime": str(int(time.time() * 1000)),
        "payload": {
            "id": "55430000068840041",
            "subject": "@@slot@@",
            "description": f"<div>{MARKER} customer text</div>",
            "modifiedBy": "55430000000064001",
        },
    }
    return json.dumps([event]).encode()


def _zoho_sign(_body: bytes) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": f"orgId:{ZOHO_ORG}",
        "aud": f"webhookId:{ZOHO_WEBHOOK}",
        "iat": now,
        "exp": now + 300,
    }
    token = jwt.encode(claims, ZOHO_KEY, algorithm="RS256", headers={"kid": "desk-test"})
    return {"Content-Type": "application/json", "X-ZDesk-JWT": token}


HELPDESKS = {
    "zendesk": Helpdesk("zendesk", "eu", _zendesk_template(), signed),
    "freshdesk": Helpdesk(
        "freshdesk",
        "fd",
        _freshdesk_template(),
        lambda _body: {"Content-Type": "application/json", "X-Escbridge-Secret": FRESHDESK_SECRET},
    ),
    "zohodesk": Helpdesk(
        "zohodesk", "zo", _zoho_template(), _zoho_sign, query=f"?token={ZOHO_URL_TOKEN}"
    ),
}


FRESHDESK_AGENT = {
    "id": 67013469919,
    "type": "support_agent",
    "contact": {"active": True, "email": "escbridge@acme.example", "name": "escbridge"},
}


@pytest.fixture
def helpdesk_apis() -> Iterator[responses.RequestsMock]:
    """What the receiver asks of the helpdesks: Desk's JWKS (to verify a Zoho delivery) and
    Freshdesk's /agents/me (learned in the background at start); any other call fails fast."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ZOHO_KEY.public_key()))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(ZOHO_JWKS, json={"keys": [{**jwk, "kid": "desk-test", "alg": "RS256"}]})
        mock.get("https://acme.freshdesk.com/api/v2/agents/me", json=FRESHDESK_AGENT)
        yield mock


@dataclass
class Door:
    client: FlaskClient
    processor: Processor

    def post(self, helpdesk: Helpdesk, body: bytes) -> Any:
        return self.client.post(
            f"/webhooks/{helpdesk.instance}{helpdesk.query}", data=body, headers=helpdesk.sign(body)
        )

    def stored(self) -> int:
        return sum(self.processor.store.job_counts().values())


@pytest.fixture
def door(store_url: str, tmp_path: Path, helpdesk_apis: responses.RequestsMock) -> Iterator[Door]:
    """The receiver of the three helpdesks on the store under test (SQLite and PostgreSQL)."""
    config = load_config(write_escbridge_yaml(tmp_path, store_url))
    processor = build_processor(config)
    app = create_app(config, processor=processor, settings=ReceiverSettings())
    yield Door(app.test_client(), processor)
    for connector in processor.connectors.values():  # who-am-I learners: not past this test
        identity = getattr(connector, "identity", None)
        if identity is not None:
            assert identity.stop(GUARD)
    processor.store.close()


# --- the hostile bodies ----------------------------------------------------------------------

M = MARKER.encode()
LONG = DEFAULT_LIMITS.max_string + 1

#: A JSON fragment for the slot, by case: each is refused wherever it sits in a body.
HOSTILE: dict[str, bytes] = {
    "NUL escape": b'"' + M + b'\\u0000"',
    "NUL escape in a key": b'{"' + M + b'\\u0000": 1}',
    "lone high surrogate": b'"\\ud800' + M + b'"',
    "lone low surrogate": b'"' + M + b'\\udfff"',
    "surrogates in the wrong order": b'"\\udc00\\ud800' + M + b'"',
    "a string over the limit": b'"' + (M * (LONG // len(M) + 1)) + b'"',
    "a key over the limit": b'{"' + M * 40 + b'": 1}',
    "nesting past the limit": b"[" * 40 + b'"' + M + b'"' + b"]" * 40,
    "nesting past the interpreter's recursion": b"[" * 100_000 + b"]" * 100_000,
    "an integer of 5000 digits": b"9" * 5000,
    "a float of 5000 digits": b"0." + b"1" * 5000,
    "a float past the largest": b"1e999",
    "NaN": b"NaN",
    "Infinity": b"-Infinity",
    "invalid UTF-8": b'"' + M + b'\xff\xfe"',
    "an encoded surrogate (CESU-8)": b'"' + M + b'\xed\xa0\x80"',
    "a duplicate key": b'{"' + M + b'": 1, "' + M + b'": 2}',
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("helpdesk", list(HELPDESKS))
def test_a_signed_hostile_body_is_a_4xx_with_a_reason_stored_nowhere_and_logged_without_values(
    door: Door, log_lines: LogLines, helpdesk: str, case: str
) -> None:
    desk = HELPDESKS[helpdesk]
    response = door.post(desk, desk.body(HOSTILE[case]))
    assert response.status_code == 400, response.data
    data = response.get_json()
    assert data["error"] == "invalid payload" and data["detail"], data
    assert MARKER not in data["detail"]
    assert door.stored() == 0
    assert MARKER not in log_lines.text
    assert any(e.get("outcome") == "bad_payload" for e in log_lines.entries())  # its line


@pytest.mark.parametrize("helpdesk", list(HELPDESKS))
def test_the_same_body_with_a_plain_value_is_stored(door: Door, helpdesk: str) -> None:
    """The refusals above are about the content: the same delivery, fine, gets its 202."""
    desk = HELPDESKS[helpdesk]
    response = door.post(desk, desk.body(b'"Checkout \\u00e9 \\ud83d\\ude00 broken"'))
    assert response.status_code == 202, response.data
    assert door.stored() == 1


def test_a_nul_in_a_form_encoded_freshdesk_field_is_refused_before_the_store(
    door: Door, log_lines: LogLines
) -> None:
    """Form bodies skip the JSON reader; the event's fields are checked before any store is."""
    body = f"ticket_id=4711&performer=agent%00{MARKER}@acme.example".encode()
    response = door.client.post(
        "/webhooks/fd",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Escbridge-Secret": FRESHDESK_SECRET,
        },
    )
    assert response.status_code == 400
    assert response.get_json()["detail"] == "actor holds a NUL character (\\u0000)"
    assert door.stored() == 0
    assert MARKER not in log_lines.text


def test_a_zoho_ticket_id_longer_than_the_store_keeps_is_refused(door: Door) -> None:
    desk = HELPDESKS["zohodesk"]
    body = desk.body(b'"fine"').replace(b'"55430000068840041"', b'"' + M * 10 + b'"')
    response = door.post(desk, body)
    assert response.status_code == 400
    assert response.get_json()["detail"] == "ticket_id is longer than 100 characters"
    assert door.stored() == 0


def test_an_event_time_past_what_utc_can_hold_is_refused(door: Door) -> None:
    data = json.loads(event_body(4711))
    data["time"] = "9999-12-31T23:59:59-05:00"  # year 10000 in UTC
    body = json.dumps(data).encode()
    response = door.client.post("/webhooks/eu", data=body, headers=signed(body))
    assert response.status_code == 400
    assert "occurred_at" in response.get_json()["detail"]
    assert door.stored() == 0


def test_a_value_the_store_refuses_is_a_400_not_a_5xx(
    door: Door, log_lines: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last net, for a value that gets past the checks before the store (a connector that
    reads bodies its own way, say): the store's refusal is the sender's 400, neither a 500 nor
    a 503 retried for days, and names the field, not the value."""
    from escbridge_webhooks import chain

    monkeypatch.setattr(chain, "event_problem", lambda _event, _instance: None)
    hostile = TicketEvent(instance="eu", ticket_id="4711", dedupe_key=f"eu:{MARKER}\ud800")
    monkeypatch.setattr(
        door.processor.connectors["eu"], "parse_webhook", lambda _headers, _body: [hostile]
    )
    desk = HELPDESKS["zendesk"]
    response = door.post(desk, desk.body(b'"fine"'))
    assert response.status_code == 400, response.data
    data = response.get_json()
    assert data["error"] == "invalid payload" and "dedupe_key" in data["detail"], data
    assert MARKER not in data["detail"]
    assert door.stored() == 0
    assert MARKER not in log_lines.text


class _BrokenStream(io.RawIOBase):
    """A request body whose server-side reader fails half-way, as gunicorn's does on a bad
    chunk (its messages quote the bytes it met)."""

    def __init__(self, first: bytes) -> None:
        self._first: bytes | None = first

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        raise ValueError(f"Invalid chunk size: {MARKER!r}")


def test_a_body_the_server_cannot_read_is_a_400_naming_no_bytes(
    door: Door, log_lines: LogLines
) -> None:
    body = HELPDESKS["zendesk"].body(b'"fine"')
    response = door.client.post(
        "/webhooks/eu",
        headers={**signed(body), "Transfer-Encoding": "chunked"},
        # what gunicorn and waitress hand over for a chunked body: a stream read to its end
        environ_overrides={"wsgi.input": _BrokenStream(body[:40]), "wsgi.input_terminated": True},
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "the request body could not be read",
        "detail": "broken request body (ValueError)",
    }
    assert door.stored() == 0
    assert MARKER not in log_lines.text


def test_an_unexpected_parser_error_is_logged_by_type_and_place_without_its_message(
    door: Door, log_lines: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_headers: Any, body: bytes) -> list[TicketEvent]:
        raise KeyError(json.loads(body)["detail"]["description"])  # a message quoting the body

    monkeypatch.setattr(door.processor.connectors["eu"], "parse_webhook", broken)
    desk = HELPDESKS["zendesk"]
    response = door.post(desk, desk.body(b'"fine"'))
    assert response.status_code == 400
    (line,) = [e for e in log_lines.entries() if "parsing failed" in e["msg"]]
    assert line["level"] == "error" and "exc" not in line
    assert line["msg"].startswith("webhook parsing failed unexpectedly: KeyError at ")
    assert "in broken" in line["msg"]
    assert MARKER not in log_lines.text


# --- broken transfer encodings, on real servers ----------------------------------------------

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    port: int
    store_url: str
    log: Callable[[], str]  # everything the server logged so far

    def stored(self) -> int:
        with Store(self.store_url) as store:
            return sum(store.job_counts().values())


def _zendesk_only(work: Path) -> tuple[Path, str]:
    work.mkdir()
    store_url = f"sqlite:///{work / 'escbridge.db'}"
    upgrade(store_url)
    return write_escbridge_yaml(work, store_url, only_zendesk=True), store_url


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shipped gunicorn configuration (1 worker x 4 threads) with a Zendesk instance."""
    work = tmp_path_factory.mktemp("hostile") / "gunicorn"
    config, store_url = _zendesk_only(work)
    env = {**SECRETS_ENV, "ESCBRIDGE_CONFIG": str(config)}
    args = argparse.Namespace(workers=1, threads=4, log_level="info")
    with webhook_bench().gunicorn("escbridge_webhooks.wsgi:app", work, args, env, "receiver") as (
        port,
        _process,
    ):
        yield Server(port, store_url, lambda: (work / "receiver.log").read_text(errors="replace"))


@pytest.fixture(scope="module")
def waitress_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`escbridge serve` (waitress, in this process) with a Zendesk instance; its log lines
    are kept in memory (serve replaces the root logger's handlers: restored afterwards)."""
    from escbridge.cli.serve import configure_serve_parser, run_serve

    config, store_url = _zendesk_only(tmp_path_factory.mktemp("hostile") / "waitress")
    parser = argparse.ArgumentParser()
    configure_serve_parser(parser)
    args = parser.parse_args(["--config", str(config), "--port", "0", "--workers", "0"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ready, stop = threading.Event(), threading.Event()
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    def run() -> None:
        with pytest.MonkeyPatch.context() as env:
            for name, value in SECRETS_ENV.items():
                env.setenv(name, value)
            run_serve(args, ready=ready, stop=stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(GUARD), "escbridge serve did not start"
        keep = Keep()
        keep.setFormatter(root.handlers[0].formatter)  # serve's JSON lines, as in production
        root.addHandler(keep)
        yield Server(args.bound_port, store_url, lambda: "\n".join(lines))
    finally:
        stop.set()
        thread.join(GUARD)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def _head(body: bytes, **more: str) -> bytes:
    """A signed Zendesk delivery's request head (the signature covers the whole body)."""
    headers = {**signed(body), "Host": "receiver", "Connection": "close", **more}
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST /webhooks/eu HTTP/1.1\r\n{lines}\r\n".encode()


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


BODY = HELPDESKS["zendesk"].body(b'"' + M + b'"')
BROKEN: dict[str, tuple[bytes, bool]] = {
    # name: (what the client sends, whether it then closes its sending side)
    "an invalid chunk size": (
        _head(BODY, **{"Transfer-Encoding": "chunked"}) + b"z" + M + b"\r\n" + BODY + b"\r\n",
        False,
    ),
    "a chunk size past any body": (  # waitress waits for the bytes it announces: then EOF
        _head(BODY, **{"Transfer-Encoding": "chunked"}) + b"f" * 40 + b"\r\n" + BODY,
        True,
    ),
    "a chunk without its CRLF": (
        _head(BODY, **{"Transfer-Encoding": "chunked"})
        + b"%x\r\n%s" % (len(BODY), BODY)
        + M
        + b"0\r\n\r\n",
        False,
    ),
    "a chunked body cut short": (
        _head(BODY, **{"Transfer-Encoding": "chunked"}) + _chunked(BODY)[: len(BODY) // 2],
        True,
    ),
    "a chunked body without its last chunk": (
        _head(BODY, **{"Transfer-Encoding": "chunked"}) + _chunked(BODY)[:-5],
        True,
    ),
    "a client gone mid-body": (
        _head(BODY, **{"Content-Length": str(len(BODY))}) + BODY[: len(BODY) // 2],
        True,
    ),
}


def _exchange(port: int, request: bytes, *, close_sending: bool) -> bytes:
    """Send ``request`` on a raw socket; everything answered until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
        sock.sendall(request)
        if close_sending:
            sock.shutdown(socket.SHUT_WR)  # the client is gone: the server reads EOF
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _status(answer: bytes) -> int | None:
    """The status of the first answer, or None when the server closed without one."""
    if not answer:
        return None
    status_line = answer.split(b"\r\n", 1)[0].split()
    assert status_line[0].startswith(b"HTTP/1."), answer[:200]
    return int(status_line[1])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
@pytest.mark.parametrize("server_name", ["gunicorn_server", "waitress_server"])
def test_a_broken_transfer_encoding_is_a_4xx_never_a_5xx(
    request: pytest.FixtureRequest, server_name: str, case: str
) -> None:
    server: Server = request.getfixturevalue(server_name)
    sent, close_sending = BROKEN[case]
    before = len(server.log())
    answer = _exchange(server.port, sent, close_sending=close_sending)
    status = _status(answer)
    if close_sending:  # nobody to answer: a 4xx, or the connection closed without a word
        assert status is None or 400 <= status < 500, answer[:300]
    else:
        assert status is not None and 400 <= status < 500, answer[:300]
    assert server.stored() == 0
    logged = server.log()[before:]
    assert MARKER not in logged
    assert "Traceback" not in logged and "unhandled error" not in logged, logged


@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["gunicorn_server", "waitress_server"])
def test_a_genuine_chunked_delivery_is_still_stored(
    request: pytest.FixtureRequest, server_name: str
) -> None:
    """The refusals above are about the broken encoding: a well-formed chunked body is fine."""
    server: Server = request.getfixturevalue(server_name)
    before = server.stored()
    body = HELPDESKS["zendesk"].body(b'"fine"')
    sent = _head(body, **{"Transfer-Encoding": "chunked"}) + _chunked(body)
    answer = _exchange(server.port, sent, close_sending=False)
    assert _status(answer) == 202, answer[:300]
    assert server.stored() == before + 1
