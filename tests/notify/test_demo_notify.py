"""`escbridge demo` with a matrix of one's own: its notification targets go to the local sinks
only, whatever they name (a real Slack URL, a token, real addresses)."""

from __future__ import annotations

from pathlib import Path

import yaml

from escbridge.matrix import parse_matrix
from escbridge.sandbox.demo_notify import DEMO_SECRET, demo_matrix
from escbridge.sandbox.sinks import HttpSink, SmtpSink

OWN = """\
version: 1
name: our matrix
levels:
  - id: l1
    name: Frontline
    groups: {"*": Frontline}
  - id: l2
    name: Senior
    groups: {"*": Senior}
    notify: [chat, bot, boss-teams, boss-mail, hook]
teams:
  billing:
    name: Billing
    groups: {"*": Billing}
    level: l2
    notify: [boss-mail]
rules:
  - id: vip
    name: VIP
    kind: hierarchical
    when: {tags: [vip]}
    to: l2
notify:
  targets:
    chat:
      slack: {webhook_url: "https://hooks.slack.com/services/T0/B0/real"}
      digest: 15m
      quiet_hours: {from: "22:00", to: "07:00", timezone: Europe/Berlin}
      template: {text: "{{ subject }} went to {{ to_level_name }}"}
    bot:
      slack: {token: "${SLACK_BOT_TOKEN}", channel: C0REAL}
    boss-teams:
      teams: {url: "${TEAMS_URL}"}
    boss-mail:
      email: {host: smtp.example.com, port: 587, security: starttls, username: u,
              password: "${SMTP_PASSWORD}", from: "esc <esc@example.com>", to: ["${BOSS}"]}
    hook:
      webhook: {url: "https://hooks.example.com/esc", secret: "${HOOK_SECRET}"}
"""


def test_every_target_of_ones_own_matrix_is_pointed_at_the_sinks(tmp_path: Path) -> None:
    source = tmp_path / "matrix.yaml"
    source.write_text(OWN)
    with HttpSink() as http, SmtpSink() as smtp:
        text, tally = demo_matrix(source, http, smtp)
    matrix = parse_matrix(text, "demo-matrix.yaml")  # valid, and no ${VAR} left to set
    assert "example.com:587" not in text and "hooks.slack.com" not in text
    assert "${" not in text
    assert tally.kinds == {
        "chat": "slack",
        "bot": "slack",
        "boss-teams": "teams",
        "boss-mail": "email",
        "hook": "webhook",
    }
    assert not tally.added
    targets = yaml.safe_load(text)["notify"]["targets"]
    for target_id, kind in tally.kinds.items():
        settings = targets[target_id][kind]
        where = settings.get("webhook_url") or settings.get("url") or settings.get("host")
        assert where.startswith(("http://127.0.0.1:", "127.0.0.1")), (target_id, where)
    assert targets["hook"]["webhook"]["secret"] == DEMO_SECRET
    assert targets["boss-mail"]["email"]["to"] == ["support@demo.invalid"]  # ${BOSS} dropped
    chat = matrix.notify["chat"]
    assert chat.digest is None and chat.quiet_hours == ()  # the day would end first
    assert chat.template is not None  # the reader sees the matrix's own wording
    assert matrix.rung("billing").notify == ("boss-mail",)  # type: ignore[union-attr]


def test_without_the_smtp_sink_mail_targets_are_left_out_and_said_so(tmp_path: Path) -> None:
    source = tmp_path / "matrix.yaml"
    source.write_text(OWN)
    with HttpSink() as http:
        text, tally = demo_matrix(source, http, None)
    matrix = parse_matrix(text, "demo-matrix.yaml")
    assert "boss-mail" not in matrix.notify
    assert matrix.rung("billing").notify == ()  # type: ignore[union-attr]
    assert "pip install aiosmtpd" in "\n".join(tally.lines())
