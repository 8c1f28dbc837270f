"""`escbridge notify test` and the notifications in `escbridge jobs`, as an operator runs them."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses

from escbridge.cli.notify import configure_notify_parser, run_notify
from escbridge.cli.store import configure_jobs_parser, run_jobs
from escbridge.sandbox.sinks import SmtpSink
from escbridge.store import NewNotification, Store

HOOK = "https://hooks.example.com/escbridge"
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

MATRIX = """\
version: 1
name: cli tests
levels:
  - id: l1
    name: Frontline
    groups: {"*": Frontline}
  - id: l2
    name: Senior support
    groups: {"*": Senior}
    notify: [audit, leads]
rules:
  - id: vip
    name: VIP customer
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
notify:
  targets:
    audit:
      webhook: {url: "%s", secret: "${HOOK_SECRET}"}
    leads:
      slack: {webhook_url: "${SLACK_URL}"}
    managers:
      email:
        host: 127.0.0.1
        port: %d
        security: none
        username: escbridge
        password: "${SMTP_PASSWORD}"
        from: "escbridge <escbridge@example.com>"
        to: [lead@example.com, manager@example.com]
"""


def command(
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> Callable[..., tuple[int, str]]:
    def invoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="escbridge")
        configure(parser)
        code = run(parser.parse_args(list(argv)))
        seen = capsys.readouterr()
        return code, seen.out + seen.err

    return invoke


notify = command(configure_notify_parser, run_notify)
jobs = command(configure_jobs_parser, run_jobs)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A plain SMTP server (no STARTTLS) taking AUTH as the matrix's user."""
    with SmtpSink(user="escbridge", password="smtp-pass-0123") as server:
        yield server


@pytest.fixture
def matrix(tmp_path: Path, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOOK_SECRET", "whsec-cli-0123456789")
    monkeypatch.setenv("SLACK_URL", SLACK)
    monkeypatch.setenv("SMTP_PASSWORD", sink.password)
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX % (HOOK, sink.port))
    return path


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


# --- escbridge notify test -------------------------------------------------------------------


def test_notify_test_sends_a_sample_to_a_slack_webhook_and_masks_its_url(matrix, http, capsys):
    http.post(SLACK, status=200, body="ok")

    code, out = notify(capsys, "test", "leads", "--matrix", str(matrix))

    assert code == 0, out
    body = json.loads(http.calls[0].request.body)
    assert body["blocks"] and body["text"]
    assert "sent: https://hooks.slack.com answered 200" in out
    assert "XXXXXXXXXXXXXXXX" not in out


def test_notify_test_sends_a_signed_sample_to_a_webhook(matrix, http, capsys):
    http.post(HOOK, status=204)

    code, out = notify(capsys, "test", "audit", "--matrix", str(matrix))

    assert code == 0, out
    headers = http.calls[0].request.headers
    assert headers["X-Escbridge-Signature"].startswith("v1=")
    assert "whsec-cli" not in out


def test_notify_test_mails_a_sample(matrix, sink, capsys):
    code, out = notify(capsys, "test", "managers", "--matrix", str(matrix))

    assert code == 0, out
    [got] = sink.mails
    assert got.recipients == ("lead@example.com", "manager@example.com")
    assert "email to lead@example.com, manager@example.com" in out
    assert sink.password not in out


def test_notify_test_says_why_a_target_did_not_take_it(matrix, http, capsys):
    http.post(SLACK, status=404, body="channel_not_found")

    code, out = notify(capsys, "test", "leads", "--matrix", str(matrix))

    assert code == 1
    assert "not sent: https://hooks.slack.com answered 404: channel_not_found" in out


def test_notify_test_of_an_unknown_target_suggests_the_nearest(matrix, capsys):
    code, out = notify(capsys, "test", "lead", "--matrix", str(matrix))

    assert code == 2
    assert "no target 'lead'" in out and "did you mean 'leads'?" in out


def test_notify_test_names_an_unset_variable(matrix, capsys, monkeypatch):
    monkeypatch.delenv("SLACK_URL")

    code, out = notify(capsys, "test", "leads", "--matrix", str(matrix))

    assert code == 1
    assert "SLACK_URL" in out and "leads" in out


# --- escbridge jobs ----------------------------------------------------------------------------


def _outbox(store: Store) -> list[int]:
    """Three notifications of escalation 1: one sent, one failed, one of unknown outcome."""
    context = {"ticket_id": "42", "subject": "x"}
    rows = [NewNotification("zd", "42", 1, target, context, NOW) for target in ("a", "b", "c")]
    with store.batch() as batch:
        batch.add_notifications(rows, NOW)
    states = {"a": "sent", "b": "failed", "c": "unknown"}
    for target, state in states.items():
        held = store.claim_notifications(target, "w", NOW, timedelta(minutes=1))
        assert held is not None
        store.settle_notifications(held, state, NOW, error=None if state == "sent" else "boom")
    return [row.id for row in store.notifications(["sent", "failed", "unknown"])]


def test_jobs_lists_failed_and_unknown_notifications_with_how_to_replay(store, store_url, capsys):
    _outbox(store)

    code, out = jobs(capsys, "--store", store_url)

    assert code == 0
    assert "notifications: 0 pending, 0 sending, 1 sent, 1 failed, 1 unknown" in out
    lines = [line for line in out.splitlines() if "zd/42" in line]
    assert len(lines) == 2  # sent ones only with --all
    assert any(" failed " in line and " b " in line and "boom" in line for line in lines)
    assert "check the channel or mailbox" in out
    assert "escbridge jobs --replay-notification ID" in out

    code, out = jobs(capsys, "--store", store_url, "--format", "json")
    data = json.loads(out)
    assert data["notification_counts"]["unknown"] == 1
    assert {n["state"] for n in data["notifications"]} == {"failed", "unknown"}


def test_jobs_replays_a_notification_by_id(store, store_url, capsys):
    sent, failed, unknown = _outbox(store)

    code, out = jobs(
        capsys, "--store", store_url, "--replay-notification", str(unknown),
        "--replay-notification", str(failed),
    )  # fmt: skip
    assert code == 0, out
    assert f"notifications {failed}, {unknown} will be sent again" in out
    assert {row.id for row in store.notifications(["pending"])} == {failed, unknown}

    code, out = jobs(capsys, "--store", store_url, "--replay-notification", str(sent))
    assert code == 1
    assert f"notification {sent} not replayed: it is sent" in out


def test_a_worker_does_not_start_while_a_notify_variable_is_unset(
    matrix, store_url, capsys, monkeypatch
):
    from escbridge.cli.worker import configure_worker_parser, run_worker

    config = matrix.parent / "escbridge.yaml"
    config.write_text(f"store: {store_url}\nmatrix: matrix.yaml\ninstances: {{}}\n")
    monkeypatch.delenv("HOOK_SECRET")

    code, out = command(configure_worker_parser, run_worker)(
        capsys, "--config", str(config), "--drain"
    )

    assert code == 1
    assert "HOOK_SECRET" in out and "audit" in out


def test_status_counts_notifications_and_asks_for_attention_to_the_failed_ones(
    store, store_url, capsys
):
    from escbridge.cli.status import configure_status_parser, run_status

    _outbox(store)

    code, out = command(configure_status_parser, run_status)(capsys, "--store", store_url)

    assert code == 1
    assert "notifications: 0 waiting, 1 failed, 1 unknown; 1 sent" in out
    assert "zd: 2 notifications failed or of unknown outcome" in out


def test_validate_warns_of_an_unset_notification_secret_and_still_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate` contacts nothing and may run where the secrets are not (CI): an unset
    ``${VAR}`` of a target is a warning naming the variable and the target, exit 0."""
    from escbridge.cli import main

    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX % (HOOK, 2525), encoding="utf-8")
    monkeypatch.setenv("HOOK_SECRET", "whsec-value-for-the-test")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-password-for-the-test")
    monkeypatch.delenv("SLACK_URL", raising=False)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "SLACK_URL" in err and "leads" in err and err.startswith("warning:")
    assert "whsec-value-for-the-test" not in err and "smtp-password" not in err
    monkeypatch.setenv("SLACK_URL", SLACK)
    assert main(["validate", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
