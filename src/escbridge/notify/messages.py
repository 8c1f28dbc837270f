"""A target's message from one escalation's context, or several (a digest). Pure: no I/O.

The default says what the person now owning the ticket needs first: a link to the ticket in
the helpdesk's agent view, its subject, from → to, the rule, the reasons and the next deadline.
Shapes, as the platforms document them:

* Slack (incoming webhook or chat.postMessage): Block Kit, ``{"text": fallback, "blocks": [...]}``
  — https://api.slack.com/reference/block-kit/blocks: at most 50 blocks a message, a header's
  plain text 150 characters, a section's text 3000, its fields 10 of 2000 each, a context block
  10 elements. Text a user wrote is escaped (``&`` ``<`` ``>``: Slack's control characters,
  https://api.slack.com/reference/surfaces/formatting#escaping); times use Slack's date token,
  so each reader sees their own time zone.
* Microsoft Teams (incoming webhook, or a workflow "post to a channel when a webhook request
  is received"): a message with one Adaptive Card 1.4 attachment (TextBlock, FactSet,
  Action.OpenUrl) — https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/
  how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook.
* E-mail: a subject "[escbridge] #ID subject → Level", a text part and an HTML part (every value
  escaped).
* Signed webhook: the contexts themselves as JSON, ``{"type", "id", "escalations": [...]}``.

A digest lists the first ``DIGEST_SHOWN`` escalations and says how many more there are, which
keeps a Slack digest far below its 50 blocks and a Teams card below its 28 KB.

A target's own template replaces the default (text rendered per escalation, joined in a
digest; subject once, with ``count``); a template that fails on one escalation (a value it
needs is empty there) gives the default message with ``warning`` saying why.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from escbridge.notify.model import (
    EmailSettings,
    MessageTemplate,
    NotifyTarget,
    SignedWebhook,
    SlackBot,
    SlackWebhook,
    TeamsWebhook,
)

__all__ = [
    "DIGEST_SHOWN",
    "HttpMessage",
    "MailMessage",
    "Message",
    "render",
    "slack_escape",
]

#: Escalations listed one by one in a digest; the rest are counted ("and 7 more").
DIGEST_SHOWN = 20
#: Slack's limits (Block Kit reference): header text, section text, top-level fallback text.
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_TEXT_MAX = 3000
#: A subject longer than this is cut in a list line or a mail subject.
SUBJECT_MAX = 120
#: The reasons shown one by one (a rule with many conditions can give many), and the length
#: of each (a reason quotes the ticket's value, which can be a whole description).
REASONS_SHOWN = 10
REASON_MAX = 300
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
SLACK_EVENT_TYPE = "escbridge_notification"


@dataclass(frozen=True)
class HttpMessage:
    """A JSON body to POST (Slack, Teams, signed webhook); ``summary`` is one line for logs."""

    body: dict[str, Any]
    summary: str
    warning: str | None = None


@dataclass(frozen=True)
class MailMessage:
    """An e-mail's subject and bodies; ``html`` None: a text-only mail (a template with text
    and no html)."""

    subject: str
    text: str
    html: str | None
    summary: str
    warning: str | None = None


Message = HttpMessage | MailMessage


def render(target: NotifyTarget, contexts: Sequence[Mapping[str, Any]]) -> Message:
    """The message ``target`` sends for ``contexts`` (one: an escalation; several: a digest)."""
    if not contexts:
        raise ValueError(f"notification target {target.id}: nothing to render")
    settings = target.settings
    if isinstance(settings, SignedWebhook):
        return _webhook(contexts)
    template = target.template
    warning = None
    if template is not None:
        try:
            return _custom(target, template, contexts)
        except Exception as exc:  # the admin's template, whatever it raised on these values
            warning = (
                f"the template of notification target {target.id} failed ({exc}); "
                "the default message was sent"
            )
    message = _default(target, contexts)
    if warning is None:
        return message
    if isinstance(message, MailMessage):
        return MailMessage(message.subject, message.text, message.html, message.summary, warning)
    return HttpMessage(message.body, message.summary, warning)


def _default(target: NotifyTarget, contexts: Sequence[Mapping[str, Any]]) -> Message:
    settings = target.settings
    if isinstance(settings, SlackWebhook | SlackBot):
        return _slack(settings, contexts, _slack_blocks(contexts), _slack_fallback(contexts))
    if isinstance(settings, TeamsWebhook):
        return _teams(contexts, _teams_body(contexts), _teams_actions(contexts))
    assert isinstance(settings, EmailSettings)
    return _mail(contexts)


# --- words shared by every kind ------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def _ticket(ctx: Mapping[str, Any]) -> str:
    """``#123 Subject`` (the subject on one line, cut)."""
    subject = _one_line(ctx.get("subject"))
    label = f"#{ctx['ticket_id']}"
    return f"{label} {_cut(subject, SUBJECT_MAX)}" if subject else label


def _rung(ctx: Mapping[str, Any], side: str) -> str:
    """``Level 2 (Tier 2)``: a rung's name with its group on the ticket's helpdesk."""
    name = ctx.get(f"{side}_level_name") or ctx.get(f"{side}_level") or "?"
    group = ctx.get(f"{side}_group")
    return f"{name} ({group})" if group else str(name)


def _route(ctx: Mapping[str, Any]) -> str:
    return f"{_rung(ctx, 'from')} → {_rung(ctx, 'to')}"


def _zone(ctx: Mapping[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(str(ctx.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _when(value: object, ctx: Mapping[str, Any]) -> str:
    """An ISO instant as ``2026-03-11 16:00 CET``, on the clock of the destination's calendar."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    local = at.astimezone(_zone(ctx))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def _deadline(ctx: Mapping[str, Any]) -> str | None:
    """``response due 2026-03-11 17:00 UTC``, or None when the rung has no expected time."""
    deadline = ctx.get("next_deadline")
    if not isinstance(deadline, Mapping) or not deadline.get("due_at"):
        return None
    return f"{deadline.get('what', 'resolution')} due {_when(deadline['due_at'], ctx)}"


def _rule(ctx: Mapping[str, Any]) -> str:
    name, rule_id = ctx.get("rule_name"), ctx.get("rule_id")
    if name and rule_id and name != rule_id:
        return f"{name} [{rule_id}]"
    return str(name or rule_id or "?")


def _reasons(ctx: Mapping[str, Any]) -> list[str]:
    reasons = [_cut(_one_line(r), REASON_MAX) for r in ctx.get("reasons") or ()]
    if len(reasons) > REASONS_SHOWN:
        more = len(reasons) - REASONS_SHOWN
        reasons = [*reasons[:REASONS_SHOWN], f"and {more} more"]
    return reasons


def _where(ctx: Mapping[str, Any]) -> str:
    """``support (zendesk)``: the helpdesk instance."""
    instance, helpdesk = ctx.get("instance"), ctx.get("helpdesk")
    return f"{instance} ({helpdesk})" if helpdesk and helpdesk != instance else str(instance)


def _summary(contexts: Sequence[Mapping[str, Any]]) -> str:
    """One line for logs and ``escbridge notify test``."""
    if len(contexts) == 1:
        ctx = contexts[0]
        return f"{_ticket(ctx)} → {ctx.get('to_level_name') or ctx.get('to_level')}"
    ids = ", ".join(f"#{c['ticket_id']}" for c in contexts[:5])
    more = ", …" if len(contexts) > 5 else ""
    return f"digest of {len(contexts)} escalations ({ids}{more})"


def _more(contexts: Sequence[Mapping[str, Any]]) -> str | None:
    hidden = len(contexts) - DIGEST_SHOWN
    return f"and {hidden} more escalation{'s' if hidden != 1 else ''}" if hidden > 0 else None


# --- Slack ---------------------------------------------------------------------------------------


def slack_escape(text: object) -> str:
    """Text for a Slack mrkdwn field: ``&``, ``<`` and ``>`` as the entities Slack decodes (only
    those: other entities would show as typed)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_url(url: str) -> str:
    # "|" ends the address in <url|label>; "<" and ">" would end the link.
    return slack_escape(url.replace("|", "%7C"))


def _slack_link(ctx: Mapping[str, Any]) -> str:
    label = slack_escape(_ticket(ctx))
    url = ctx.get("url")
    return f"<{_slack_url(str(url))}|{label}>" if url else label


def _slack_when(value: object, ctx: Mapping[str, Any]) -> str:
    """Slack's date token: the reader's own time zone, with a fallback for old clients."""
    fallback = slack_escape(_when(value, ctx))
    try:
        stamp = int(datetime.fromisoformat(str(value)).timestamp())
    except ValueError:
        return fallback
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{fallback}>"


def _slack_deadline(ctx: Mapping[str, Any]) -> str | None:
    deadline = ctx.get("next_deadline")
    if not isinstance(deadline, Mapping) or not deadline.get("due_at"):
        return None
    return f"{slack_escape(deadline.get('what', 'resolution'))} due " + _slack_when(
        deadline["due_at"], ctx
    )


def _mrkdwn(text: str, limit: int = SLACK_SECTION_MAX) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _slack_footer(ctx: Mapping[str, Any]) -> dict[str, Any]:
    parts = ["escbridge", slack_escape(ctx.get("matrix") or ""), slack_escape(_where(ctx))]
    when = ctx.get("escalated_at")
    if when:
        parts.append(f"escalated {_slack_when(when, ctx)}")
    return {"type": "context", "elements": [_mrkdwn(" · ".join(p for p in parts if p))]}


def _slack_blocks(contexts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if len(contexts) == 1:
        ctx = contexts[0]
        fields = [
            _mrkdwn(f"*From*\n{slack_escape(_rung(ctx, 'from'))}", 2000),
            _mrkdwn(f"*To*\n{slack_escape(_rung(ctx, 'to'))}", 2000),
            _mrkdwn(f"*Rule*\n{slack_escape(_rule(ctx))}", 2000),
            _mrkdwn(f"*Priority*\n{slack_escape(ctx.get('priority') or '—')}", 2000),
            _mrkdwn(f"*Next deadline*\n{_slack_deadline(ctx) or 'none'}", 2000),
        ]
        blocks: list[dict[str, Any]] = [
            _header(f"Escalated to {_one_line(ctx.get('to_level_name'))}"),
            {"type": "section", "text": _mrkdwn(f"*{_slack_link(ctx)}*"), "fields": fields},
        ]
        reasons = _reasons(ctx)
        if reasons:
            lines = "\n".join(f"• {slack_escape(r)}" for r in reasons)
            blocks.append({"type": "section", "text": _mrkdwn(f"*Why*\n{lines}")})
        blocks.append(_slack_footer(ctx))
        return blocks
    blocks = [_header(f"{len(contexts)} escalations")]
    for ctx in contexts[:DIGEST_SHOWN]:
        line = f"{slack_escape(_route(ctx))} · {slack_escape(_rule(ctx))}"
        deadline = _slack_deadline(ctx)
        if deadline:
            line += f" · {deadline}"
        blocks.append({"type": "section", "text": _mrkdwn(f"*{_slack_link(ctx)}*\n{line}")})
    more = _more(contexts)
    if more:
        blocks.append({"type": "context", "elements": [_mrkdwn(more)]})
    blocks.append(_slack_footer(contexts[-1]))
    return blocks


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _cut(text, SLACK_HEADER_MAX), "emoji": True},
    }


def _slack_fallback(contexts: Sequence[Mapping[str, Any]]) -> str:
    """The top-level ``text``: what notifications and screen readers show."""
    if len(contexts) == 1:
        ctx = contexts[0]
        text = f"{_ticket(ctx)} escalated: {_route(ctx)} ({_rule(ctx)})"
    else:
        text = f"{len(contexts)} escalations: " + ", ".join(
            _ticket(c) for c in contexts[:DIGEST_SHOWN]
        )
        more = _more(contexts)
        if more:
            text += f", {more}"
    return _cut(slack_escape(text), SLACK_TEXT_MAX)


def _slack(
    settings: SlackWebhook | SlackBot,
    contexts: Sequence[Mapping[str, Any]],
    blocks: list[dict[str, Any]],
    fallback: str,
) -> HttpMessage:
    body: dict[str, Any] = {
        "text": fallback,
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
    }
    if isinstance(settings, SlackBot):
        body["channel"] = settings.channel
        carrier = contexts[0].get("id")
        if carrier is not None:
            # Read back after a lost answer: the message with this id in its metadata was sent.
            body["metadata"] = {
                "event_type": SLACK_EVENT_TYPE,
                "event_payload": {"id": str(carrier)},
            }
    return HttpMessage(body, _summary(contexts))


# --- Microsoft Teams -----------------------------------------------------------------------------


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _teams_body(contexts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if len(contexts) == 1:
        ctx = contexts[0]
        facts = [
            {"title": "From", "value": _rung(ctx, "from")},
            {"title": "To", "value": _rung(ctx, "to")},
            {"title": "Rule", "value": _rule(ctx)},
            {"title": "Priority", "value": str(ctx.get("priority") or "—")},
            {"title": "Next deadline", "value": _deadline(ctx) or "none"},
            {"title": "Helpdesk", "value": _where(ctx)},
        ]
        body: list[dict[str, Any]] = [
            _text_block(
                f"Escalated to {_one_line(ctx.get('to_level_name'))}",
                size="Medium",
                weight="Bolder",
            ),
            _text_block(_ticket(ctx)),
            {"type": "FactSet", "facts": facts},
        ]
        reasons = _reasons(ctx)
        if reasons:
            body.append(_text_block("Why", weight="Bolder"))
            body.extend(_text_block(f"• {r}", spacing="None") for r in reasons)
        return body
    body = [_text_block(f"{len(contexts)} escalations", size="Medium", weight="Bolder")]
    for ctx in contexts[:DIGEST_SHOWN]:
        url = ctx.get("url")
        title = f"[{_ticket(ctx)}]({url})" if url else _ticket(ctx)
        line = f"{_route(ctx)} · {_rule(ctx)}"
        deadline = _deadline(ctx)
        if deadline:
            line += f" · {deadline}"
        body.append(_text_block(title, weight="Bolder", separator=True))
        body.append(_text_block(line, isSubtle=True, spacing="None"))
    more = _more(contexts)
    if more:
        body.append(_text_block(more, isSubtle=True))
    return body


def _teams_actions(contexts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if len(contexts) != 1 or not contexts[0].get("url"):
        return []
    ctx = contexts[0]
    return [
        {"type": "Action.OpenUrl", "title": f"Open ticket #{ctx['ticket_id']}", "url": ctx["url"]}
    ]


def _teams(
    contexts: Sequence[Mapping[str, Any]],
    body: list[dict[str, Any]],
    actions: list[dict[str, Any]],
) -> HttpMessage:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "version": "1.4",
        "$schema": ADAPTIVE_SCHEMA,
        "body": body,
    }
    if actions:
        card["actions"] = actions
    message = {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }
    return HttpMessage(message, _summary(contexts))


# --- e-mail --------------------------------------------------------------------------------------


def _mail_subject(contexts: Sequence[Mapping[str, Any]]) -> str:
    if len(contexts) == 1:
        ctx = contexts[0]
        return f"[escbridge] {_ticket(ctx)} → {_one_line(ctx.get('to_level_name'))}"
    ids = ", ".join(f"#{c['ticket_id']}" for c in contexts[:5])
    more = ", …" if len(contexts) > 5 else ""
    return f"[escbridge] {len(contexts)} escalations ({ids}{more})"


def _mail_facts(ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("From", _rung(ctx, "from")),
        ("To", _rung(ctx, "to")),
        ("Rule", _rule(ctx)),
        ("Priority", str(ctx.get("priority") or "—")),
        ("Next deadline", _deadline(ctx) or "none"),
        ("Helpdesk", _where(ctx)),
    ]


def _mail_text_one(ctx: Mapping[str, Any]) -> str:
    lines = [f"Ticket {_ticket(ctx)}", f"escalated to {_rung(ctx, 'to')}."]
    if ctx.get("url"):
        lines.append(f"Open it: {ctx['url']}")
    lines.append("")
    lines.extend(f"{title + ':':<15}{value}" for title, value in _mail_facts(ctx))
    reasons = _reasons(ctx)
    if reasons:
        lines.append("Why:")
        lines.extend(f"  - {r}" for r in reasons)
    return "\n".join(lines)


def _mail_html_one(ctx: Mapping[str, Any]) -> str:
    e = html.escape
    url = ctx.get("url")
    title = f'<a href="{e(str(url))}">{e(_ticket(ctx))}</a>' if url else e(_ticket(ctx))
    rows = "".join(
        f'<tr><th align="left" style="padding-right:1em">{e(k)}</th><td>{e(v)}</td></tr>'
        for k, v in _mail_facts(ctx)
    )
    parts = [
        f"<h2>{title}</h2>",
        f"<p>escalated to <b>{e(_rung(ctx, 'to'))}</b>.</p>",
        f"<table>{rows}</table>",
    ]
    reasons = _reasons(ctx)
    if reasons:
        items = "".join(f"<li>{e(r)}</li>" for r in reasons)
        parts.append(f"<p><b>Why</b></p><ul>{items}</ul>")
    return "\n".join(parts)


def _mail_footer(ctx: Mapping[str, Any]) -> str:
    when = ctx.get("escalated_at")
    at = f", {_when(when, ctx)}" if when else ""
    return f"escbridge, matrix {ctx.get('matrix') or '—'}{at}"


def _mail(contexts: Sequence[Mapping[str, Any]]) -> MailMessage:
    shown = contexts[:DIGEST_SHOWN]
    more = _more(contexts)
    text_parts = [_mail_text_one(c) for c in shown]
    html_parts = [_mail_html_one(c) for c in shown]
    if more:
        text_parts.append(more + ".")
        html_parts.append(f"<p>{html.escape(more)}.</p>")
    footer = _mail_footer(contexts[-1])
    text = "\n\n".join(text_parts) + f"\n\n-- \n{footer}\n"
    body = "\n<hr>\n".join(html_parts)
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        f'{body}\n<p style="color:#666">{html.escape(footer)}</p>\n</body></html>\n'
    )
    return MailMessage(_mail_subject(contexts), text, page, _summary(contexts))


# --- signed webhook ------------------------------------------------------------------------------


def _webhook(contexts: Sequence[Mapping[str, Any]]) -> HttpMessage:
    body = {
        "type": "escalation" if len(contexts) == 1 else "digest",
        "id": contexts[0].get("id"),
        "escalations": [dict(c) for c in contexts],
    }
    return HttpMessage(body, _summary(contexts))


# --- a target's own template ---------------------------------------------------------------------


def _slack_values(value: Any) -> Any:
    """The context with every text Slack-escaped: what a Slack template prints is mrkdwn the
    admin wrote around values that cannot inject links or mentions."""
    if isinstance(value, str):
        return slack_escape(value)
    if isinstance(value, Mapping):
        return {k: _slack_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_slack_values(v) for v in value]
    return value


def _variables(ctx: Mapping[str, Any], count: int, slack: bool) -> dict[str, Any]:
    values = _slack_values(dict(ctx)) if slack else dict(ctx)
    return {**values, "count": count}


def _each(
    part: jinja2.Template | None, contexts: Sequence[Mapping[str, Any]], slack: bool
) -> list[str]:
    if part is None:
        return []
    count = len(contexts)
    return [part.render(_variables(c, count, slack)).strip() for c in contexts[:DIGEST_SHOWN]]


def _custom(
    target: NotifyTarget, template: MessageTemplate, contexts: Sequence[Mapping[str, Any]]
) -> Message:
    settings = target.settings
    slack = isinstance(settings, SlackWebhook | SlackBot)
    count = len(contexts)
    subject = (
        _one_line(template.subject.render(_variables(contexts[0], count, slack)))
        if template.subject is not None
        else None
    )
    texts = _each(template.text, contexts, slack)
    more = _more(contexts)
    if slack:
        assert isinstance(settings, SlackWebhook | SlackBot)
        blocks = [_header(subject)] if subject else []
        blocks.extend({"type": "section", "text": _mrkdwn(t)} for t in texts if t)
        if more:
            blocks.append({"type": "context", "elements": [_mrkdwn(more)]})
        if not blocks:
            return _default(target, contexts)
        fallback = subject or (texts[0] if texts else _slack_fallback(contexts))
        return _slack(settings, contexts, blocks, _cut(fallback, SLACK_TEXT_MAX))
    if isinstance(settings, TeamsWebhook):
        body = [_text_block(subject, size="Medium", weight="Bolder")] if subject else []
        body.extend(_text_block(t, separator=i > 0) for i, t in enumerate(texts) if t)
        if more:
            body.append(_text_block(more, isSubtle=True))
        if not body:
            return _default(target, contexts)
        return _teams(contexts, body, _teams_actions(contexts))
    default = _mail(contexts)
    htmls = _each(template.html, contexts, False)
    text = "\n\n".join(texts) + (f"\n\n{more}." if more else "") + "\n" if texts else default.text
    if htmls:
        page: str | None = "\n<hr>\n".join(htmls) + (
            f"\n<p>{html.escape(more)}.</p>" if more else ""
        )
    elif texts:
        page = None  # the admin's text alone: a default HTML part would say something else
    else:
        page = default.html
    return MailMessage(subject or default.subject, text, page, _summary(contexts))
