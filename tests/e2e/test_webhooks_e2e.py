"""End to end, for real on 127.0.0.1: a sandbox Zendesk fires signed webhooks when a ticket
changes; the receiver takes them (gunicorn, or `escbridge serve`); a worker escalates; the
escalation is visible on the sandbox ticket, and our own update's webhooks are ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from escbridge_zendesk.sandbox import ZendeskSandbox
from polling import wait_for

from escbridge.config import parse_config
from escbridge.processing import build_processor
from escbridge.sandbox import ServerThread, serve
from escbridge.store import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhooks"))
from webhook_support import API_TOKEN, ENV, METRICS_TOKEN, SCRAPE, SECRET, write_config

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "sandbox-admin-token"  # what the sandbox accepts for escbridge@sandbox.example
E2E_ENV = {**ENV, "ZENDESK_API_TOKEN": ADMIN_TOKEN}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sandbox() -> Iterator[tuple[ZendeskSandbox, ServerThread]]:
    sb = ZendeskSandbox()
    with serve(sb.app) as server:
        yield sb, server
    sb.webhooks.close()


def make_config(tmp_path: Path, sandbox_url: str) -> Path:
    store_url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(store_url)
    return write_config(
        tmp_path,
        store_url,
        base_url=sandbox_url,
        own_user=None,  # learned from /users/me, as in production
        processing="processing:\n  poll_seconds: 0.05\n",
    )


def escalated(sb: ZendeskSandbox, ticket_id: int) -> Callable[[], bool]:
    def check() -> bool:
        ticket = sb.ticket(ticket_id)
        return "escbridge_l2" in ticket["tags"]

    return check


def assert_escalated_on_the_sandbox(sb: ZendeskSandbox, ticket_id: int) -> None:
    ticket = sb.ticket(ticket_id)
    assert ticket["group_id"] == sb.group_by_name("Tier 2")["id"]
    assert ticket["priority"] == "high"
    note = ticket["_comments"][-1]
    assert note["public"] is False and "Senior support" in note["body"]


def test_gunicorn_receiver_and_a_worker_escalate_a_sandbox_ticket(
    sandbox: tuple[ZendeskSandbox, ServerThread], tmp_path: Path
) -> None:
    sb, sandbox_server = sandbox
    config_path = make_config(tmp_path, sandbox_server.url)
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        **E2E_ENV,
        "ESCBRIDGE_CONFIG": str(config_path),
        "ESCBRIDGE_WEBHOOK_METRICS_CACHE_SECONDS": "0",
        "ESCBRIDGE_METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log_file:
        gunicorn = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn"),
                *("-c", "python:escbridge_webhooks.gunicorn_conf"),
                *("--bind", f"127.0.0.1:{port}", "--workers", "2"),
                "escbridge_webhooks.wsgi:app",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    worker: threading.Thread | None = None
    processor = build_processor(
        parse_config(config_path.read_text(), str(config_path), tmp_path, env=E2E_ENV)
    )
    try:

        def ready() -> bool:
            assert gunicorn.poll() is None, log_path.read_text()
            try:
                return requests.get(f"{base}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 15, "gunicorn to be ready")
        worker = threading.Thread(target=processor.run, kwargs={"stop": stop}, daemon=True)
        worker.start()

        sb.webhook_url = f"{base}/webhooks/eu"
        ticket = sb.create_ticket(subject="Checkout is broken", tags=["vip"])
        wait_for(escalated(sb, ticket["id"]), 15, "the escalation on the sandbox ticket")
        assert_escalated_on_the_sandbox(sb, ticket["id"])

        # Our own update fired webhooks too: all answered "ignored", nothing escalated twice.
        wait_for(lambda: len(sb.webhooks.deliveries) >= 2, 10, "our own update's webhooks")
        assert sb.webhooks.flush(10)
        statuses = [d.status for d in sb.webhooks.deliveries]
        assert statuses[0] == 202 and set(statuses[1:]) == {200}, statuses
        assert len(processor.store.escalations(instance="eu")) == 1

        forged = requests.post(
            sb.webhook_url, data=b'{"ticket_id": "1"}', headers={"X-Zendesk-Webhook-Signature": "x"}
        )
        assert forged.status_code == 401

        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        metrics = requests.get(f"{base}/metrics", headers=SCRAPE, timeout=5).text
        assert 'escbridge_webhooks_accepted_total{instance="eu"} 1.0' in metrics
        assert (
            'escbridge_webhooks_rejected_total{instance="eu",reason="unauthorized"} 1.0' in metrics
        )
        assert 'escbridge_escalations_total{helpdesk="zendesk",instance="eu",level="l2"} 1.0' in (
            metrics
        )
    finally:
        stop.set()
        if worker is not None:
            worker.join(5)
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(15)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
            gunicorn.wait(5)
        processor.store.close()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    deliveries = [e for e in lines if e.get("logger") == "escbridge_webhooks"]
    assert deliveries and all(e["request_id"] for e in deliveries)
    text = log_path.read_text()
    assert SECRET not in text and ADMIN_TOKEN not in text and API_TOKEN not in text
    assert METRICS_TOKEN not in text
    assert "Checkout is broken" not in text  # ticket contents never reach a log line


def test_escbridge_serve_receives_and_escalates_in_one_process(
    sandbox: tuple[ZendeskSandbox, ServerThread],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from escbridge.cli.serve import configure_serve_parser, run_serve

    sb, sandbox_server = sandbox
    config_path = make_config(tmp_path, sandbox_server.url)
    for name, value in E2E_ENV.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    configure_serve_parser(parser)
    args = parser.parse_args(["--config", str(config_path), "--port", "0", "--workers", "2"])
    ready, stop = threading.Event(), threading.Event()
    result: list[int] = []
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    thread = threading.Thread(
        target=lambda: result.append(run_serve(args, ready=ready, stop=stop)), daemon=True
    )
    thread.start()
    try:
        assert ready.wait(10), "escbridge serve did not start"
        base = f"http://127.0.0.1:{args.bound_port}"
        assert requests.get(f"{base}/readyz", timeout=5).json() == {"status": "ready"}
        sb.webhook_url = f"{base}/webhooks/eu"
        ticket = sb.create_ticket(subject="Refund missing", tags=["vip"])
        wait_for(escalated(sb, ticket["id"]), 15, "the escalation on the sandbox ticket")
        assert_escalated_on_the_sandbox(sb, ticket["id"])
        assert sb.webhooks.flush(10)
        assert sb.webhooks.deliveries[0].status == 202
    finally:
        stop.set()
        thread.join(15)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert result == [0]
