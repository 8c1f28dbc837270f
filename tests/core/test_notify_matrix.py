"""Notification targets in the matrix: what each kind compiles to, the file:line error for each
mistake, and ``${VAR}`` resolved only when a notification is sent.

Errors are asserted whole (``file:line key.path: message``): that line is what an admin reads.
"""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest

from escbridge.cli import main
from escbridge.errors import MatrixError
from escbridge.matrix import Matrix, parse_matrix
from escbridge.notify.model import (
    EmailSettings,
    NotifySetupError,
    SignedWebhook,
    SlackBot,
    SlackWebhook,
    TeamsWebhook,
    env_references,
    environment_problems,
    resolve,
)

LADDER = """\
levels:
  - id: l1
    name: Frontline
    groups: {zendesk: Support}
  - id: l2
    name: Senior support
    groups: {zendesk: Senior Support}
    notify: [leads-slack, audit]
teams:
  billing:
    name: Billing
    groups: {zendesk: Billing}
    notify: managers-mail
"""

ALL_KINDS = """\
notify:
  targets:
    leads-slack:
      slack: {webhook_url: "${SLACK_LEADS_WEBHOOK}"}
      digest: 15m
      quiet_hours: {from: "22:00", to: "07:00", timezone: Europe/Berlin}
    leads-bot:
      slack: {token: "${SLACK_BOT_TOKEN}", channel: C0123456789}
    managers-teams:
      teams: {url: "${TEAMS_WORKFLOW_URL}"}
    managers-mail:
      email:
        host: smtp.example.com
        username: escbridge
        password: "${SMTP_PASSWORD}"
        from: "escbridge <escbridge@example.com>"
        to: [a@example.com, "Bea Boss <b@example.com>"]
    audit:
      webhook: {url: "https://hooks.example.com/escbridge", secret: "${AUDIT_HOOK_SECRET}"}
"""

ENV = {
    "SLACK_LEADS_WEBHOOK": "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
    "SLACK_BOT_TOKEN": "xoxb-0000-1111-abcdefabcdef",
    "TEAMS_WORKFLOW_URL": "https://prod-00.westeurope.logic.azure.com/workflows/abc?sig=s3cr3t",
    "SMTP_PASSWORD": "mail-password-123",
    "AUDIT_HOOK_SECRET": "a-signing-secret-of-32-characters",
}


def load(text: str) -> Matrix:
    return parse_matrix(text, "matrix.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(MatrixError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def targets(
    body: str, ladder: str = "levels: [{id: l1, name: One, groups: {zendesk: S}}]\n"
) -> str:
    """A matrix with ``body`` under notify.targets (indented by the caller as YAML at col 4)."""
    return ladder + "notify:\n  targets:\n" + body


class TestAllFourKinds:
    def test_a_matrix_with_every_kind_validates(self) -> None:
        m = load(LADDER + ALL_KINDS)
        assert set(m.notify) == {
            "leads-slack",
            "leads-bot",
            "managers-teams",
            "managers-mail",
            "audit",
        }
        assert m.levels[1].notify == ("leads-slack", "audit")
        assert m.levels[0].notify == ()
        assert m.teams["billing"].notify == ("managers-mail",)

    def test_what_each_kind_compiles_to(self) -> None:
        m = load(LADDER + ALL_KINDS)
        slack = m.notify["leads-slack"]
        assert slack.kind == "slack"
        assert slack.settings == SlackWebhook("${SLACK_LEADS_WEBHOOK}")  # kept as written
        assert slack.digest == timedelta(minutes=15)
        (window,) = slack.quiet_hours
        assert (window.start, window.end, window.zone.key) == (
            time(22),
            time(7),
            "Europe/Berlin",
        )
        assert slack.line == 16
        bot = m.notify["leads-bot"].settings
        assert bot == SlackBot("${SLACK_BOT_TOKEN}", "C0123456789", "https://slack.com/api")
        assert m.notify["managers-teams"].settings == TeamsWebhook("${TEAMS_WORKFLOW_URL}")
        mail = m.notify["managers-mail"].settings
        assert isinstance(mail, EmailSettings)
        assert (mail.host, mail.port, mail.security) == ("smtp.example.com", 587, "starttls")
        assert mail.sender == "escbridge <escbridge@example.com>"
        assert mail.to == ("a@example.com", "Bea Boss <b@example.com>")
        hook = m.notify["audit"].settings
        assert hook == SignedWebhook("https://hooks.example.com/escbridge", "${AUDIT_HOOK_SECRET}")

    def test_escbridge_validate_accepts_it(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "matrix.yaml"
        path.write_text(LADDER + ALL_KINDS, encoding="utf-8")
        assert main(["validate", str(path)]) == 0
        assert "ok — 2 levels, 1 team, 0 rules" in capsys.readouterr().out

    def test_default_ports_follow_the_security(self) -> None:
        m = load(
            targets(
                "    a: {email: {host: mx, security: tls, from: a@x.org, to: b@x.org}}\n"
                "    b: {email: {host: mx, security: none, from: a@x.org, to: b@x.org}}\n"
                "    c: {email: {host: mx, port: 2525, from: a@x.org, to: b@x.org}}\n"
            )
        )
        ports = {
            k: t.settings.port for k, t in m.notify.items() if isinstance(t.settings, EmailSettings)
        }
        assert ports == {"a": 465, "b": 25, "c": 2525}

    def test_no_notify_section_means_no_targets(self) -> None:
        m = load("levels: [{id: l1, name: One, groups: {zendesk: S}}]\n")
        assert dict(m.notify) == {}
        assert m.levels[0].notify == ()

    def test_an_empty_targets_section_is_no_targets(self) -> None:
        m = load("levels: [{id: l1, name: One, groups: {zendesk: S}}]\nnotify:\n  targets:\n")
        assert dict(m.notify) == {}

    def test_loopback_http_is_allowed_for_local_sinks(self) -> None:
        m = load(targets("    sink: {teams: {url: 'http://127.0.0.1:8080/teams'}}\n"))
        assert m.notify["sink"].settings == TeamsWebhook("http://127.0.0.1:8080/teams")


class TestMistakes:
    def test_unknown_target_in_a_level_says_did_you_mean(self) -> None:
        text = LADDER.replace("[leads-slack, audit]", "[leads-slak, audit]") + ALL_KINDS
        assert problems(text) == [
            'matrix.yaml:8 levels[1].notify[0]: "leads-slak" is not a notification target — '
            "did you mean leads-slack? (leads-slack, leads-bot, managers-teams, managers-mail, "
            "audit)"
        ]

    def test_unknown_target_in_a_team(self) -> None:
        text = LADDER.replace("notify: managers-mail", "notify: [pagers]") + ALL_KINDS
        assert problems(text) == [
            'matrix.yaml:13 teams.billing.notify[0]: "pagers" is not a notification target '
            "(leads-slack, leads-bot, managers-teams, managers-mail, audit)"
        ]

    def test_a_target_listed_twice(self) -> None:
        text = LADDER.replace("[leads-slack, audit]", "[audit, audit]") + ALL_KINDS
        assert problems(text) == ['matrix.yaml:8 levels[1].notify[1]: "audit" is listed twice']

    def test_a_target_with_no_kind(self) -> None:
        assert problems(targets("    x: {digest: 5m}\n")) == [
            "matrix.yaml:4 notify.targets.x: needs exactly one of slack, teams, email, webhook "
            "(has none)"
        ]

    def test_a_target_with_two_kinds(self) -> None:
        body = (
            "    x:\n"
            "      slack: {webhook_url: 'https://hooks.slack.com/services/T/B/X'}\n"
            "      teams: {url: 'https://example.com/t'}\n"
        )
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x: needs exactly one of slack, teams, email, webhook "
            "(has slack and teams)"
        ]

    def test_a_misspelt_key_says_did_you_mean(self) -> None:
        body = "    x:\n      slack: {webhook_url: 'https://h.example/x'}\n      digets: 5m\n"
        assert problems(targets(body)) == [
            "matrix.yaml:6 notify.targets.x.digets: is not a known key here — did you mean digest?"
        ]

    def test_a_bad_target_id(self) -> None:
        assert problems(targets("    Leads: {teams: {url: 'https://example.com/t'}}\n")) == [
            'matrix.yaml:4 notify.targets.Leads: "Leads" is not a valid id '
            "(lower-case letters, digits, _ and -)"
        ]

    def test_plain_http_to_another_machine(self) -> None:
        body = "    x:\n      webhook: {url: 'http://hooks.example.com/x', secret: '${S}'}\n"
        assert problems(targets(body)) == [
            "matrix.yaml:5 notify.targets.x.webhook.url: must be https (plain http only to "
            "localhost)"
        ]

    def test_not_a_url(self) -> None:
        assert problems(targets("    x: {teams: {url: 'teams channel'}}\n")) == [
            "matrix.yaml:4 notify.targets.x.teams.url: is not an http(s) URL"
        ]

    def test_slack_needs_a_webhook_or_a_bot(self) -> None:
        assert problems(targets("    x: {slack: {channel: C01}}\n")) == [
            "matrix.yaml:4 notify.targets.x.slack: a bot needs token and channel: token is missing"
        ]
        assert problems(targets("    x: {slack: {}}\n")) == [
            "matrix.yaml:4 notify.targets.x.slack: needs webhook_url (an incoming webhook), or "
            "token and channel (a bot)"
        ]

    def test_slack_not_both(self) -> None:
        body = "    x: {slack: {webhook_url: 'https://h.example/x', token: '${T}', channel: C1}}\n"
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x.slack: webhook_url, or token and channel: not both"
        ]

    def test_bad_email_addresses(self) -> None:
        body = (
            "    x:\n"
            "      email:\n"
            "        host: smtp.example.com\n"
            "        from: escbridge\n"
            "        to: [a@example.com, 'b at example.com']\n"
        )
        assert problems(targets(body)) == [
            'matrix.yaml:7 notify.targets.x.email.from: "escbridge" is not an e-mail address',
            'matrix.yaml:8 notify.targets.x.email.to[1]: "b at example.com" is not an e-mail '
            "address",
        ]

    def test_email_needs_recipients(self) -> None:
        body = "    x: {email: {host: mx, from: a@x.org, to: []}}\n"
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x.email.to: List should have at least 1 item after "
            "validation, not 0"
        ]

    def test_a_password_is_never_sent_in_clear(self) -> None:
        body = (
            "    x: {email: {host: smtp.example.com, security: none, username: u, "
            "password: '${P}', from: a@x.org, to: b@x.org}}\n"
        )
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x.email.security: a password is never sent "
            "unencrypted: use starttls or tls"
        ]

    def test_username_without_password(self) -> None:
        body = "    x: {email: {host: mx, username: u, from: a@x.org, to: b@x.org}}\n"
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x.email: username and password go together (or "
            "neither, for a relay without login)"
        ]

    def test_a_short_literal_signing_secret(self) -> None:
        body = "    x: {webhook: {url: 'https://h.example/x', secret: abc}}\n"
        assert problems(targets(body)) == [
            "matrix.yaml:4 notify.targets.x.webhook.secret: is too short to sign with: use 16 "
            "characters or more"
        ]

    def test_bad_quiet_hours(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      quiet_hours:\n"
            "        - {from: '25:00', to: '07:00', timezone: Mars/Olympus, days: mon-fry}\n"
        )
        assert problems(targets(body)) == [
            'matrix.yaml:7 notify.targets.x.quiet_hours[0].from: "25:00" is not a time of day '
            "(HH:MM)",
            'matrix.yaml:7 notify.targets.x.quiet_hours[0].timezone: "Mars/Olympus" is not an '
            "IANA time zone (e.g. Europe/Berlin)",
            'matrix.yaml:7 notify.targets.x.quiet_hours[0].days: "mon-fry" is not a list of days '
            "(mon..sun, ranges such as mon-fri, lists such as sat,sun, daily, weekdays, weekends)",
        ]

    def test_quiet_all_week(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      quiet_hours:\n"
            "        - {from: '18:00', to: '09:00'}\n"
            "        - {from: '08:00', to: '19:00'}\n"
        )
        assert problems(targets(body)) == [
            "matrix.yaml:6 notify.targets.x.quiet_hours: is quiet all week: nothing would ever "
            "be sent"
        ]

    def test_a_minute_a_day_is_enough(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      quiet_hours: {from: '00:00', to: '23:59'}\n"
        )
        assert len(load(targets(body)).notify["x"].quiet_hours) == 1

    def test_a_digest_of_zero_or_of_days(self) -> None:
        zero = "    x: {teams: {url: 'https://example.com/t'}, digest: 0m}\n"
        assert problems(targets(zero)) == [
            "matrix.yaml:4 notify.targets.x.digest: must be longer than 0 (leave it out to send "
            "each escalation at once)"
        ]
        week = "    x: {teams: {url: 'https://example.com/t'}, digest: 2d}\n"
        assert problems(targets(week)) == [
            "matrix.yaml:4 notify.targets.x.digest: is longer than 24h: a digest is for bursts, "
            "not a daily report"
        ]

    def test_template_errors_are_found_at_load(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      template: {text: '{{ ticket.subject }}'}\n"
            "    y:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      template: {text: '{{ subject'}\n"
            "    z:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      template: {text: '{{ next_deadline.when }}'}\n"
        )
        found = problems(targets(body))
        assert found[0].startswith(
            "matrix.yaml:6 notify.targets.x.template.text: template uses unknown variable ticket "
            "(known: count, escalated_at, "
        )
        assert found[1].startswith(
            "matrix.yaml:9 notify.targets.y.template.text: template syntax error on its line 1:"
        )
        assert found[2] == (
            "matrix.yaml:12 notify.targets.z.template.text: template refers to something that "
            "does not exist: 'dict object' has no attribute 'when'"
        )

    def test_templates_are_sandboxed(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      template: {text: '{{ subject.__class__.__mro__ }}'}\n"
        )
        (found,) = problems(targets(body))
        assert found.startswith("matrix.yaml:6 notify.targets.x.template.text: template does ")

    def test_html_only_for_email_and_no_template_for_webhooks(self) -> None:
        body = (
            "    x:\n"
            "      teams: {url: 'https://example.com/t'}\n"
            "      template: {html: '<b>{{ subject }}</b>'}\n"
            "    y:\n"
            "      webhook: {url: 'https://example.com/w', secret: '${S}'}\n"
            "      template: {text: '{{ subject }}'}\n"
        )
        assert problems(targets(body)) == [
            "matrix.yaml:6 notify.targets.x.template.html: html is for email targets (slack and "
            "teams take subject and text)",
            "matrix.yaml:9 notify.targets.y.template: a webhook sends the escalation as JSON: "
            "templates are for slack, teams, email",
        ]

    def test_every_problem_at_once(self) -> None:
        text = LADDER.replace("[leads-slack, audit]", "[nobody]") + targets(
            "    x: {teams: {url: 'ftp://example.com'}}\n", ladder=""
        )
        assert problems(text) == [
            'matrix.yaml:8 levels[1].notify[0]: "nobody" is not a notification target (x)',
            'matrix.yaml:13 teams.billing.notify[0]: "managers-mail" is not a notification '
            "target (x)",
            "matrix.yaml:16 notify.targets.x.teams.url: is not an http(s) URL",
        ]


class TestEnvironment:
    def test_references_per_target(self) -> None:
        m = load(LADDER + ALL_KINDS)
        assert env_references(m) == {
            "leads-slack": {"SLACK_LEADS_WEBHOOK"},
            "leads-bot": {"SLACK_BOT_TOKEN"},
            "managers-teams": {"TEAMS_WORKFLOW_URL"},
            "managers-mail": {"SMTP_PASSWORD"},
            "audit": {"AUDIT_HOOK_SECRET"},
        }

    def test_resolve_replaces_and_lists_the_secrets(self) -> None:
        m = load(LADDER + ALL_KINDS)
        slack = resolve(m.notify["leads-slack"], ENV)
        assert slack.settings == SlackWebhook(ENV["SLACK_LEADS_WEBHOOK"])
        assert slack.secret_values() == (ENV["SLACK_LEADS_WEBHOOK"],)
        mail = resolve(m.notify["managers-mail"], ENV)
        assert isinstance(mail.settings, EmailSettings)
        assert mail.settings.password == ENV["SMTP_PASSWORD"]
        assert mail.secret_values() == (ENV["SMTP_PASSWORD"],)
        assert m.notify["managers-mail"].secret_values() == ()  # nothing real before resolving

    def test_secrets_never_show_in_a_repr_or_a_description(self) -> None:
        m = load(LADDER + ALL_KINDS)
        for target in m.notify.values():
            resolved = resolve(target, ENV)
            for text in (repr(resolved), resolved.describe()):
                assert not any(value in text for value in ENV.values()), text
        described = {t.id: resolve(t, ENV).describe() for t in m.notify.values()}
        assert described == {
            "leads-slack": "Slack incoming webhook (hooks.slack.com)",
            "leads-bot": "Slack bot to channel C0123456789 (slack.com)",
            "managers-teams": "Teams webhook (prod-00.westeurope.logic.azure.com)",
            "managers-mail": "e-mail to a@example.com, Bea Boss <b@example.com> via "
            "smtp.example.com:587 (starttls)",
            "audit": "signed webhook (hooks.example.com)",
        }
        assert m.notify["leads-slack"].describe() == (
            "Slack incoming webhook (${SLACK_LEADS_WEBHOOK})"
        )

    def test_an_unset_variable_names_target_and_variable(self) -> None:
        m = load(LADDER + ALL_KINDS)
        env = {k: v for k, v in ENV.items() if k != "SMTP_PASSWORD"} | {"AUDIT_HOOK_SECRET": ""}
        with pytest.raises(NotifySetupError) as caught:
            resolve(m.notify["managers-mail"], env)
        assert str(caught.value) == (
            "notification target managers-mail: environment variable SMTP_PASSWORD is not set "
            "(email password)"
        )
        assert environment_problems(m, env) == [
            "notification target managers-mail: environment variable SMTP_PASSWORD is not set "
            "(email password)",
            "notification target audit: environment variable AUDIT_HOOK_SECRET is empty "
            "(webhook secret)",
        ]

    def test_a_resolved_url_is_checked_without_showing_it(self) -> None:
        m = load(LADDER + ALL_KINDS)
        env = ENV | {"TEAMS_WORKFLOW_URL": "http://example.com/workflows/abc?sig=s3cr3t-value"}
        with pytest.raises(NotifySetupError) as caught:
            resolve(m.notify["managers-teams"], env)
        assert str(caught.value) == (
            "notification target managers-teams: url must be https (plain http only to localhost)"
        )
