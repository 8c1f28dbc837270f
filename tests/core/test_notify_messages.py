"""The messages people receive: what a reader sees (link, from → to, rule, reasons, deadline),
escaping of what a ticket's author wrote, digests within the platforms' limits, own templates.

Shapes and limits as the platforms document them: Slack Block Kit
(https://api.slack.com/reference/block-kit/blocks: 50 blocks, header 150, section text 3000,
10 fields of 2000, 10 context elements; escaping https://api.slack.com/reference/surfaces/
formatting#escaping), a Teams message carrying one Adaptive Card 1.4 attachment
(https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/
connectors-using).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from escbridge.matrix import Matrix, parse_matrix
from escbridge.notify.context import sample_context
from escbridge.notify.messages import DIGEST_SHOWN, HttpMessage, MailMessage, render
from escbridge.notify.model import NotifyTarget, resolve

TARGETS = """\
levels: [{id: l1, name: One, groups: {zendesk: S}}]
notify:
  targets:
    hook: {slack: {webhook_url: "https://hooks.slack.com/services/T/B/X"}}
    bot: {slack: {token: "${SLACK_BOT_TOKEN}", channel: C0123456789}}
    teams: {teams: {url: "https://example.com/workflow"}}
    mail: {email: {host: mx.example.com, from: e@example.com, to: b@example.com}}
    audit: {webhook: {url: "https://example.com/hook", secret: "0123456789abcdef0123"}}
"""
M = parse_matrix(TARGETS, "matrix.yaml")
ENV = {"SLACK_BOT_TOKEN": "xoxb-test-token-0000"}


def target(name: str, matrix: Matrix = M) -> NotifyTarget:
    return resolve(matrix.notify[name], ENV)


def ctx(**changes: Any) -> dict[str, Any]:
    return sample_context(**changes)


def many(n: int) -> list[dict[str, Any]]:
    return [ctx(id=i, ticket_id=str(1000 + i), subject=f"Problem {i}") for i in range(n)]


def http(name: str, contexts: list[dict[str, Any]]) -> dict[str, Any]:
    message = render(target(name), contexts)
    assert isinstance(message, HttpMessage)
    return message.body


def mail(contexts: list[dict[str, Any]], matrix: Matrix = M) -> MailMessage:
    message = render(target("mail", matrix), contexts)
    assert isinstance(message, MailMessage)
    return message


def assert_block_kit(body: Mapping[str, Any]) -> None:
    """The Block Kit limits a message must keep, else Slack refuses it (invalid_blocks)."""
    assert isinstance(body["text"], str) and body["text"]
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in ("header", "section", "context", "divider")
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 1 <= len(block["text"]["text"]) <= 150
        if kind == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 1 <= len(block["text"]["text"]) <= 3000
            fields = block.get("fields", [])
            assert len(fields) <= 10
            assert all(1 <= len(f["text"]) <= 2000 for f in fields)
        if kind == "context":
            assert 1 <= len(block["elements"]) <= 10


def slack_text(body: Mapping[str, Any]) -> str:
    """Everything a Slack reader sees, as mrkdwn."""
    parts = []
    for block in body["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(f["text"] for f in block.get("fields", ()))
        parts.extend(e["text"] for e in block.get("elements", ()))
    return "\n".join(parts)


def card(body: Mapping[str, Any]) -> dict[str, Any]:
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content: dict[str, Any] = attachment["content"]
    assert content["type"] == "AdaptiveCard"
    assert content["version"] == "1.4"
    assert content["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    return content


class TestSlack:
    def test_one_escalation(self) -> None:
        body = http("hook", [ctx()])
        assert_block_kit(body)
        assert body["blocks"][0]["text"]["text"] == "Escalated to Level 2"
        seen = slack_text(body)
        assert (
            "*<https://example.zendesk.com/agent/tickets/12345|#12345 Sample: the invoice "
            "export fails>*" in seen
        )
        assert "*From*\nLevel 1 (Tier 1)" in seen
        assert "*To*\nLevel 2 (Tier 2)" in seen
        assert "*Rule*\nSample rule [sample-rule]" in seen
        assert "*Priority*\nhigh" in seen
        assert "• idle over 4h (5h)\n• priority is high" in seen
        # the reader's own time zone, with a fallback on the destination's clock
        assert (
            "*Next deadline*\nresponse due <!date^1767618000^{date_short_pretty} {time}|"
            "2026-01-05 13:00 UTC>" in seen
        )
        assert body["text"] == (
            "#12345 Sample: the invoice export fails escalated: Level 1 (Tier 1) → "
            "Level 2 (Tier 2) (Sample rule [sample-rule])"
        )
        assert "channel" not in body and "metadata" not in body  # an incoming webhook

    def test_text_from_the_ticket_is_escaped(self) -> None:
        body = http("hook", [ctx(subject="<!channel> & <https://evil.example|click>")])
        seen = slack_text(body)
        assert "<!channel>" not in seen and "<https://evil" not in seen
        assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in seen
        assert "<!channel>" not in body["text"]

    def test_a_bot_message_names_its_channel_and_carries_the_id(self) -> None:
        body = http("bot", [ctx(id=77)])
        assert body["channel"] == "C0123456789"
        assert body["metadata"] == {
            "event_type": "escbridge_notification",
            "event_payload": {"id": "77"},
        }

    def test_a_digest_lists_twenty_and_counts_the_rest(self) -> None:
        body = http("hook", many(45))
        assert_block_kit(body)
        seen = slack_text(body)
        assert body["blocks"][0]["text"]["text"] == "45 escalations"
        assert seen.count("|#10") == DIGEST_SHOWN  # ticket links #1000..#1019
        assert "#1019 Problem 19" in seen and "#1020 Problem 20" not in seen
        assert "and 25 more escalations" in seen
        assert "Level 1 (Tier 1) → Level 2 (Tier 2) · Sample rule [sample-rule]" in seen

    def test_long_texts_stay_within_the_limits(self) -> None:
        huge = "x" * 5000
        body = http(
            "hook",
            [ctx(subject=huge, to_level_name=huge, rule_name=huge, reasons=[huge] * 30)],
        )
        assert_block_kit(body)
        assert_block_kit(http("hook", [ctx(subject=huge)] * 60))


class TestTeams:
    def test_one_escalation_is_an_adaptive_card(self) -> None:
        content = card(http("teams", [ctx()]))
        texts = [b["text"] for b in content["body"] if b["type"] == "TextBlock"]
        assert texts[:2] == ["Escalated to Level 2", "#12345 Sample: the invoice export fails"]
        (facts,) = [b["facts"] for b in content["body"] if b["type"] == "FactSet"]
        assert {f["title"]: f["value"] for f in facts} == {
            "From": "Level 1 (Tier 1)",
            "To": "Level 2 (Tier 2)",
            "Rule": "Sample rule [sample-rule]",
            "Priority": "high",
            "Next deadline": "response due 2026-01-05 13:00 UTC",
            "Helpdesk": "support (zendesk)",
        }
        assert "• idle over 4h (5h)" in texts
        assert content["actions"] == [
            {
                "type": "Action.OpenUrl",
                "title": "Open ticket #12345",
                "url": "https://example.zendesk.com/agent/tickets/12345",
            }
        ]

    def test_without_a_link_there_is_no_button(self) -> None:
        assert "actions" not in card(http("teams", [ctx(url=None)]))

    def test_a_digest(self) -> None:
        content = card(http("teams", many(23)))
        texts = [b["text"] for b in content["body"]]
        assert texts[0] == "23 escalations"
        assert "[#1000 Problem 0](https://example.zendesk.com/agent/tickets/12345)" in texts
        assert "and 3 more escalations" in texts
        assert len(texts) == 1 + 2 * DIGEST_SHOWN + 1

    def test_a_big_digest_stays_below_the_28_kb_a_teams_message_may_have(self) -> None:
        huge = [
            ctx(ticket_id=str(i), subject="x" * 5000, reasons=["y" * 5000] * 30) for i in range(99)
        ]
        assert len(json.dumps(http("teams", huge)).encode()) < 28 * 1024
        assert len(json.dumps(http("teams", huge[:1])).encode()) < 28 * 1024


class TestEmail:
    def test_one_escalation(self) -> None:
        message = mail([ctx()])
        assert message.subject == "[escbridge] #12345 Sample: the invoice export fails → Level 2"
        assert message.text.startswith(
            "Ticket #12345 Sample: the invoice export fails\n"
            "escalated to Level 2 (Tier 2).\n"
            "Open it: https://example.zendesk.com/agent/tickets/12345\n"
        )
        for line in (
            "From:          Level 1 (Tier 1)",
            "To:            Level 2 (Tier 2)",
            "Rule:          Sample rule [sample-rule]",
            "Next deadline: response due 2026-01-05 13:00 UTC",
            "  - idle over 4h (5h)",
        ):
            assert line in message.text
        assert message.html is not None
        assert '<a href="https://example.zendesk.com/agent/tickets/12345">' in message.html

    def test_the_html_part_escapes_what_the_ticket_says(self) -> None:
        message = mail([ctx(subject="<script>alert(1)</script> & co", reasons=["<b>x</b>"])])
        assert message.html is not None
        assert "<script>" not in message.html and "<b>x</b>" not in message.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in message.html
        assert "<script>alert(1)</script> & co" in message.text  # plain text stays plain

    def test_a_subject_is_one_line(self) -> None:
        message = mail([ctx(subject="Hello\r\nBcc: victim@example.com")])
        assert "\n" not in message.subject and "\r" not in message.subject

    def test_deadlines_on_the_destinations_clock(self) -> None:
        message = mail([ctx(timezone="Europe/Berlin")])
        assert "Next deadline: response due 2026-01-05 14:00 CET" in message.text

    def test_a_digest(self) -> None:
        message = mail(many(3))
        assert message.subject == "[escbridge] 3 escalations (#1000, #1001, #1002)"
        assert message.text.count("Open it: ") == 3
        assert message.html is not None and message.html.count("<hr>") == 2


class TestSignedWebhook:
    def test_the_contexts_as_json(self) -> None:
        assert http("audit", [ctx(id=5)]) == {
            "type": "escalation",
            "id": 5,
            "escalations": [ctx(id=5)],
        }
        digest = http("audit", many(2))
        assert (digest["type"], digest["id"], len(digest["escalations"])) == ("digest", 0, 2)


OWN = """\
levels: [{id: l1, name: One, groups: {zendesk: S}}]
notify:
  targets:
    slack:
      slack: {webhook_url: "https://hooks.slack.com/services/T/B/X"}
      template:
        subject: "{{ count }} for {{ to_level_name }}"
        text: "*{{ subject }}* <{{ url }}|open> ({{ priority }})"
    teams:
      teams: {url: "https://example.com/workflow"}
      template: {text: "{{ ticket_id }}: {{ subject }}"}
    mail:
      email: {host: mx.example.com, from: e@example.com, to: b@example.com}
      template:
        subject: "Ticket {{ ticket_id }}"
        text: "{{ subject }}: {{ next_deadline.due_at }}"
        html: "<p>{{ subject }}</p>"
    text-only:
      email: {host: mx.example.com, from: e@example.com, to: b@example.com}
      template: {text: "{{ subject }}"}
    html-only:
      email: {host: mx.example.com, from: e@example.com, to: b@example.com}
      template: {html: "<p>{{ subject }}</p>"}
"""


class TestOwnTemplates:
    matrix = parse_matrix(OWN, "matrix.yaml")

    def test_slack_values_are_escaped_and_the_admins_markup_kept(self) -> None:
        body = http_of(self.matrix, "slack", [ctx(subject="a <b> & c")])
        assert body["blocks"][0]["text"]["text"] == "1 for Level 2"
        assert body["blocks"][1]["text"]["text"] == (
            "*a &lt;b&gt; &amp; c* <https://example.zendesk.com/agent/tickets/12345|open> (high)"
        )
        assert_block_kit(body)

    def test_a_digest_renders_the_text_per_escalation(self) -> None:
        body = http_of(self.matrix, "teams", many(3))
        texts = [b["text"] for b in card(body)["body"]]
        assert texts == ["1000: Problem 0", "1001: Problem 1", "1002: Problem 2"]

    def test_html_is_escaped(self) -> None:
        message = render(resolve(self.matrix.notify["mail"], {}), [ctx(subject="<i>x</i>")])
        assert isinstance(message, MailMessage)
        assert message.subject == "Ticket 12345"
        assert message.html == "<p>&lt;i&gt;x&lt;/i&gt;</p>"
        assert message.text == "<i>x</i>: 2026-01-05T13:00:00+00:00\n"

    def test_text_without_html_is_a_text_only_mail(self) -> None:
        message = render(resolve(self.matrix.notify["text-only"], {}), [ctx()])
        assert isinstance(message, MailMessage)
        assert message.html is None
        assert message.subject == "[escbridge] #12345 Sample: the invoice export fails → Level 2"

    def test_html_without_text_keeps_the_default_text(self) -> None:
        message = render(resolve(self.matrix.notify["html-only"], {}), [ctx()])
        assert isinstance(message, MailMessage)
        assert message.html == "<p>Sample: the invoice export fails</p>"
        assert message.text.startswith("Ticket #12345 Sample: the invoice export fails\n")

    def test_a_template_failing_on_one_escalation_falls_back_to_the_default(self) -> None:
        message = render(resolve(self.matrix.notify["mail"], {}), [ctx(next_deadline=None)])
        assert isinstance(message, MailMessage)
        assert message.subject.startswith("[escbridge] #12345")  # the default message
        assert message.warning is not None
        assert message.warning.startswith("the template of notification target mail failed (")


def http_of(matrix: Matrix, name: str, contexts: list[dict[str, Any]]) -> dict[str, Any]:
    message = render(resolve(matrix.notify[name], {}), contexts)
    assert isinstance(message, HttpMessage)
    return message.body


def test_nothing_to_render_is_a_bug() -> None:
    with pytest.raises(ValueError, match="nothing to render"):
        render(target("hook"), [])
