"""Notifications against real local servers: what each far end receives, and that it is valid
there.

The Slack and Teams stand-ins check payloads against the platforms' documented shapes (Block
Kit limits; the published Adaptive Card 1.4 schema), the SMTP server is aiosmtpd with STARTTLS
and AUTH, and the signed webhook is verified by a receiver written from the documented recipe.
Every test that touches the store runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import smtplib
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as email_policy
from pathlib import Path

import pytest
from notify_harness import (
    AGENT_VIEW,
    PATHS,
    SECRET,
    SMTP_PASSWORD,
    SMTP_USER,
    Tls,
    World,
    build_world,
)
from notify_receivers import (
    WebhookReceiver,
    card_text,
    slack_problems,
    slack_text,
    teams_problems,
)

from escbridge.cli import main
from escbridge.matrix import parse_matrix
from escbridge.notify.context import sample_context
from escbridge.notify.messages import render
from escbridge.notify.model import resolve
from escbridge.sandbox.sinks import HttpSink, SmtpSink
from escbridge.store import Store
from escbridge.testing import FakeClock


@pytest.fixture
def world(store: Store, tmp_path: Path, http_sink: HttpSink, smtp: SmtpSink, tls: Tls) -> World:
    return build_world(store, tmp_path, http_sink, smtp, tls.client)


def receiver(world: World, at: float) -> WebhookReceiver:
    """The independent receiver, fed every request the webhook's URL received, at ``at``
    (a Unix time: when they arrived on the fake clock)."""
    got = WebhookReceiver(SECRET, now=lambda: at)
    for request in world.http.requests(PATHS["audit"]):
        got.receive(request.headers, request.body)
    return got


# --- the far ends' own checks are real checks ---------------------------------------------------


def test_the_teams_check_refuses_a_card_teams_would_not_show():
    card = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlok", "text": "x"}]}
    body = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }
    assert teams_problems(body)
    card["body"] = [{"type": "TextBlock", "text": "x"}]
    assert teams_problems(body) == []


def test_the_slack_check_refuses_blocks_over_their_documented_limits():
    header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    assert slack_problems({"text": "x", "blocks": [header]}) == [
        "blocks[0] (header): 151 characters, more than 150"
    ]
    many = [{"type": "divider"}] * 51
    assert slack_problems({"blocks": many}) == ["blocks: not a list of at most 50"]


def test_the_receiver_refuses_a_forged_or_replayed_request():
    got = WebhookReceiver("s3cret", now=lambda: 1_000_000.0)
    body = b'{"type":"escalation"}'
    sig = "v1=" + hmac.new(b"s3cret", b"1000000." + body, hashlib.sha256).hexdigest()
    good = {
        "X-Escbridge-Timestamp": "1000000",
        "X-Escbridge-Signature": sig,
        "X-Escbridge-Delivery": "7",
    }
    assert got.receive(good, body + b" ") == 401
    assert got.receive({**good, "X-Escbridge-Timestamp": "999000"}, body) == 400
    assert got.receive(good, body) == 200
    assert got.receive(good, body) == 200
    assert len(got.acted) == 1


# --- the SMTP server: STARTTLS and AUTH ---------------------------------------------------------


def test_the_smtp_sink_takes_auth_login_and_plain_only_after_starttls(smtp: SmtpSink, tls: Tls):
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # not offered in clear
        client.starttls(context=tls.client)
        client.ehlo()
        assert {"LOGIN", "PLAIN"} <= set(client.esmtp_features["auth"].upper().split())
        client.user, client.password = SMTP_USER, SMTP_PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.starttls(context=tls.client)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(SMTP_USER, "wrong")
    assert smtp.logins[0] == ("LOGIN", True)
    assert {ok for _, ok in smtp.logins[1:]} == {False}


# --- one escalation, every kind of target -------------------------------------------------------


def test_a_matrix_with_every_kind_of_target_validates(world: World, tmp_path: Path):
    path = tmp_path / "matrix.yaml"
    path.write_text(world.matrix_text)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path)])
    assert code == 0, out.getvalue() + err.getvalue()


def test_one_escalation_reaches_every_target_once_with_what_its_reader_needs(world: World):
    world.escalate("42", tags=["vip"], subject="Invoice export fails")
    report = world.deliver()
    assert (report.sent, report.failed, report.unknown) == (5, 0, 0), report.details
    sent_at = world.clock().timestamp()
    world.clock.advance(minutes=10)
    assert world.deliver().messages == 0  # nothing twice

    got = receiver(world, sent_at)
    assert got.refused == []
    [payload] = got.acted
    assert payload["type"] == "escalation"
    [escalation] = payload["escalations"]
    assert (escalation["ticket_id"], escalation["from_level"], escalation["to_level"]) == (
        "42",
        "l1",
        "l2",
    )
    assert escalation["url"] == f"{AGENT_VIEW}42"
    assert escalation["rule_id"] == "vip" and escalation["reasons"]
    assert escalation["next_deadline"]["what"] == "response"
    # what a person must see in every message: the link, the ticket, from -> to, the rule,
    # why, and the next deadline
    needed = [
        f"{AGENT_VIEW}42",
        "Invoice export fails",
        "Frontline",
        "Senior support",
        "VIP customer",
        *escalation["reasons"],
        "response due",
    ]

    [slack] = world.http.requests(PATHS["leads-slack"])
    assert slack_problems(slack.json()) == []
    assert [n for n in needed if n not in slack_text(slack.json())] == []

    [teams] = world.http.requests(PATHS["managers-teams"])
    assert teams_problems(teams.json()) == []
    assert [n for n in needed if n not in card_text(teams.json())] == []

    [bot_call] = world.http.requests("/api/chat.postMessage")
    posted = bot_call.json()
    assert slack_problems(posted) == []
    assert [n for n in needed if n not in slack_text(posted)] == []
    assert posted["channel"] == "C0LEADS"
    assert posted["metadata"]["event_type"] == "escbridge_notification"
    assert bot_call.header("Authorization") == "Bearer xoxb-local-token-0123456789"

    [mail] = world.smtp.mails
    assert mail.tls and mail.user == SMTP_USER
    assert sorted(mail.recipients) == ["lead@example.com", "manager@example.com"]
    parsed = message_from_bytes(mail.data, policy=email_policy)
    assert "Invoice export fails" in parsed["Subject"] and "Senior support" in parsed["Subject"]
    assert parsed["Message-ID"].startswith("<escbridge.")
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert [n for n in needed if n not in plain] == []
    assert f'href="{AGENT_VIEW}42"' in html

    assert set(world.states().values()) == {"sent"}


def test_a_team_in_its_own_rung_notifies_only_its_targets(world: World):
    world.escalate("7", subject="my lawyer will call")
    world.deliver()
    assert world.states() == {"audit": "sent"}
    assert world.http.requests(PATHS["leads-slack"]) == []
    assert world.smtp.mails == []


# --- digest and quiet hours, on the fake clock --------------------------------------------------

DIGEST = """\
    digest-hook:
      webhook: {url: "%s", secret: "${HOOK_SECRET}"}
      digest: 15m
    night-teams:
      teams: {url: "${TEAMS_URL}"}
      quiet_hours: {from: "22:00", to: "07:00", timezone: Europe/Berlin}
"""


@pytest.fixture
def timed(store: Store, tmp_path: Path, http_sink: HttpSink, smtp: SmtpSink, tls: Tls) -> World:
    return build_world(
        store,
        tmp_path,
        http_sink,
        smtp,
        tls.client,
        clock=FakeClock(datetime(2026, 3, 2, 20, 30, tzinfo=UTC)),  # 21:30 in Berlin
        l2="[digest-hook, night-teams]",
        extra=DIGEST % http_sink.url("/digest"),
    )


def test_a_digest_sends_the_escalations_of_its_window_as_one_message(timed: World):
    timed.escalate("1", tags=["vip"], subject="first")
    timed.clock.advance(minutes=5)
    timed.escalate("2", tags=["vip"], subject="second")
    timed.deliver()
    assert timed.http.requests("/digest") == []
    timed.clock.advance(minutes=10)  # 15 minutes after the first
    timed.deliver()

    [request] = timed.http.requests("/digest")
    got = WebhookReceiver(SECRET, now=lambda: timed.clock().timestamp())
    assert got.receive(request.headers, request.body) == 200
    [digest] = got.acted
    assert digest["type"] == "digest"
    assert [e["subject"] for e in digest["escalations"]] == ["first", "second"]


def test_quiet_hours_hold_a_message_until_they_end_then_send_it_once(timed: World):
    timed.clock.advance(minutes=45)  # 22:15 in Berlin: quiet
    timed.escalate("1", tags=["vip"], subject="at night")
    timed.deliver()
    assert timed.http.requests(PATHS["managers-teams"]) == []
    timed.clock.advance(hours=8)  # 06:15 in Berlin: still quiet
    timed.deliver()
    assert timed.http.requests(PATHS["managers-teams"]) == []
    timed.clock.advance(minutes=45)  # 07:00
    timed.deliver()
    timed.clock.advance(hours=1)
    timed.deliver()
    [request] = timed.http.requests(PATHS["managers-teams"])
    assert teams_problems(request.json()) == []
    assert "at night" in card_text(request.json())


# --- a digest big enough to meet the platforms' limits ------------------------------------------


def test_a_large_digest_stays_within_slack_and_teams_limits(world: World):
    long_reasons = ["a reason that goes on " * 40] * 30
    contexts = [
        sample_context(id=n, subject="S" * 300, reasons=long_reasons, ticket_id=str(n))
        for n in range(1, 120)
    ]
    parsed = parse_matrix(world.matrix_text, "matrix.yaml")
    slack = render(resolve(parsed.notify["leads-slack"], world.environ), contexts)
    teams = render(resolve(parsed.notify["managers-teams"], world.environ), contexts)
    assert slack_problems(slack.body) == []  # type: ignore[union-attr]
    assert teams_problems(teams.body) == []  # type: ignore[union-attr]
    one = render(resolve(parsed.notify["leads-slack"], world.environ), contexts[:1])
    assert slack_problems(one.body) == []  # type: ignore[union-attr]
