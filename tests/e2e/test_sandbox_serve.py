"""`escbridge sandbox --serve` as a new user runs it: one command, the emulators and the receiver.

The command runs as a subprocess (the console script), so its banner, its exit code and its
handling of SIGTERM are the user's. A customer opens a ticket in the Zendesk emulator; its
webhook reaches the receiver, the embedded worker escalates the ticket in the emulator and the
store records it. SIGTERM stops everything: exit 0, every port it listened on closed. Zoho Desk's
emulator checks the webhook URL with a GET when the webhooks are wired, so the banner appearing
at all shows the receiver answered before the emulators were pointed at it; pointed at a URL
where nothing answers (`--webhook-url`), the command says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from polling import wait_for

from escbridge.cli.sandbox import _stamped, configure_sandbox_parser, run_sandbox
from escbridge.config import load_config
from escbridge.sandbox.backlog import config_yaml
from escbridge.store import Store

pytestmark = pytest.mark.slow

ESCBRIDGE = Path(sys.executable).parent / "escbridge"
STARTUP = 90.0  # seconds: the bound on the whole start (emulators, store, receiver)

MATRIX = """\
version: 1
name: Sandbox test matrix
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support, freshdesk: Frontline, zohodesk: Tier 1}
  - id: l2
    name: Senior support
    groups: {zendesk: Senior Support, freshdesk: Team Leads, zohodesk: Tier 2}
rules:
  - id: asks-for-a-manager
    name: The customer asks for a manager
    kind: hierarchical
    when:
      keywords: [manager]
    to: next
"""


def listening(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def sandbox_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], Path]]:
    """`escbridge sandbox --serve` in ``tmp_path``; its banner once it is up, and its stderr."""
    (tmp_path / "matrix.yaml").write_text(MATRIX, encoding="utf-8")
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [ESCBRIDGE, "sandbox", "--serve", "--tickets", "3", "--matrix", "matrix.yaml"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            # SIGABRT then dumps every thread's stack: what a hang was doing (see below)
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
    watchdog = threading.Timer(STARTUP + 60, process.kill)  # a hang fails, never blocks
    watchdog.start()
    try:
        assert process.stdout is not None
        banner: list[str] = []
        for line in process.stdout:  # the banner's last line is the readiness signal
            banner.append(line.rstrip("\n"))
            if "--dry-run" in line:
                break
        assert banner and "--dry-run" in banner[-1], (banner, stderr_path.read_text())
        yield process, banner, stderr_path
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_sandbox_serve_escalates_a_ticket_through_its_webhook_and_stops_on_sigterm(
    sandbox_serve: tuple[subprocess.Popen[str], list[str], Path], tmp_path: Path
) -> None:
    process, banner, stderr_path = sandbox_serve
    text = "\n".join(banner)
    urls = dict(re.findall(r"^  (\w+) +(http://127\.0\.0\.1:\d+)", text, re.MULTILINE))
    assert {"zendesk", "freshdesk", "zohodesk", "receiver"} <= set(urls), text
    assert "history --config sandbox.yaml zendesk ID" in text

    config = load_config(tmp_path / "sandbox.yaml")
    zendesk = config.instances["zendesk"].settings
    opened = requests.post(
        f"{urls['zendesk']}/__sandbox/tickets",
        json={"subject": "Still broken", "description": "I want to speak to a manager"},
        timeout=10,
    )
    assert opened.status_code == 201
    ticket_id = opened.json()["ticket"]["id"]

    auth = (f"{zendesk['email']}/token", zendesk["api_token"])

    def escalated_in_the_emulator() -> bool:
        answer = requests.get(
            f"{urls['zendesk']}/api/v2/tickets/{ticket_id}.json", auth=auth, timeout=10
        )
        return "escbridge_l2" in answer.json()["ticket"]["tags"]

    wait_for(escalated_in_the_emulator, 30, "the escalation on the Zendesk emulator's ticket")
    with Store(config.store_url) as store:
        recorded = store.escalations(instance="zendesk", ticket_id=str(ticket_id))
    assert [(e.to_level, e.rule_id) for e in recorded] == [("l2", "asks-for-a-manager")]

    ports = [int(url.rsplit(":", 1)[1]) for url in urls.values()]
    assert all(listening(port) for port in ports)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:  # not stopped: fail with what every thread was doing
        process.send_signal(signal.SIGABRT)
        process.wait(10)
        pytest.fail(f"not stopped 60 s after SIGTERM; its threads:\n{stderr_path.read_text()}")
    assert code == 0
    assert not any(listening(port) for port in ports)
    assert "Traceback" not in stderr_path.read_text()


def test_a_receiver_that_does_not_answer_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as silent:  # bound, never listening: every connection is refused
        silent.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = subprocess.run(
            [
                *(ESCBRIDGE, "sandbox", "--only", "zohodesk", "--tickets", "0"),
                *("--webhook-url", url, "--write-config", "sandbox.yaml"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=STARTUP,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert url in lines[0] and "zohodesk" in lines[0]
    assert "escbridge serve --config sandbox.yaml" in lines[0]
    assert "escbridge sandbox --serve" in lines[0]


def test_serve_refuses_what_it_cannot_honour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    configure_sandbox_parser(parser)
    monkeypatch.chdir(tmp_path)

    both = parser.parse_args(["--serve", "--webhook-url", "http://127.0.0.1:8000"])
    assert run_sandbox(both, out=io.StringIO()) == 2
    assert "drop --webhook-url" in capsys.readouterr().err

    # the default sandbox.yaml is overwritten only when this command wrote it
    (tmp_path / "sandbox.yaml").write_text("store: sqlite:///mine.db\n", encoding="utf-8")
    assert run_sandbox(parser.parse_args(["--serve"]), out=io.StringIO()) == 2
    assert "--write-config FILE" in capsys.readouterr().err
    assert (tmp_path / "sandbox.yaml").read_text() == "store: sqlite:///mine.db\n"

    with socket.socket() as taken:  # the emulators' first port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_sandbox(parser.parse_args(["--port", str(port)]), out=io.StringIO()) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_a_second_sandbox_on_the_same_files_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `sandbox --serve` here would rewrite sandbox.yaml to its own ports and replace
    the store the first one's receiver writes to; it is refused while the first one runs (its
    lock is held here the way a running sandbox holds it), and nothing is touched."""
    import fcntl
    import os

    parser = argparse.ArgumentParser()
    configure_sandbox_parser(parser)
    monkeypatch.chdir(tmp_path)
    written = _stamped(config_yaml({}, Path(), ""))  # as this command writes it
    (tmp_path / "sandbox.yaml").write_text(written, encoding="utf-8")
    store = tmp_path / "escbridge-sandbox.db"
    store.write_bytes(b"the first sandbox's store")
    fd = os.open(tmp_path / "sandbox.yaml.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_sandbox(parser.parse_args(["--serve"]), out=io.StringIO()) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert "another `escbridge sandbox` is running with sandbox.yaml" in err
    assert "--write-config OTHER.yaml --store sqlite:///OTHER.db" in err
    assert store.read_bytes() == b"the first sandbox's store"
    assert (tmp_path / "sandbox.yaml").read_text() == written


def test_a_sandbox_yaml_the_admin_edited_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointing `matrix:` at one's own matrix is the natural edit; it is kept, and the
    message says how to use one's matrix instead."""
    parser = argparse.ArgumentParser()
    configure_sandbox_parser(parser)
    monkeypatch.chdir(tmp_path)
    written = _stamped(config_yaml({}, Path(), ""))
    edited = written.replace("\n", "\nmatrix: my-escbridge/matrix.yaml\n", 1)
    (tmp_path / "sandbox.yaml").write_text(edited, encoding="utf-8")
    assert run_sandbox(parser.parse_args(["--serve"]), out=io.StringIO()) == 2
    assert "or was edited since" in capsys.readouterr().err
    assert (tmp_path / "sandbox.yaml").read_text() == edited
