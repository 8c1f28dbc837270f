"""Freshdesk ticket JSON -> ``escbridge.Ticket``: pure, so it is tested on recorded payloads.

The reference data a ticket only points at (group names, custom status labels) is passed in as
``Lookups``; the connector keeps them cached from ``/groups`` and ``/ticket_fields``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from escbridge.model import Channel, LevelMarker, Person, Priority, Status, Ticket

__all__ = [
    "CHANNELS",
    "EXTRA_PREFIX",
    "STATUSES",
    "Lookups",
    "parse_ticket",
    "parse_time",
    "status_category",
]

EXTRA_PREFIX = "freshdesk."  # Freshdesk-only facts, kept in custom_fields under this prefix

#: The four built-in statuses. Ids 6 and up are an account's custom statuses.
STATUSES: Mapping[int, Status] = {
    2: Status.OPEN,
    3: Status.PENDING,
    4: Status.SOLVED,
    5: Status.CLOSED,
}

#: ``source`` codes: 1–13 as listed by a recorded account's ticket fields (airbytehq/airbyte
#: source-freshdesk ``expected_records.jsonl``, see ../shared/reference/freshdesk.md), 15 web
#: chat (chatwoot/chatwoot issue #15261, api-audit.md #17). Any other code (14, newer ones) is
#: undocumented and stays ``other``.
CHANNELS: Mapping[int, Channel] = {
    1: Channel.EMAIL,  # Email
    2: Channel.WEB,  # Portal
    3: Channel.PHONE,  # Phone
    4: Channel.WEB,  # Forum
    5: Channel.SOCIAL,  # Twitter
    6: Channel.SOCIAL,  # Facebook
    7: Channel.CHAT,  # Chat
    8: Channel.OTHER,  # MobiHelp (in-app SDK)
    9: Channel.WEB,  # Feedback Widget
    10: Channel.EMAIL,  # Outbound Email
    11: Channel.OTHER,  # Ecommerce
    12: Channel.CHAT,  # Bot
    13: Channel.CHAT,  # WhatsApp
    15: Channel.CHAT,  # Web chat
}

# Custom status names -> category when the admin did not map them (first match wins).
_STATUS_WORDS: Sequence[tuple[str, Status]] = (
    ("hold", Status.ON_HOLD),
    ("wait", Status.PENDING),
    ("pending", Status.PENDING),
    ("resolv", Status.SOLVED),
    ("solved", Status.SOLVED),
    ("clos", Status.CLOSED),
)


@dataclass(frozen=True)
class Lookups:
    """What the connector knows about the account: group names and custom status names."""

    groups: Mapping[int, str] = field(default_factory=dict)
    statuses: Mapping[int, str] = field(default_factory=dict)  # id -> agent-facing label
    status_categories: Mapping[str, Status] = field(default_factory=dict)  # admin's mapping


def status_category(code: int, lookups: Lookups) -> Status:
    """Built-in status by code; a custom one by the admin's mapping (id or name), else its name.

    A custom status whose name says nothing ("Escalated to vendor") counts as open: escalating
    a ticket that waits is a smaller failure than never escalating one that is stuck.
    """
    if code in STATUSES:
        return STATUSES[code]
    name = lookups.statuses.get(code, "")
    mapping = {k.strip().lower(): v for k, v in lookups.status_categories.items()}
    for key in (str(code), name.strip().lower()):
        if key and key in mapping:
            return mapping[key]
    lowered = name.lower()
    for word, status in _STATUS_WORDS:
        if word in lowered:
            return status
    return Status.OPEN


def parse_time(value: object) -> datetime | None:
    """ISO 8601 as Freshdesk writes it (``2022-11-16T15:59:28Z`` or with an offset)."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _text_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def parse_ticket(raw: Mapping[str, Any], lookups: Lookups, instance: str = "default") -> Ticket:
    """One ticket from ``GET /tickets/{id}`` or ``GET /tickets`` (with or without ``stats``)."""
    stats = raw.get("stats") or {}
    tags = [str(t) for t in raw.get("tags") or ()]
    status_code = int(raw.get("status") or 2)
    group_id = raw.get("group_id")
    group = None
    if group_id is not None:
        group = lookups.groups.get(int(group_id), str(group_id))
    requester_raw = raw.get("requester") or {}
    requester = Person(
        id=_text_id(raw.get("requester_id") or requester_raw.get("id")),
        name=requester_raw.get("name"),
        email=requester_raw.get("email") or raw.get("email"),
    )
    company = raw.get("company") or {}
    company_id = raw.get("company_id") or company.get("id")
    organization = Person(id=_text_id(company_id), name=company.get("name")) if company_id else None
    custom: dict[str, Any] = dict(raw.get("custom_fields") or {})
    extras = {
        "fr_due_by": raw.get("fr_due_by"),
        "nr_due_by": raw.get("nr_due_by"),
        "is_escalated": bool(raw.get("is_escalated")),
        "fr_escalated": bool(raw.get("fr_escalated")),
        "nr_escalated": bool(raw.get("nr_escalated")),
        "type": raw.get("type"),
        "status_code": status_code,
        "status_name": lookups.statuses.get(status_code),
        "source": raw.get("source"),
        "pending_since": stats.get("pending_since"),
        "agent_responded_at": stats.get("agent_responded_at"),
    }
    custom.update({EXTRA_PREFIX + k: v for k, v in extras.items() if v is not None})
    created = parse_time(raw.get("created_at"))
    updated = parse_time(raw.get("updated_at")) or created
    if created is None or updated is None:
        raise ValueError(f"Freshdesk ticket {raw.get('id')!r} has no created_at")
    return Ticket(
        id=str(raw["id"]),
        instance=instance,
        subject=str(raw.get("subject") or ""),
        description=str(raw.get("description_text") or ""),
        requester=requester,
        organization=organization,
        tags=frozenset(t.lower() for t in tags),
        custom_fields=custom,
        channel=CHANNELS.get(int(raw.get("source") or 0), Channel.OTHER),
        status=status_category(status_code, lookups),
        priority=Priority(int(raw.get("priority") or 1)),
        group=group,
        assignee=_text_id(raw.get("responder_id")),
        created_at=created,
        updated_at=updated,
        first_response_at=parse_time(stats.get("first_responded_at")),
        last_customer_reply_at=parse_time(stats.get("requester_responded_at")),
        due_at=parse_time(raw.get("due_by")),
        reopen_count=1 if stats.get("reopened_at") else 0,
        level=LevelMarker.from_tags(tags),
        version=str(raw.get("updated_at")) if raw.get("updated_at") else None,
    )
