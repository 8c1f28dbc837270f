"""Pure translations between Zoho Desk's JSON and escbridge's vocabulary (no I/O, unit-tested).

Shapes follow /work/shared/reference/zohodesk.md §2 and §6 (the masked live capture).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from escbridge.model import Channel, LevelMarker, Person, Priority, Status, Ticket
from escbridge_zohodesk.config import DEFAULT_PRIORITY_MAP

STATUS_TYPES = {"open": Status.OPEN, "on hold": Status.ON_HOLD, "closed": Status.CLOSED}
STATUS_NAMES = {
    "new": Status.NEW,
    "open": Status.OPEN,
    "escalated": Status.OPEN,
    "on hold": Status.ON_HOLD,
    "pending": Status.PENDING,
    "waiting on customer": Status.PENDING,
    "resolved": Status.SOLVED,
    "solved": Status.SOLVED,
    "closed": Status.CLOSED,
}
CHANNELS = {
    "email": Channel.EMAIL,
    "phone": Channel.PHONE,
    "chat": Channel.CHAT,
    "web": Channel.WEB,
    "forums": Channel.WEB,
    "feedback widget": Channel.WEB,
    "customer portal": Channel.WEB,
    "twitter": Channel.SOCIAL,
    "facebook": Channel.SOCIAL,
    "instagram": Channel.SOCIAL,
    "whatsapp": Channel.SOCIAL,
    "telegram": Channel.SOCIAL,
    "line": Channel.SOCIAL,
    "wechat": Channel.SOCIAL,
    "messenger": Channel.SOCIAL,
    "api": Channel.API,
}


# --------------------------------------------------------------------------- time


def parse_time(value: Any) -> datetime | None:
    """ISO (``2026-10-05T17:28:58.000Z``, what live Desk sends) or epoch milliseconds (number or
    digit string, what the OAS examples and webhook ``eventTime`` use)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return _from_epoch(float(text))
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _from_epoch(number: float) -> datetime:
    # Desk counts milliseconds; a value below 10^11 can only be seconds (before 1973 in ms).
    seconds = number / 1000.0 if abs(number) >= 1e11 else number
    return datetime.fromtimestamp(seconds, UTC)


def format_time(value: datetime) -> str:
    """The form Desk uses and its search ranges take: ``2026-07-14T00:00:00.000Z``."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------- priority


class PriorityMap:
    """Zoho's priority picklist <-> escbridge's four priorities.

    Reading is case-insensitive; a value nobody mapped is NORMAL (and named by ``unknown``).
    Writing picks the lowest Zoho value at or above what is asked, or the highest there is (a
    portal without "Urgent" gets "High" for urgent); among equals, the first in the map wins.
    """

    def __init__(self, mapping: Mapping[str, Priority]) -> None:
        self._read = {k.strip().lower(): Priority.parse(v) for k, v in mapping.items()}
        self._values = [(Priority.parse(v), k.strip()) for k, v in mapping.items()]

    def read(self, value: Any) -> Priority:
        if value is None or str(value).strip() == "":
            return Priority.NORMAL
        return self._read.get(str(value).strip().lower(), Priority.NORMAL)

    def known(self, value: Any) -> bool:
        return value is None or str(value).strip().lower() in self._read

    def write(self, priority: Priority) -> str:
        at_or_above = [(p, v) for p, v in self._values if p >= priority]
        if at_or_above:
            lowest = min(p for p, _ in at_or_above)
            return next(v for p, v in at_or_above if p == lowest)
        highest = max(p for p, _ in self._values)
        return next(v for p, v in self._values if p == highest)

    def values(self) -> list[str]:
        return [v for _, v in self._values]


# --------------------------------------------------------------------------- level marker


def tags_of(raw: Mapping[str, Any]) -> frozenset[str]:
    """The ``tags`` the connector put into the ticket JSON (names, or ``{"name": …}`` as
    ``GET /tickets/{id}/tags`` lists them): Desk's ticket GET itself has only ``tagCount``."""
    return frozenset(name.lower() for name in tag_names(raw))


def tag_names(raw: Mapping[str, Any]) -> list[str]:
    """The tag names in ``raw["tags"]`` as Desk spells them (removing one needs its name)."""
    out = []
    for tag in raw.get("tags") or ():
        name = tag.get("name") if isinstance(tag, Mapping) else tag
        if isinstance(name, str) and name.strip():
            out.append(name.strip())
    return out


# --------------------------------------------------------------------------- ticket


def parse_ticket(
    raw: Mapping[str, Any],
    *,
    instance: str = "default",
    priorities: PriorityMap | None = None,
    status_map: Mapping[str, Status] | None = None,
    level_field: str | None = "cf_escalation_level",
    team_names: Mapping[str, str] | None = None,
    department_names: Mapping[str, str] | None = None,
    tags_first: bool = False,
) -> Ticket:
    """A Desk ticket (GET /tickets/{id}, a search item or a webhook ``payload``) -> Ticket.

    - ``group`` is the team's name, else the department's (names come from the included
      ``team``/``department`` objects, else from the given id->name maps, else the id).
    - ``level`` comes from the marker tag ``escbridge_<level>`` and the ``level_field`` custom
      field: the field first, or with ``tags_first`` (the marker is a tag) the tags first, the
      field then holding what escalations before the switch wrote.
    - ``custom_fields`` is the ``cf`` map plus Desk's read-only flags ``is_overdue``,
      ``is_response_overdue`` and ``is_escalated``.
    - ``version`` is ``modifiedTime`` as sent: apply compares it to detect a concurrent edit.
    """
    priorities = priorities or PriorityMap(DEFAULT_PRIORITY_MAP)
    status = _status(raw, status_map or {})

    team = raw.get("team") if isinstance(raw.get("team"), Mapping) else None
    department = raw.get("department") if isinstance(raw.get("department"), Mapping) else None
    team_id = _id(raw.get("teamId")) or _id((team or {}).get("id"))
    department_id = _id(raw.get("departmentId")) or _id((department or {}).get("id"))
    group: str | None = None
    if team_id:
        group = (team or {}).get("name") or (team_names or {}).get(team_id) or team_id
    elif department_id:
        group = (
            (department or {}).get("name")
            or (department_names or {}).get(department_id)
            or department_id
        )

    contact = _mapping(raw.get("contact"))
    name = (
        " ".join(str(p) for p in (contact.get("firstName"), contact.get("lastName")) if p) or None
    )
    requester = Person(
        id=_id(raw.get("contactId")) or _id(contact.get("id")),
        name=name,
        email=raw.get("email") or contact.get("email"),
    )
    account = _mapping(contact.get("account"))
    account_id = _id(raw.get("accountId")) or _id(account.get("id"))
    organization = Person(id=account_id, name=account.get("accountName")) if account_id else None

    cf = _mapping(raw.get("cf"))
    custom: dict[str, Any] = dict(cf)
    for key, flag in (
        ("isOverDue", "is_overdue"),
        ("isResponseOverdue", "is_response_overdue"),
        ("isEscalated", "is_escalated"),
    ):
        if key in raw:
            custom[flag] = _bool(raw.get(key))

    tags = tags_of(raw)
    from_field = LevelMarker.level_of(cf.get(level_field)) if level_field else None
    from_tags = LevelMarker.from_tags(tags)
    level = (from_tags or from_field) if tags_first else (from_field or from_tags)

    created = parse_time(raw.get("createdTime"))
    updated = parse_time(raw.get("modifiedTime")) or created
    if created is None or updated is None:
        raise ValueError("a Zoho Desk ticket needs createdTime (and modifiedTime)")

    channel_raw = str(raw.get("channel") or "").strip().lower()
    return Ticket(
        id=str(raw["id"]),
        instance=instance,
        subject=str(raw.get("subject") or ""),
        description=html_to_text(str(raw.get("description") or "")),
        requester=requester,
        organization=organization,
        tags=tags,
        custom_fields=custom,
        channel=CHANNELS.get(channel_raw, Channel.OTHER),
        status=status,
        priority=priorities.read(raw.get("priority")),
        group=group,
        assignee=_id(raw.get("assigneeId")) or _id(_mapping(raw.get("assignee")).get("id")),
        created_at=created,
        updated_at=updated,
        last_customer_reply_at=parse_time(raw.get("customerResponseTime")),
        due_at=parse_time(raw.get("dueDate")),
        level=level,
        version=str(raw["modifiedTime"]) if raw.get("modifiedTime") else None,
    )


def _status(raw: Mapping[str, Any], overrides: Mapping[str, Status]) -> Status:
    name = str(raw.get("status") or "").strip()
    for key, value in overrides.items():
        if key.strip().lower() == name.lower():
            return value
    kind = STATUS_TYPES.get(str(raw.get("statusType") or "").strip().lower())
    by_name = STATUS_NAMES.get(name.lower())
    if kind is Status.CLOSED:
        # "Resolved"-like custom statuses of type Closed are solved; everything else closed.
        return by_name if by_name in (Status.SOLVED, Status.CLOSED) else Status.CLOSED
    if kind is Status.ON_HOLD:
        return by_name if by_name in (Status.PENDING, Status.ON_HOLD) else Status.ON_HOLD
    if kind is Status.OPEN:
        return by_name if by_name in (Status.NEW, Status.OPEN) else Status.OPEN
    return by_name or Status.OPEN


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text if text and text.lower() not in ("null", "undefined") else None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class _Text(HTMLParser):
    _BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(value: str) -> str:
    """Desk descriptions are HTML (``<div>…</div>``); rules match on the words."""
    if "<" not in value:
        return html.unescape(value).strip()
    parser = _Text()
    parser.feed(value)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()
