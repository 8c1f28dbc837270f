"""What the far ends check, written from the platforms' documentation and from escbridge's
documented webhook recipe — not from escbridge's code, so a change on either side shows.

- :func:`slack_problems`: Block Kit as api.slack.com/reference/block-kit/blocks documents it
  (``text`` and/or ``blocks``; at most 50 blocks; a header's plain text at most 150
  characters; a section's text at most 3000, its fields at most 10 of 2000 each; a context
  block at most 10 elements; text objects ``plain_text`` or ``mrkdwn``).
- :func:`teams_problems`: the message envelope Teams incoming webhooks and workflows take
  (``{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": card}]}``, at most 28 KB) and the card
  against the published Adaptive Card 1.4 schema (tests/contract/schemas/teams/).
- :class:`WebhookReceiver`: a receiver of escbridge's signed webhook following the recipe of
  the notifications page: recompute ``v1=HMAC-SHA256(secret, "<timestamp>.<raw body>")``,
  compare in constant time, refuse a timestamp more than 5 minutes off, and act once per
  ``X-Escbridge-Delivery`` (a resent delivery is acknowledged, not acted on again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = (
    Path(__file__).resolve().parents[1]
    / "contract"
    / "schemas"
    / "teams"
    / "adaptive-card-1.4.json"
)
ADAPTIVE = "application/vnd.microsoft.card.adaptive"
TEAMS_MAX_BYTES = 28 * 1024
SLACK_BLOCKS = {"section", "header", "context", "divider", "actions", "image", "rich_text"}
SLACK_MESSAGE_KEYS = {
    "text", "blocks", "attachments", "thread_ts", "mrkdwn", "unfurl_links", "unfurl_media",
    "username", "icon_emoji", "icon_url", "channel", "metadata", "reply_broadcast",
}  # fmt: skip


def _text_object(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: not a text object"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    if len(text) > limit:
        return [f"{where}: {len(text)} characters, more than {limit}"]
    return []


def slack_problems(body: Mapping[str, Any]) -> list[str]:
    """What Slack would refuse (invalid_blocks, invalid_payload) in a message body."""
    problems = [f"unknown key {k!r}" for k in body if k not in SLACK_MESSAGE_KEYS]
    blocks = body.get("blocks")
    if not body.get("text") and not blocks:
        problems.append("neither text nor blocks")
    if blocks is None:
        return problems
    if not isinstance(blocks, list) or len(blocks) > 50:
        return [*problems, "blocks: not a list of at most 50"]
    for n, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"blocks[{n}] ({kind})"
        if kind not in SLACK_BLOCKS:
            problems.append(f"{where}: unknown block type")
        elif kind == "header":
            problems += _text_object(block.get("text"), where, 150, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: neither text nor fields")
            if "text" in block:
                problems += _text_object(block["text"], f"{where}.text", 3000)
            fields = block.get("fields", [])
            if len(fields) > 10:
                problems.append(f"{where}: {len(fields)} fields, more than 10")
            for i, item in enumerate(fields):
                problems += _text_object(item, f"{where}.fields[{i}]", 2000)
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 10:
                problems.append(f"{where}: {len(elements)} elements, not 1 to 10")
            for i, item in enumerate(elements):
                if item.get("type") != "image":
                    problems += _text_object(item, f"{where}.elements[{i}]", 3000)
    return problems


@cache
def _card_validator() -> jsonschema.Draft6Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8-sig"))
    return jsonschema.Draft6Validator(schema)


def teams_problems(body: Mapping[str, Any]) -> list[str]:
    """What a Teams webhook or workflow would refuse or fail to show."""
    problems = []
    size = len(json.dumps(body).encode())
    if size > TEAMS_MAX_BYTES:
        problems.append(f"{size} bytes, more than 28 KB")
    if body.get("type") != "message":
        problems.append('type is not "message"')
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return [*problems, "not exactly one attachment"]
    attachment = attachments[0]
    if attachment.get("contentType") != ADAPTIVE:
        problems.append(f"contentType {attachment.get('contentType')!r}")
    card = attachment.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return [*problems, "content is not an AdaptiveCard"]
    if card.get("version") != "1.4":
        problems.append(f"version {card.get('version')!r}, not 1.4")
    for error in _card_validator().iter_errors(card):
        best = jsonschema.exceptions.best_match([error])
        problems.append(f"card: {best.message} at {list(best.absolute_path)}")
    return problems


def card_text(body: Mapping[str, Any]) -> str:
    """Every text a Teams card shows, one line each (TextBlock texts, facts, action titles and
    URLs), for checking content."""
    lines: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value", "url"):
                if isinstance(node.get(key), str):
                    lines.append(node[key])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body["attachments"][0]["content"])
    return "\n".join(lines)


def slack_text(body: Mapping[str, Any]) -> str:
    """Every text of a Slack message (fallback and blocks), for checking content."""
    lines = [str(body.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                lines.append(node["text"])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("blocks", []))
    return "\n".join(lines)


@dataclass
class WebhookReceiver:
    """A receiver written from the documented recipe (see the module's docstring). ``acted``
    holds the payloads acted on, once per delivery id; ``refused`` why requests were refused."""

    secret: str
    now: Callable[[], float]
    tolerance: int = 300
    acted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def receive(self, headers: Mapping[str, str], body: bytes) -> int:
        """The HTTP status the receiver answers."""
        lower = {k.lower(): v for k, v in headers.items()}
        stamp = lower.get("x-escbridge-timestamp", "")
        signature = lower.get("x-escbridge-signature", "")
        delivery = lower.get("x-escbridge-delivery", "")
        if not stamp.isdigit() or not signature.startswith("v1=") or not delivery:
            self.refused.append("headers missing")
            return 400
        if abs(self.now() - int(stamp)) > self.tolerance:
            self.refused.append("timestamp too far off")
            return 400
        expected = hmac.new(
            self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature[3:]):
            self.refused.append("bad signature")
            return 401
        if delivery in self.seen:
            return 200  # a resend: acknowledged, not acted on again
        self.seen.add(delivery)
        self.acted.append(json.loads(body))
        return 200
