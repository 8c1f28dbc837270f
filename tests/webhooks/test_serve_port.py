"""`escbridge serve --port N` with N taken says so first, in one line, and contacts nothing.

Loading escbridge.yaml builds every instance's connector and the receiver (a helpdesk's JWKS,
its agent check, the /metrics warning); a port another process holds was reported only after
all that, under its warnings. The port is now checked before anything else starts.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from webhook_support import ENV, write_config

from escbridge.store import upgrade

ESCBRIDGE = Path(sys.executable).parent / "escbridge"


@pytest.fixture
def helpdesk() -> Iterator[tuple[str, list[str]]]:
    """A stand-in helpdesk on 127.0.0.1: its URL, and the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", asked
    server.shutdown()
    server.server_close()


def serve_with(port_held: str, *argv: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`escbridge serve ARGV` while this test listens on a port; ``port_held`` in ``argv`` is
    replaced by that port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [ESCBRIDGE, "serve", *(a.replace(port_held, str(port)) for a in argv)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **ENV},
            check=False,
        )
    return port, done


def test_a_taken_port_is_the_only_line_and_no_helpdesk_is_contacted(
    tmp_path: Path, helpdesk: tuple[str, list[str]]
) -> None:
    url, asked = helpdesk
    store = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(store)
    config = write_config(tmp_path, store, base_url=url)
    port, done = serve_with("HELD", "--config", str(config), "--port", "HELD")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"escbridge serve: --port: port {port} on 127.0.0.1 is in use — stop the other "
        "process or pass --port N"
    ]
    assert asked == []


def test_a_taken_metrics_port_is_said_first_too(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(store)
    config = write_config(tmp_path, store)
    port, done = serve_with(
        "HELD", "--config", str(config), "--port", "0", "--metrics-bind", "127.0.0.1:HELD"
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert f"port {port} on 127.0.0.1 is in use — stop the other process or pass another " in (line)
