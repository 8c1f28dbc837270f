"""Faults between escbridge and where a notification goes, against the local sinks.

The rule under test (docs: notifications, "Delivery guarantees"): each escalation's message
takes effect once. A message the far end provably did not take is sent again; one it may have
taken is sent again only where the far end dedupes (the signed webhook's delivery id) or can
be asked (a Slack bot's channel); elsewhere it is flagged ``unknown`` for a person, never sent
blindly twice. Every fault is made deterministic: a sink holds its answer until the client has
given up, drops the connection after reading the request, or the worker process is killed
while the sink holds its request. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from notify_harness import PATHS, SECRET, ShortReads, Tls, World, build_world
from notify_receivers import WebhookReceiver
from polling import wait_for

from escbridge.cli import main
from escbridge.sandbox.sinks import Answer, HttpSink, SmtpSink
from escbridge.store import NOTIFY_STATES, Store

WORKER = Path(__file__).with_name("notify_worker.py")
HTTP_TARGETS = ["audit", "leads-slack", "managers-teams"]


def make(
    store: Store,
    tmp_path: Path,
    http: HttpSink,
    smtp: SmtpSink,
    tls: Tls,
    target: str,
    **options: object,
) -> World:
    return build_world(store, tmp_path, http, smtp, tls.client, l2=f"[{target}]", **options)  # type: ignore[arg-type]


def received(world: World) -> WebhookReceiver:
    """The documented receiver, fed what reached it (requests the sink did not answer with an
    error: an error answer means the receiver was not reached), at the fake clock's time."""
    at = world.clock().timestamp()
    got = WebhookReceiver(SECRET, now=lambda: at)
    for request in world.http.requests(PATHS["audit"]):
        if request.answered is None or request.answered < 300:
            got.receive(request.headers, request.body)
    return got


def rows(world: World) -> list:  # type: ignore[type-arg]
    return world.store.notifications(NOTIFY_STATES, limit=None)


def jobs(store_url: str) -> str:
    """What `escbridge jobs` shows a person."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        assert main(["jobs", "--store", store_url]) == 0
    return out.getvalue()


def delivery_ids(world: World) -> set[str]:
    return {r.header("X-Escbridge-Delivery") or "" for r in world.http.requests(PATHS["audit"])}


# --- answers that say "not taken" ---------------------------------------------------------------


@pytest.mark.parametrize("target", HTTP_TARGETS)
def test_a_503_is_sent_again_after_the_backoff_and_arrives_once(
    store, tmp_path, http_sink, smtp, tls, target
):
    world = make(store, tmp_path, http_sink, smtp, tls, target)
    http_sink.script(PATHS[target], Answer(503, "busy"))
    world.escalate("1", tags=["vip"])
    report = world.deliver()
    assert report.retried == 1 and report.sent == 0
    [row] = rows(world)
    assert row.state == "pending" and "503" in (row.last_error or "")
    world.clock.advance(seconds=59)
    assert world.deliver().messages == 0  # the backoff (60 s) has not passed
    world.clock.advance(seconds=1)
    assert world.deliver().sent == 1
    answered = [r.answered for r in http_sink.requests(PATHS[target])]
    assert answered == [503, 200]
    if target == "audit":
        assert len(received(world).acted) == 1


def test_a_429_waits_as_long_as_retry_after_says(store, tmp_path, http_sink, smtp, tls):
    world = make(store, tmp_path, http_sink, smtp, tls, "leads-slack")
    http_sink.script(PATHS["leads-slack"], Answer(429, "rate limited", {"Retry-After": "300"}))
    world.escalate("1", tags=["vip"])
    world.deliver()
    world.clock.advance(seconds=299)  # past the 60 s backoff, short of Retry-After
    assert world.deliver().messages == 0
    world.clock.advance(seconds=1)
    assert world.deliver().sent == 1
    assert [r.answered for r in http_sink.requests(PATHS["leads-slack"])] == [429, 200]


def test_an_unreachable_endpoint_is_retried_then_dead_lettered_with_its_reason(
    store, tmp_path, http_sink, smtp, tls
):
    world = make(store, tmp_path, http_sink, smtp, tls, "managers-teams")
    world.processor.notifier.max_attempts = 3  # type: ignore[union-attr]
    http_sink.answer(PATHS["managers-teams"], Answer(503, "down"))
    world.escalate("1", tags=["vip"])
    for _ in range(3):
        world.deliver()
        world.clock.advance(minutes=5)
    [row] = rows(world)
    assert row.state == "failed"
    assert "gave up after 3 attempts" in (row.last_error or "")
    assert len(http_sink.requests(PATHS["managers-teams"])) == 3


def test_a_refusal_fails_at_once_naming_the_reason(store, tmp_path, http_sink, smtp, tls):
    world = make(store, tmp_path, http_sink, smtp, tls, "leads-slack")
    http_sink.script(PATHS["leads-slack"], Answer(404, "no_service"))
    world.escalate("1", tags=["vip"])
    assert world.deliver().failed == 1
    [row] = rows(world)
    assert row.state == "failed" and "404" in (row.last_error or "")
    assert "no_service" in (row.last_error or "")
    world.clock.advance(hours=1)
    assert world.deliver().messages == 0


def test_a_mail_refused_before_its_end_is_sent_again(store, tmp_path, http_sink, smtp, tls):
    world = make(store, tmp_path, http_sink, smtp, tls, "managers-mail")
    smtp.refuse = "451 4.3.0 try again later"
    world.escalate("1", tags=["vip"])
    assert world.deliver().retried == 1
    smtp.refuse = None
    world.clock.advance(minutes=1)
    assert world.deliver().sent == 1
    assert len(smtp.mails) == 1


# --- answers lost: taken or not? ----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["timeout", "reset"])
def test_a_lost_answer_from_the_webhook_is_resent_with_its_delivery_id_and_acted_on_once(
    store, tmp_path, http_sink, smtp, tls, fault
):
    world = make(store, tmp_path, http_sink, smtp, tls, "audit", session=ShortReads())
    lost = Answer(hold=True) if fault == "timeout" else Answer(drop=True)
    http_sink.script(PATHS["audit"], lost)
    world.escalate("1", tags=["vip"])
    report = world.deliver()  # the client gives up (or is reset) before any answer
    assert report.sent == 0 and report.unknown == 0
    http_sink.release()
    world.clock.advance(seconds=61)
    assert world.deliver().sent == 1
    assert len(http_sink.requests(PATHS["audit"])) == 2
    assert len(delivery_ids(world)) == 1  # the same id both times
    got = received(world)
    assert len(got.acted) == 1 and got.refused == []
    assert {r.state for r in rows(world)} == {"sent"}


@pytest.mark.parametrize("target", ["leads-slack", "managers-teams"])
@pytest.mark.parametrize("fault", ["timeout", "reset"])
def test_a_lost_answer_from_slack_or_teams_is_flagged_never_resent(
    store, store_url, tmp_path, http_sink, smtp, tls, target, fault
):
    world = make(store, tmp_path, http_sink, smtp, tls, target, session=ShortReads())
    http_sink.script(PATHS[target], Answer(hold=True) if fault == "timeout" else Answer(drop=True))
    world.escalate("1", tags=["vip"])
    assert world.deliver().unknown == 1
    http_sink.release()
    world.clock.advance(hours=2)
    assert world.deliver().messages == 0
    assert len(http_sink.requests(PATHS[target])) == 1
    [row] = rows(world)
    assert row.state == "unknown"
    shown = jobs(store_url)
    assert target in shown and "check the channel or mailbox" in shown
    assert "--replay-notification" in shown


def test_a_mail_whose_answer_is_lost_after_its_end_is_flagged_never_resent(
    store, tmp_path, http_sink, smtp, tls
):
    world = make(store, tmp_path, http_sink, smtp, tls, "managers-mail")
    smtp.drop = True
    world.escalate("1", tags=["vip"])
    assert world.deliver().unknown == 1
    smtp.drop = False
    world.clock.advance(hours=2)
    assert world.deliver().messages == 0
    assert len(smtp.mails) == 1
    assert rows(world)[0].state == "unknown"


def test_a_slack_bot_post_whose_answer_was_lost_is_found_in_the_channel_not_reposted(
    store, tmp_path, http_sink, smtp, tls
):
    world = make(store, tmp_path, http_sink, smtp, tls, "leads-bot", session=ShortReads())
    http_sink.script("/api/chat.postMessage", Answer(hold=True))
    world.escalate("1", tags=["vip"])
    world.deliver()
    http_sink.release()
    world.clock.advance(seconds=61)
    assert world.deliver().sent == 1
    assert len(http_sink.slack_messages("C0LEADS")) == 1
    assert len(http_sink.requests("/api/chat.postMessage")) == 1
    assert len(http_sink.requests("/api/conversations.history")) == 1


def test_a_slack_bot_post_that_never_arrived_is_posted_after_looking(
    store, tmp_path, http_sink, smtp, tls
):
    world = make(store, tmp_path, http_sink, smtp, tls, "leads-bot")
    http_sink.script("/api/chat.postMessage", Answer(503, {"ok": False}))  # not taken
    world.escalate("1", tags=["vip"])
    world.deliver()
    world.clock.advance(minutes=2)
    assert world.deliver().sent == 1
    assert len(http_sink.slack_messages("C0LEADS")) == 1


# --- a worker killed mid-send -------------------------------------------------------------------

EVERY = ["audit", "leads-bot", "leads-slack", "managers-teams", "managers-mail"]


def _kill_mid_send(world: World, tls: Tls, store_url: str, tmp_path: Path, target: str) -> None:
    """Run a worker process; once the far end has the request (and holds its answer), kill -9."""
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(world.matrix_text)
    if target == "managers-mail":
        world.smtp.hold = True
    else:
        path = "/api/chat.postMessage" if target == "leads-bot" else PATHS[target]
        world.http.script(path, Answer(hold=True))
    argv = [sys.executable, str(WORKER), store_url, str(matrix), world.clock().isoformat()]
    env = {**os.environ, **world.environ}
    worker = subprocess.Popen(
        [*argv, str(tls.cafile)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:

        def arrived() -> bool:
            if worker.poll() is not None:
                out = worker.stdout.read().decode() if worker.stdout else ""
                raise AssertionError(f"the worker exited before sending: {out}")
            return bool(world.smtp.mails if target == "managers-mail" else world.http.requests())

        wait_for(arrived, timeout=60, what="the worker's request at the sink")
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout:
            worker.stdout.close()
    world.http.release()
    world.smtp.release()
    world.smtp.hold = False
    [row] = rows(world)
    assert row.state == "sending"  # committed before the send: the next worker sees it


@pytest.mark.parametrize("target", EVERY)
def test_a_worker_killed_mid_send_leaves_each_message_delivered_once_or_flagged(
    store, store_url, tmp_path, http_sink, smtp, tls, target
):
    world = make(store, tmp_path, http_sink, smtp, tls, target)
    world.escalate("1", tags=["vip"], subject="Kill me softly")
    _kill_mid_send(world, tls, store_url, tmp_path, target)

    world.clock.advance(minutes=1)
    assert world.deliver().messages == 0  # the dead worker's lease still holds it
    [held] = rows(world)  # 2 min, or the longest a send to the target can take
    world.clock.advance(seconds=(held.lease_until - world.clock()).total_seconds())
    world.deliver()
    got = received(world)
    world.clock.advance(hours=1)
    world.deliver()

    [row] = rows(world)
    if target == "audit":  # resent with the same delivery id; the receiver acts once
        assert row.state == "sent"
        assert len(http_sink.requests(PATHS["audit"])) == 2
        assert len(delivery_ids(world)) == 1
        assert len(got.acted) == 1 and got.refused == []
    elif target == "leads-bot":  # looked for in the channel: it is there, not posted again
        assert row.state == "sent"
        assert len(http_sink.slack_messages("C0LEADS")) == 1
        assert len(http_sink.requests("/api/chat.postMessage")) == 1
    else:  # may have arrived: flagged for a person, not sent again
        assert row.state == "unknown"
        shown = jobs(store_url)
        assert "the worker stopped while sending it" in shown
        assert "check the channel or mailbox" in shown and "--replay-notification" in shown
        if target == "managers-mail":
            assert len(smtp.mails) == 1
        else:
            assert len(http_sink.requests(PATHS[target])) == 1


def test_a_flagged_notification_replayed_by_a_person_goes_out_once_more(
    store, store_url, tmp_path, http_sink, smtp, tls
):
    world = make(store, tmp_path, http_sink, smtp, tls, "managers-teams")
    world.escalate("1", tags=["vip"])
    _kill_mid_send(world, tls, store_url, tmp_path, "managers-teams")
    world.clock.advance(minutes=3)
    world.deliver()
    [row] = rows(world)
    assert row.state == "unknown"
    assert store.replay_notifications([row.id], world.clock()) == [row.id]
    world.deliver()
    assert len(http_sink.requests(PATHS["managers-teams"])) == 2
    assert rows(world)[0].state == "sent"
