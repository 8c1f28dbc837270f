"""Zendesk payloads in the shapes of ../shared/reference/zendesk.md (recorded where marked)."""

from __future__ import annotations

import copy
from typing import Any

# [REAL] zenpy cassette, ticket 4016 (a brand-new API ticket: priority null, status new).
REAL_TICKET_4016: dict[str, Any] = {
    "url": "https://z3n-jteitelbaum.zendesk.com/api/v2/tickets/4016.json",
    "id": 4016,
    "external_id": None,
    "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
    "created_at": "2023-09-18T23:26:00Z",
    "updated_at": "2023-09-18T23:26:01Z",
    "type": None,
    "subject": "test…",
    "raw_subject": "test…",
    "description": "test",
    "priority": None,
    "status": "new",
    "recipient": None,
    "requester_id": 6130907993114,
    "submitter_id": 6130907993114,
    "assignee_id": None,
    "organization_id": 6130869157658,
    "group_id": None,
    "collaborator_ids": [],
    "follower_ids": [],
    "email_cc_ids": [],
    "forum_topic_id": None,
    "problem_id": None,
    "has_incidents": False,
    "is_public": True,
    "due_at": None,
    "tags": [],
    "custom_fields": [],
    "satisfaction_rating": None,
    "sharing_agreement_ids": [],
    "custom_status_id": 6130830355738,
    "fields": [],
    "followup_ids": [],
    "ticket_form_id": 6130830344474,
    "brand_id": 6130830354842,
    "allow_channelback": False,
    "allow_attachments": True,
    "from_messaging_channel": False,
}

# [OFFICIAL] the Tickets doc example (35436), with custom fields and tags.
OFFICIAL_TICKET_35436: dict[str, Any] = {
    "id": 35436,
    "url": "https://company.zendesk.com/api/v2/tickets/35436.json",
    "external_id": "ahg35h3jh",
    "created_at": "2009-07-20T22:55:29Z",
    "updated_at": "2011-05-05T10:38:52Z",
    "type": "incident",
    "subject": "Help, my printer is on fire!",
    "raw_subject": "{{dc.printer_on_fire}}",
    "description": "The fire is very colorful.",
    "priority": "high",
    "status": "open",
    "recipient": "support@company.com",
    "requester_id": 20978392,
    "submitter_id": 76872,
    "assignee_id": 235323,
    "organization_id": 509974,
    "group_id": 98738,
    "collaborator_ids": [35334, 234],
    "follower_ids": [35334, 234],
    "problem_id": 9873764,
    "has_incidents": False,
    "due_at": None,
    "tags": ["enterprise", "other_tag"],
    "via": {"channel": "web"},
    "custom_fields": [{"id": 27642, "value": "745"}, {"id": 27648, "value": "yes"}],
    "satisfaction_rating": {"id": 1234, "score": "good", "comment": "Great support!"},
    "sharing_agreement_ids": [84432],
}

GROUPS_PAGE: dict[str, Any] = {
    "groups": [
        {
            "url": "https://acme.zendesk.com/api/v2/groups/6130852536346.json",
            "id": 6130852536346,
            "is_public": True,
            "name": "Support",
            "description": "",
            "default": True,
            "deleted": False,
            "created_at": "2023-09-18T23:00:00Z",
            "updated_at": "2023-09-18T23:00:00Z",
        },
        {"id": 98738, "name": "Tier 2", "deleted": False, "default": False},
        {"id": 98739, "name": "Old team", "deleted": True, "default": False},
    ],
    "meta": {"has_more": False, "after_cursor": None, "before_cursor": None},
    "links": {"prev": None, "next": None},
}

ME_ADMIN = {
    "user": {
        "id": 6130907993114,
        "name": "escbridge",
        "email": "escbridge@acme.example",
        "role": "admin",
        "active": True,
    }
}

# [REAL] job status progression of update_many.
JOB_QUEUED = {
    "job_status": {
        "id": "V3-47ed1567a1b2",
        "url": "https://acme.zendesk.com/api/v2/job_statuses/V3-47ed1567a1b2.json",
        "total": 3,
        "progress": None,
        "status": "queued",
        "message": None,
        "results": None,
    }
}


def job(status: str, results: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    body = copy.deepcopy(JOB_QUEUED)
    body["job_status"].update(status=status, results=results, **kw)
    return body


# [3P, real-looking] event subscription payload: string ids, UPPERCASE enums.
EVENT_TICKET_CREATED: dict[str, Any] = {
    "account_id": 22129848,
    "detail": {
        "actor_id": "8447388090494",
        "assignee_id": "8447388090494",
        "brand_id": "8447346621310",
        "created_at": "2025-01-08T10:12:07Z",
        "custom_status": "8447320465790",
        "description": "…",
        "external_id": None,
        "form_id": "8646151517822",
        "group_id": "8447320466430",
        "id": "5158",
        "is_public": True,
        "organization_id": "8447346622462",
        "priority": "LOW",
        "requester_id": "8447388090494",
        "status": "OPEN",
        "subject": "…",
        "submitter_id": "8447388090494",
        "tags": ["ticket-info-test-tag"],
        "type": "TASK",
        "updated_at": "2025-01-08T10:12:07Z",
        "via": {"channel": "web_service"},
    },
    "event": {},
    "id": "cbe4028c-7f4e-4a3b-9d55-0c6f2c7e1a11",
    "subject": "zen:ticket:5158",
    "time": "2025-01-08T10:12:07.672717030Z",
    "type": "zen:event-type:ticket.created",
    "zendesk_event_version": "2022-11-06",
}

# [REAL] user.deleted envelope (not a ticket event).
EVENT_USER_DELETED: dict[str, Any] = {
    "account_id": 18525119,
    "detail": {},
    "event": {},
    "id": "b3695d61-2ef4-4e9c-97af-1f065c099564",
    "subject": "zen:user:6164069643162",
    "time": "2023-09-18T23:30:03Z",
    "type": "zen:event-type:user.deleted",
    "zendesk_event_version": "2022-11-06",
}

ERROR_404 = {"error": "RecordNotFound", "description": "Not found"}
ERROR_401 = {"error": "Couldn't authenticate you"}
ERROR_401_OAUTH = {
    "error": "invalid_token",
    "error_description": "The access token provided is expired, revoked, malformed or invalid "
    "for other reasons.",
}
ERROR_422_CLOSED = {
    "error": "RecordInvalid",
    "description": "Record validation errors",
    "details": {"status": [{"description": "Status: closed prevents ticket update"}]},
}
ERROR_400_TOO_MANY = {
    "error": "TooManyValues",
    "description": "Parameter  cannot specify more than 100 values",
    "max_count": 100,
}
ERROR_409 = {
    "error": "UpdateConflict",
    "description": "Safe Update prevented the update due to outdated ticket data.",
}
ERROR_SEARCH_CAP = {
    "error": "invalid",
    "description": "Invalid search: Requested response size was greater than Search Response "
    "Limits",
}
THROTTLED_TEXT = "Number of allowed API requests per minute exceeded"


def ticket(**changes: Any) -> dict[str, Any]:
    """The official example ticket with changes."""
    return {**copy.deepcopy(OFFICIAL_TICKET_35436), **changes}


def comment(cid: int, body: str, *, public: bool, created_at: str) -> dict[str, Any]:
    """One entry of List Comments ``{"comments": [...]}`` (Ticket Comments JSON format)."""
    return {
        "id": cid,
        "type": "Comment",
        "author_id": 6130907993114,
        "body": body,
        "html_body": f'<div class="zd-comment" dir="auto"><p>{body}</p></div>',
        "plain_body": body,
        "public": public,
        "attachments": [],
        "audit_id": cid + 1,
        "via": {"channel": "web", "source": {"from": {}, "to": {}, "rel": None}},
        "metadata": {"system": {}, "custom": {}},
        "created_at": created_at,
    }


def comments_page(*items: dict[str, Any]) -> dict[str, Any]:
    return {"comments": list(items), "next_page": None, "previous_page": None, "count": len(items)}
