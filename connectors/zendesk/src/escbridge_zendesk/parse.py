"""Pure translations between Zendesk's JSON and escbridge's vocabulary (no I/O, unit-tested).

Shapes follow ../shared/reference/zendesk.md (recorded responses where available).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from escbridge.connector.contract import Headers
from escbridge.errors import FieldError
from escbridge.http import ErrorDetails, RateLimit
from escbridge.model import Channel, LevelMarker, Person, Priority, Status, Ticket

STATUS = {
    "new": Status.NEW,
    "open": Status.OPEN,
    "pending": Status.PENDING,
    "hold": Status.ON_HOLD,
    "on-hold": Status.ON_HOLD,
    "solved": Status.SOLVED,
    "closed": Status.CLOSED,
    "deleted": Status.CLOSED,  # incremental export lists deleted tickets; never escalate them
}

PRIORITY = {
    "low": Priority.LOW,
    "normal": Priority.NORMAL,
    "high": Priority.HIGH,
    "urgent": Priority.URGENT,
}

CHANNEL = {
    "email": Channel.EMAIL,
    "web": Channel.WEB,
    "web_form": Channel.WEB,
    "web_widget": Channel.WEB,
    "help_center": Channel.WEB,
    "mobile_sdk": Channel.WEB,
    "voice": Channel.PHONE,
    "phone": Channel.PHONE,
    "sms": Channel.PHONE,
    "chat": Channel.CHAT,
    "native_messaging": Channel.CHAT,
    "messaging": Channel.CHAT,
    "chat_transcript": Channel.CHAT,
    "twitter": Channel.SOCIAL,
    "facebook": Channel.SOCIAL,
    "instagram_dm": Channel.SOCIAL,
    "whatsapp": Channel.SOCIAL,
    "line": Channel.SOCIAL,
    "wechat": Channel.SOCIAL,
    "api": Channel.API,
    "web_service": Channel.API,
}


def parse_time(value: Any) -> datetime | None:
    """Zendesk times: ISO 8601 with Z (also fractional seconds) or unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip().replace("Z", "+00:00")
    # Python < 3.11.x rejects 9-digit fractions (event payloads have nanoseconds): trim to 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """The ``updated_at`` form Zendesk uses: seconds, UTC, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(value: Any) -> str | None:
    """Ids as text; Zendesk's null-ish ids (``None``, ``""``, ``"0"``, 0) become None."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return None if text in ("", "0", "-1", "None", "null") else text


def parse_ticket(
    raw: Mapping[str, Any],
    *,
    instance: str = "default",
    group_names: Mapping[int, str] | None = None,
    metric_set: Mapping[str, Any] | None = None,
    users: Mapping[int, Mapping[str, Any]] | None = None,
    latest_comment: str = "",
) -> Ticket:
    """A Zendesk ticket object (or ``{"ticket": …}`` with sideloads) -> Ticket.

    - ``priority: null`` (new tickets) is taken as NORMAL, Zendesk's middle value: the engine
      then raises it only to high/urgent, and a rule on "low" does not match unset tickets.
    - ``status: hold`` -> ON_HOLD; with custom statuses, ``status`` is the category (what we use).
    - ``group`` is the group's name when known (matrices name groups), else its id as text.
    - ``custom_fields`` -> ``{"<field id>": value}``.
    - ``version`` is ``updated_at`` exactly as sent: it goes back as ``updated_stamp``.
    - ``latest_comment``: ticket JSON carries no comments; the caller passes the newest public
      comment's text (see ``latest_public_comment``) or leaves it empty.
    """
    if "ticket" in raw and isinstance(raw["ticket"], Mapping):
        envelope = raw
        raw = raw["ticket"]
        if metric_set is None:
            metric_set = _sideloaded_metric_set(envelope, raw.get("id"))
        if users is None and isinstance(envelope.get("users"), list):
            users = {u["id"]: u for u in envelope["users"] if isinstance(u, Mapping) and "id" in u}
        if group_names is None and isinstance(envelope.get("groups"), list):
            group_names = {g["id"]: g["name"] for g in envelope["groups"] if "id" in g}
    if metric_set is None and isinstance(raw.get("metric_set"), Mapping):
        metric_set = raw["metric_set"]

    tags = [str(t).lower() for t in raw.get("tags") or []]
    group_id = raw.get("group_id")
    group = None
    if group_id is not None:
        group = (group_names or {}).get(int(group_id)) or str(group_id)

    requester_id = raw.get("requester_id")
    requester_raw = (users or {}).get(requester_id) if requester_id is not None else None
    requester = Person(
        id=_id(requester_id),
        name=(requester_raw or {}).get("name"),
        email=(requester_raw or {}).get("email"),
    )
    org_id = _id(raw.get("organization_id"))

    custom: dict[str, Any] = {}
    for field in raw.get("custom_fields") or raw.get("fields") or []:
        if isinstance(field, Mapping) and "id" in field:
            custom[str(field["id"])] = field.get("value")

    priority_raw = raw.get("priority")
    priority = PRIORITY.get(str(priority_raw).lower(), Priority.NORMAL) if priority_raw else None
    status_raw = str(raw.get("status") or "open").lower()
    via = raw.get("via") or {}
    channel = CHANNEL.get(str(via.get("channel") or "").lower(), Channel.OTHER)

    created = parse_time(raw.get("created_at"))
    updated = parse_time(raw.get("updated_at")) or created
    if created is None or updated is None:
        raise ValueError("a Zendesk ticket needs created_at and updated_at")

    first_response_at = None
    last_customer = None
    reopens = 0
    if metric_set:
        reopens = int(metric_set.get("reopens") or 0)
        last_customer = parse_time(metric_set.get("requester_updated_at"))
        reply = metric_set.get("reply_time_in_minutes") or {}
        minutes = reply.get("calendar") if isinstance(reply, Mapping) else None
        if isinstance(minutes, int | float) and (metric_set.get("replies") or 0) > 0:
            first_response_at = created + timedelta(minutes=minutes)

    return Ticket(
        id=str(raw["id"]),
        instance=instance,
        subject=raw.get("subject") or raw.get("raw_subject") or "",
        description=raw.get("description") or "",
        latest_comment=latest_comment,
        requester=requester,
        organization=Person(id=org_id) if org_id else None,
        tags=frozenset(tags),
        custom_fields=custom,
        channel=channel,
        status=STATUS.get(status_raw, Status.OPEN),
        priority=priority or Priority.NORMAL,
        group=group,
        assignee=_id(raw.get("assignee_id")),
        created_at=created,
        updated_at=updated,
        first_response_at=first_response_at,
        last_customer_reply_at=last_customer,
        due_at=parse_time(raw.get("due_at")),
        reopen_count=reopens,
        level=LevelMarker.from_tags(tags),
        version=str(raw["updated_at"]) if raw.get("updated_at") else None,
    )


def latest_public_comment(comments: Sequence[Mapping[str, Any]]) -> str:
    """The ``body`` of the newest comment with ``public: true`` ("" if none).

    Internal notes (``public: false``, escbridge's own among them) are skipped; order is taken
    from ``created_at`` (then ``id``), so the list may come in either sort order.
    """
    public = [c for c in comments if isinstance(c, Mapping) and c.get("public") is True]
    if not public:
        return ""

    def key(c: Mapping[str, Any]) -> tuple[datetime, int]:
        when = parse_time(c.get("created_at")) or datetime.min.replace(tzinfo=UTC)
        cid = c.get("id")
        return when, cid if isinstance(cid, int) and not isinstance(cid, bool) else 0

    newest = max(public, key=key)
    return str(newest.get("body") or newest.get("plain_body") or "")


def _sideloaded_metric_set(envelope: Mapping[str, Any], ticket_id: Any) -> Mapping[str, Any] | None:
    sets = envelope.get("metric_sets")
    if isinstance(sets, list):
        for item in sets:
            if isinstance(item, Mapping) and item.get("ticket_id") == ticket_id:
                return item
    single = envelope.get("metric_set")
    return single if isinstance(single, Mapping) else None


# --------------------------------------------------------------------------- errors


def parse_error(status: int, body: Any) -> ErrorDetails:
    """Zendesk error bodies -> message, code and field errors.

    Seen: ``{"error": "RecordNotFound", "description": "Not found"}``;
    ``{"error": "Couldn't authenticate you"}``; OAuth ``{"error": "invalid_token",
    "error_description": …}``; 422 ``{"error": "RecordInvalid", "description": …, "details":
    {"status": [{"description": …, "error": …}]}}``; ``{"error": {"title", "message"}}``;
    429 as ``text/plain``.
    """
    if isinstance(body, str):
        text = body.strip()
        return ErrorDetails(text[:200] if text else _default_message(status))
    if not isinstance(body, Mapping):
        return ErrorDetails(_default_message(status))
    error = body.get("error")
    code: str | None
    if isinstance(error, Mapping):
        code = str(error.get("title") or error.get("code") or "") or None
        message = str(error.get("message") or error.get("title") or _default_message(status))
    else:
        code = str(error) if error is not None else None
        message = str(
            body.get("description") or body.get("error_description") or error or ""
        ) or _default_message(status)
    fields: list[FieldError] = []
    details = body.get("details")
    if isinstance(details, Mapping):
        for name, items in details.items():
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, Mapping):
                    fields.append(
                        FieldError(
                            str(name),
                            str(item.get("description") or item.get("message") or item),
                            str(item["error"]) if item.get("error") else None,
                        )
                    )
                else:
                    fields.append(FieldError(str(name), str(item)))
    return ErrorDetails(message, code, tuple(fields))


def _default_message(status: int) -> str:
    return {
        401: "credentials not accepted",
        403: "not allowed for this user",
        404: "not found",
        409: "the ticket changed since it was read",
        429: "rate limited",
    }.get(status, f"HTTP {status}")


# --------------------------------------------------------------------------- rate limits

_KV = re.compile(r"(\w+)\s*=\s*(\d+(?:\.\d+)?)")


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """The most constraining rate limit in a Zendesk response's headers.

    Names differ by year and endpoint, all are read case-insensitively: ``X-Rate-Limit`` /
    ``X-Rate-Limit-Remaining``; ``ratelimit-limit|remaining|reset`` (2024);
    ``rate-limit``, ``rate-limit-remaining``, ``rate-limit-reset`` (2023); and endpoint limits
    ``Zendesk-RateLimit-<endpoint>`` / ``zendesk-rate-limit-<endpoint>``:
    ``total=100; remaining=99; resets=41``.
    """
    found = Headers(headers)
    readings: list[RateLimit] = []
    for limit_h, remaining_h, reset_h in (
        ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"),
        ("rate-limit", "rate-limit-remaining", "rate-limit-reset"),
        ("x-rate-limit", "x-rate-limit-remaining", "x-rate-limit-reset"),
    ):
        remaining = _int(found.get(remaining_h))
        if remaining is not None:
            reset = _float(found.get(reset_h)) or _float(found.get("ratelimit-reset"))
            readings.append(RateLimit(remaining, _int(found.get(limit_h)), reset))
    for name, value in found.items():
        if name.lower().startswith(("zendesk-ratelimit-", "zendesk-rate-limit-")):
            kv = {k.lower(): v for k, v in _KV.findall(value)}
            if "remaining" in kv:
                readings.append(
                    RateLimit(
                        int(float(kv["remaining"])),
                        int(float(kv["total"])) if "total" in kv else None,
                        float(kv["resets"]) if "resets" in kv else None,
                    )
                )
    if not readings:
        return None
    return min(readings, key=lambda r: (r.remaining, -(r.reset_seconds or 0)))


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- job results


def job_result_outcomes(
    results: Any, ids: Sequence[str] = ()
) -> dict[str, tuple[bool, str | None, bool]]:
    """update_many job results -> ``{ticket id: (ok, error, is_conflict)}``.

    Success is recorded as ``{"action": "update", "status": "Updated", "success": true, "id": N}``.
    The failure shape for tickets is not documented, so any of ``success: false``,
    ``status: "Failed"`` or an ``error`` key counts as a failure, and ``UpdateConflict`` or a
    mention of safe update marks a concurrent edit. A real failed entry may carry only
    ``index`` (its position in the submitted batch), no ``id`` — e.g.
    ``{"index": 0, "error": "TicketCreateFailed", "details": "Description: cannot be blank"}``
    (cloudbees-oss/zendesk-java-client issue #98) — so an entry without ``id`` is mapped to
    ``ids[index]``, ``ids`` being the submitted tickets in order.
    """
    out: dict[str, tuple[bool, str | None, bool]] = {}
    if not isinstance(results, list):
        return out
    for entry in results:
        if not isinstance(entry, Mapping):
            continue
        ticket_id = _result_ticket_id(entry, ids)
        if ticket_id is None:
            continue
        failed = (
            entry.get("success") is False
            or str(entry.get("status", "")).lower() in ("failed", "error")
            or bool(entry.get("error"))
        )
        if not failed:
            out[ticket_id] = (True, None, False)
            continue
        error = str(entry.get("error") or entry.get("status") or "Failed")
        details = entry.get("details") or entry.get("description") or entry.get("errors")
        text = f"{error}: {details}" if details else error
        conflict = (
            "updateconflict" in text.lower().replace(" ", "") or "safe update" in text.lower()
        )
        out[ticket_id] = (False, text, conflict)
    return out


def _result_ticket_id(entry: Mapping[str, Any], ids: Sequence[str]) -> str | None:
    """The ticket a job result entry is about: its ``id``, else ``ids[index]``."""
    if entry.get("id") is not None:
        return str(entry["id"])
    index = entry.get("index")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(ids):
        return str(ids[index])
    return None
