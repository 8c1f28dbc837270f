"""Slow and stalled clients cannot starve the receiver: a real gunicorn with the shipped
configuration (escbridge_webhooks.gunicorn_conf), one worker with four threads.

Stalled uploads (complete headers, half a body, then silence) and slowloris clients (headers
a byte at a time) are read by the worker's event loop, so no thread waits on them: /healthz
and a genuine signed delivery are answered while every one of them is still open. Past
ESCBRIDGE_WEBHOOK_BODY_TIMEOUT they are answered 408 and closed. Nothing here waits for time to
pass: the generous timeouts are failure guards only (stock gthread fails them, see below).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tls_certs import Certificate, self_signed
from webhook_support import ENV, event_body, signed, webhook_bench, write_config

from escbridge.store import upgrade

pytestmark = pytest.mark.slow

GUARD = 30.0  # seconds: only a failure guard (stock gthread needs forever, or 2 s per client)
STALLED = 32
SLOWLORIS = 8
MAX_BODY = 4096
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def receiver(
    work: Path, *, body_timeout: float, gunicorn_args: str = ""
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn, 1 worker x 4 threads, with a Zendesk instance "eu"; yields port and process."""
    work.mkdir()
    store_url = f"sqlite:///{work / 'escbridge.db'}"
    upgrade(store_url)
    config = write_config(work, store_url)
    env = {
        **ENV,
        "ESCBRIDGE_CONFIG": str(config),
        "ESCBRIDGE_WEBHOOK_BODY_TIMEOUT": str(body_timeout),
        "ESCBRIDGE_WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
        "ESCBRIDGE_WEBHOOK_METRICS_CACHE_SECONDS": "0",
        "GUNICORN_CMD_ARGS": gunicorn_args,
    }
    args = argparse.Namespace(workers=1, threads=4, log_level="info")
    with webhook_bench().gunicorn(
        "escbridge_webhooks.wsgi:app", work, args, env, "receiver"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A receiver whose deadline outlasts every guard: its stalled clients stay open."""
    with receiver(tmp_path_factory.mktemp("slow") / "patient", body_timeout=600) as (port, _):
        yield port


# --- clients ---------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=GUARD)


def stalled_upload(
    port: int, wrap: Callable[[socket.socket], socket.socket] = lambda s: s
) -> socket.socket:
    """Complete headers, half of a signed delivery's body, then nothing."""
    body = event_body()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items())
    sock = wrap(connect(port))
    sock.sendall(
        f"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    return sock


class Slowloris:
    """A client sending its header block a byte at a time, one byte per ``step()``."""

    def __init__(self, port: int) -> None:
        self.rest = b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nX-Padding: " + b"a" * 200
        self.sock = connect(port)
        self.step()

    def step(self) -> None:
        self.sock.sendall(self.rest[:1])
        self.rest = self.rest[1:]


def still_open(sock: socket.socket) -> bool:
    """Nothing was answered and the server has not closed the connection."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait for data
    try:
        if isinstance(sock, ssl.SSLSocket):  # no peeking through TLS; a byte read is an answer
            sock.recv(1)
        else:
            sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except ConnectionError:
        return False
    finally:
        sock.settimeout(timeout)
    return False  # data (an answer) or EOF


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def deliver(conn: http.client.HTTPConnection, body: bytes | None = None) -> int:
    body = body or event_body()
    conn.request("POST", "/webhooks/eu", body=body, headers=signed(body))
    response = conn.getresponse()
    response.read()
    return response.status


def read_answer(sock: socket.socket) -> bytes:
    """One answer's bytes (headers and body)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, rest = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def raw_exchange(port: int, request: bytes) -> tuple[bytes, socket.socket]:
    """Send ``request`` on a fresh connection; its answer, and the connection (still open)."""
    sock = connect(port)
    sock.sendall(request)
    return read_answer(sock), sock


def chunked_delivery(body: bytes) -> bytes:
    """A signed delivery in two chunks, the first with a chunk extension."""
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items()).encode()
    half = len(body) // 2
    chunks = b"%x;note=split\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    return (
        b"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\n"
        + head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunks
    )


# --- the tests -------------------------------------------------------------------------------


def test_stalled_uploads_and_slowloris_starve_neither_healthz_nor_a_delivery(
    patient: int,
) -> None:
    port = patient
    stalled = [stalled_upload(port) for _ in range(STALLED)]
    loris = [Slowloris(port) for _ in range(SLOWLORIS)]
    try:
        # Far more stalled clients than threads (4): every one would hold a thread in gthread.
        assert get(port, "/healthz") == 200
        for client in loris:
            client.step()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
        assert deliver(conn) == 202
        conn.close()
        for client in loris:
            client.step()
        assert get(port, "/healthz") == 200

        assert all(still_open(sock) for sock in stalled)
        assert all(still_open(client.sock) for client in loris)
    finally:
        for sock in stalled + [c.sock for c in loris]:
            sock.close()


def test_clients_that_never_close_after_an_answer_do_not_block_the_worker(
    patient: int,
) -> None:
    # gunicorn 27 drains a closed connection in its event loop for up to 2 s per client that
    # does not close its end: 32 of them would keep /healthz waiting for about a minute.
    port = patient
    lingering = [connect(port) for _ in range(STALLED)]
    try:
        for sock in lingering:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n\r\n")
        assert all(read_answer(sock).startswith(b"HTTP/1.1 200") for sock in lingering)
        assert get(port, "/healthz") == 200  # a new connection, while none has closed its end
    finally:
        for sock in lingering:
            sock.close()


def test_a_keep_alive_client_is_served_on_one_connection(patient: int) -> None:
    port = patient
    stalled = [stalled_upload(port) for _ in range(STALLED)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    try:
        assert deliver(conn) == 202
        assert conn.sock is not None
        first = conn.sock
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())
        assert deliver(conn) == 202
        assert conn.sock is first  # no reconnection in between
    finally:
        conn.close()
        for sock in stalled:
            sock.close()


def test_chunked_and_expect_continue_deliveries_are_accepted(patient: int) -> None:
    port = patient
    answer, sock = raw_exchange(port, chunked_delivery(event_body()))
    sock.close()
    assert answer.startswith(b"HTTP/1.1 202")

    # A client that waits for "100 Continue" gets it once, then its answer.
    body = event_body()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items()).encode()
    sock = connect(port)
    sock.sendall(
        b"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\n"
        + head
        + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += sock.recv(65536)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body + b"GET /healthz HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n\r\n")
    answers = read_until_closed(sock)
    sock.close()
    assert answers.startswith(b"HTTP/1.1 202") and b"100 Continue" not in answers
    assert answers.count(b"HTTP/1.1 200") == 1  # the pipelined request after it


def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(
    patient: int,
) -> None:
    port = patient
    # Declared: answered at once, nothing of the body needs to arrive.
    sock = connect(port)
    sock.sendall(
        b"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY * 100)
    )
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413")

    # Chunked: answered once the limit is passed, though more chunks were announced.
    sock = connect(port)
    sock.sendall(
        b"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n" % (MAX_BODY * 100) + b"x" * (MAX_BODY + 1)
    )
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413")
    assert get(port, "/healthz") == 200


def test_requests_not_complete_by_the_deadline_are_answered_408_and_closed(
    tmp_path: Path,
) -> None:
    with receiver(tmp_path / "strict", body_timeout=1) as (port, _):
        stalled = [stalled_upload(port) for _ in range(STALLED)]
        loris = [Slowloris(port) for _ in range(SLOWLORIS)]
        silent = connect(port)  # connects and sends nothing at all
        try:
            for sock in [*stalled, *(c.sock for c in loris), silent]:
                answer = read_until_closed(sock)  # returns once the server closed it
                assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert get(port, "/healthz") == 200
        finally:
            for sock in [*stalled, *(c.sock for c in loris), silent]:
                sock.close()


def test_a_stopping_receiver_does_not_wait_for_stalled_clients(tmp_path: Path) -> None:
    # gunicorn would wait up to graceful_timeout for connections still in progress.
    slow_stop = "--graceful-timeout 600"
    with receiver(tmp_path / "stop", body_timeout=600, gunicorn_args=slow_stop) as (port, process):
        stalled = [stalled_upload(port) for _ in range(STALLED)]
        try:
            assert get(port, "/healthz") == 200  # accepted after all of them
            process.send_signal(signal.SIGTERM)
            assert process.wait(GUARD) == 0
            for sock in stalled:
                assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
        finally:
            for sock in stalled:
                sock.close()


# --- the nginx recipe (deploy/nginx.conf) ----------------------------------------------------

RECIPE = REPO / "deploy" / "nginx.conf"
HOSTNAME = "escbridge.example.com"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """nginx (scripts/ensure-nginx.sh installs it); skipped loudly, or failed under CI."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "nginx not installed: run scripts/ensure-nginx.sh as root (apt nginx-light)"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the nginx recipe must be checked)", pytrace=False)
        pytest.skip(message)
    return found


def recipe(directory: Path, certificate: Certificate, **replacements: str) -> Path:
    """The shipped recipe, as an admin would adapt it, inside a minimal nginx.conf."""
    text = RECIPE.read_text(encoding="utf-8")
    for old, new in {
        "/etc/ssl/escbridge/fullchain.pem": str(certificate.cert_file),
        "/etc/ssl/escbridge/privkey.pem": str(certificate.key_file),
        **replacements,
    }.items():
        assert text.count(old) == 1, f"{old!r} is not in the recipe once"
        text = text.replace(old, new)
    (directory / "escbridge.conf").write_text(text, encoding="utf-8")
    main = directory / "nginx.conf"
    main.write_text(
        "daemon off;\nmaster_process off;\n"
        f"pid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n    access_log off;\n"
        f"    client_body_temp_path {directory / 'body'};\n"
        f"    proxy_temp_path {directory / 'proxy'};\n"
        f"    include {directory / 'escbridge.conf'};\n}}\n",
        encoding="utf-8",
    )
    return main


def nginx_command(binary: str, main: Path, *extra: str) -> list[str]:
    return [binary, "-e", "stderr", "-p", str(main.parent), "-c", str(main), *extra]


def test_the_nginx_recipe_passes_nginx_t(nginx_binary: str, tmp_path: Path) -> None:
    main = recipe(tmp_path, self_signed(tmp_path, HOSTNAME))
    result = subprocess.run(
        nginx_command(nginx_binary, main, "-t"), capture_output=True, text=True, timeout=GUARD
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@contextlib.contextmanager
def nginx_in_front(
    binary: str, directory: Path, upstream: int
) -> Iterator[tuple[int, ssl.SSLContext]]:
    """nginx with the recipe on a free loopback port, proxying to ``upstream``; yields the
    port and a client context trusting nginx's certificate (for HOSTNAME and 127.0.0.1)."""
    port = webhook_bench().free_port()
    adapted = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
    }
    certificate = self_signed(directory, HOSTNAME, "127.0.0.1")
    main = recipe(directory, certificate, **adapted)
    process = subprocess.Popen(nginx_command(binary, main), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + GUARD
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield port, certificate.client_context()
    finally:
        process.terminate()
        try:
            process.wait(GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(GUARD)
        if process.stderr:
            process.stderr.close()


def test_behind_the_nginx_recipe_stalled_uploads_never_reach_the_receiver(
    nginx_binary: str, patient: int, tmp_path: Path
) -> None:
    with nginx_in_front(nginx_binary, tmp_path, patient) as (port, context):

        def tls(sock: socket.socket) -> socket.socket:
            return context.wrap_socket(sock, server_hostname=HOSTNAME)

        def https() -> http.client.HTTPSConnection:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=GUARD, context=context)

        def status(method: str, path: str, body: bytes | None = None) -> int:
            conn = https()
            try:
                if body is None:
                    conn.request(method, path)
                else:
                    conn.request(method, path, body=body, headers=signed(body))
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        # One address may hold 32 connections with a request in progress: 31 stalled here.
        stalled = [stalled_upload(port, wrap=tls) for _ in range(31)]
        try:
            assert status("GET", "/healthz") == 200
            assert status("POST", "/webhooks/eu", event_body()) == 202
            assert status("GET", "/metrics") == 404  # not published
            assert status("GET", "/readyz") == 404
            assert status("POST", "/webhooks/eu", b"x" * (2 * 1024 * 1024)) == 413  # nginx's
            assert all(still_open(sock) for sock in stalled)

            stalled.append(stalled_upload(port, wrap=tls))  # the 32nd: the address is full
            assert status("GET", "/healthz") == 429
        finally:
            for sock in stalled:
                sock.close()
