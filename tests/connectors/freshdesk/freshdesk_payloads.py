"""Freshdesk payloads in the shapes of ../shared/reference/freshdesk.md (recorded where marked)."""

from __future__ import annotations

import copy
from typing import Any

BASE = "https://acme.freshdesk.com/api/v2"
API_KEY = "fd-key-5ecret-0123456789"
WEBHOOK_SECRET = "wh-5ecret-abcdefghijklmnop"

# [REAL] Airbyte unit_tests/resource/http/response/tickets.json: a closed outbound-email ticket.
REAL_TICKET_21: dict[str, Any] = {
    "cc_emails": [],
    "fwd_emails": [],
    "reply_cc_emails": [],
    "ticket_cc_emails": [],
    "ticket_bcc_emails": [],
    "fr_escalated": False,
    "spam": False,
    "email_config_id": 67000041667,
    "group_id": None,
    "priority": 1,
    "requester_id": 67042965499,
    "responder_id": 67013469919,
    "source": 10,
    "company_id": 67001265522,
    "status": 5,
    "subject": "Test",
    "association_type": None,
    "support_email": "support@newaccount1603334233301.freshdesk.com",
    "to_emails": ["support@newaccount1603334233301.freshdesk.com"],
    "product_id": None,
    "id": 21,
    "type": None,
    "due_by": "2022-11-19T15:59:28Z",
    "fr_due_by": "2022-11-17T15:59:28Z",
    "is_escalated": False,
    "custom_fields": {},
    "created_at": "2022-11-16T15:59:28Z",
    "updated_at": "2022-11-16T15:59:28Z",
    "associated_tickets_count": None,
    "tags": [],
    "description": '<div style="font-family:-apple-system"><div dir="ltr">Test</div></div>',
    "description_text": "Test",
    "requester": {
        "id": 67042965499,
        "name": "Iryna Grankova",
        "email": "iryna.grankova@airbyte.io",
        "mobile": "+380636306253",
        "phone": None,
    },
    "stats": {
        "agent_responded_at": None,
        "requester_responded_at": None,
        "first_responded_at": None,
        "status_updated_at": "2022-11-16T15:59:28Z",
        "reopened_at": None,
        "resolved_at": "2022-11-16T15:59:28Z",
        "closed_at": "2022-11-16T15:59:28Z",
        "pending_since": None,
    },
    "structured_description": None,
    "nr_due_by": None,
    "nr_escalated": False,
}

# [DOC] the API docs' view-ticket sample (copied in the PHP wrapper).
DOC_TICKET_20: dict[str, Any] = {
    "cc_emails": ["user@cc.com"],
    "fwd_emails": [],
    "reply_cc_emails": ["user@cc.com"],
    "email_config_id": None,
    "fr_escalated": False,
    "group_id": None,
    "priority": 1,
    "requester_id": 1,
    "responder_id": None,
    "source": 2,
    "spam": False,
    "status": 2,
    "subject": "",
    "company_id": 1,
    "id": 20,
    "type": None,
    "to_emails": None,
    "product_id": None,
    "created_at": "2015-08-24T11:56:51Z",
    "updated_at": "2015-08-24T11:59:05Z",
    "due_by": "2015-08-27T11:30:00Z",
    "fr_due_by": "2015-08-25T11:30:00Z",
    "is_escalated": False,
    "association_type": None,
    "description_text": "Not given.",
    "description": "<div>Not given.</div>",
    "custom_fields": {"category": "Primary"},
    "tags": [],
    "attachments": [],
}

ESCALATIONS_ID = 67000259998
FRONTLINE_ID = 67000259990

# [CLIENT] sjkingo groups.json, with the account's own groups added.
GROUPS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Entertainers",
        "description": "Singers dancers and stand up comedians",
        "business_hour_id": None,
        "escalate_to": 1,
        "unassigned_for": "30m",
        "auto_ticket_assign": True,
        "created_at": "2014-01-08T07:53:41+05:30",
        "updated_at": "2014-01-08T07:53:41+05:30",
    },
    {"id": FRONTLINE_ID, "name": "Frontline", "description": "L1"},
    {"id": ESCALATIONS_ID, "name": "Escalations", "description": "L2"},
]

# [REAL] Airbyte expected_records.jsonl: the status field, plus a custom status 6.
TICKET_FIELDS: list[dict[str, Any]] = [
    {
        "id": 67000557961,
        "name": "status",
        "label": "Status",
        "type": "default_status",
        "choices": {
            "2": ["Open", "Being Processed"],
            "3": ["Pending", "Awaiting your Reply"],
            "4": ["Resolved", "This ticket has been Resolved"],
            "5": ["Closed", "This ticket has been Closed"],
            "6": ["Waiting on Customer", "Awaiting your Reply"],
            "7": ["Escalated to vendor", "Being Processed"],
        },
    },
    {
        "id": 67000557962,
        "name": "priority",
        "label": "Priority",
        "type": "default_priority",
        "choices": {"Low": 1, "Medium": 2, "High": 3, "Urgent": 4},
    },
    {"id": 67000557970, "name": "cf_escalation_level", "label": "Level", "type": "custom_text"},
]

# [REAL] Airbyte expected_records.jsonl: an agent (the API key's owner here).
AGENT_ME: dict[str, Any] = {
    "available": False,
    "occasional": False,
    "id": 67013469919,
    "ticket_scope": 1,
    "created_at": "2020-10-22T02:37:13Z",
    "updated_at": "2023-01-16T15:57:48Z",
    "last_active_at": "2023-01-16T15:57:48Z",
    "available_since": None,
    "type": "support_agent",
    "contact": {
        "active": True,
        "email": "integration-test@airbyte.io",
        "job_title": None,
        "language": "en",
        "last_login_at": "2022-12-29T13:41:44Z",
        "mobile": None,
        "name": "Team Airbyte",
        "phone": None,
        "time_zone": "Magadan",
        "created_at": "2020-10-22T02:37:13Z",
        "updated_at": "2020-10-22T03:30:13Z",
    },
    "signature": None,
}

# [CLIENT] sjkingo note_1.json
NOTE: dict[str, Any] = {
    "body": "<div>This is a private note</div>",
    "body_text": "This is a private note",
    "id": 1,
    "incoming": False,
    "private": True,
    "user_id": 1,
    "support_email": None,
    "source": 2,
    "ticket_id": 1,
    "to_emails": [],
    "from_email": None,
    "cc_emails": None,
    "bcc_emails": None,
    "created_at": "2016-05-19T05:36:12Z",
    "updated_at": "2016-05-19T05:36:12Z",
    "attachments": [],
}

# [SRC-2020] error bodies
ERROR_400 = {
    "description": "Validation failed",
    "errors": [
        {
            "field": "priority",
            "message": "It should be one of these values: '1,2,3,4'",
            "code": "invalid_value",
        },
        {
            "field": "group_id",
            "message": "There is no group matching the given group_id",
            "code": "invalid_value",
        },
        {"field": "foo", "message": "Unexpected/invalid field in request", "code": "invalid_field"},
    ],
}
ERROR_401 = {
    "code": "invalid_credentials",
    "message": "You have to be logged in to perform this action.",
}
ERROR_403 = {"code": "access_denied", "message": "You are not authorized to perform this action."}
ERROR_429 = {"message": "You have exceeded the limit of requests per hour"}

# [CLIENT] zulip fixtures/priority_changed.json (the "Simple" content of a rule)
ZULIP_PRIORITY_CHANGED: dict[str, Any] = {
    "freshdesk_webhook": {
        "triggered_event": "{priority:{from:3,to:1}}",
        "ticket_id": "11",
        "ticket_url": "http://test1234zzz.freshdesk.com/helpdesk/tickets/11",
        "ticket_type": "Incident",
        "ticket_subject": "Test ticket subject",
        "ticket_description": "<div>Test ticket description.</div>",
        "ticket_status": "Resolved",
        "ticket_priority": "Low",
        "requester_name": "Requester Bob",
        "requester_email": "requester-bob@example.com",
    }
}


def open_ticket(ticket_id: int = 1234, **changes: Any) -> dict[str, Any]:
    """The recorded ticket, made open and current, with ``changes`` applied."""
    raw = copy.deepcopy(REAL_TICKET_21)
    raw.update(
        {
            "id": ticket_id,
            "status": 2,
            "source": 1,
            "group_id": FRONTLINE_ID,
            "priority": 2,
            "tags": ["vip"],
            "created_at": "2026-03-10T08:00:00Z",
            "updated_at": "2026-03-11T09:30:00Z",
            "due_by": "2026-03-11T16:00:00Z",
            "fr_due_by": "2026-03-10T12:00:00Z",
        }
    )
    raw.update(changes)
    return raw
