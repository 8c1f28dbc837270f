"""Pure translations of Zendesk JSON, on recorded-shaped payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from escbridge_zendesk.parse import (
    job_result_outcomes,
    parse_error,
    parse_rate_limit,
    parse_ticket,
    parse_time,
)
from zendesk_payloads import (
    ERROR_401,
    ERROR_401_OAUTH,
    ERROR_404,
    ERROR_422_CLOSED,
    OFFICIAL_TICKET_35436,
    REAL_TICKET_4016,
    THROTTLED_TEXT,
    ticket,
)

from escbridge.errors import FieldError
from escbridge.http import RateLimit
from escbridge.model import Channel, Priority, Status


def test_real_new_ticket_with_null_priority() -> None:
    t = parse_ticket(REAL_TICKET_4016, instance="eu")
    assert t.id == "4016" and t.instance == "eu"
    assert t.priority is Priority.NORMAL  # null: unset, taken as the middle value
    assert t.status is Status.NEW
    assert t.group is None and t.assignee is None
    assert t.channel is Channel.API
    assert t.organization is not None and t.organization.id == "6130869157658"
    assert t.requester.id == "6130907993114"
    assert t.created_at == datetime(2023, 9, 18, 23, 26, tzinfo=UTC)
    assert t.version == "2023-09-18T23:26:01Z"  # exactly as sent: goes back as updated_stamp
    assert t.level is None and t.tags == frozenset()


def test_official_example_with_group_name_custom_fields_and_tags() -> None:
    t = parse_ticket(OFFICIAL_TICKET_35436, group_names={98738: "Tier 2"})
    assert t.subject == "Help, my printer is on fire!"
    assert t.priority is Priority.HIGH and t.status is Status.OPEN
    assert t.group == "Tier 2"
    assert t.assignee == "235323"
    assert t.custom_fields == {"27642": "745", "27648": "yes"}
    assert t.tags == {"enterprise", "other_tag"}
    assert t.channel is Channel.WEB


def test_unknown_group_id_is_kept_as_text() -> None:
    assert parse_ticket(OFFICIAL_TICKET_35436).group == "98738"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("new", Status.NEW),
        ("open", Status.OPEN),
        ("pending", Status.PENDING),
        ("hold", Status.ON_HOLD),
        ("solved", Status.SOLVED),
        ("closed", Status.CLOSED),
        ("deleted", Status.CLOSED),
    ],
)
def test_status_mapping_includes_hold(raw: str, expected: Status) -> None:
    assert parse_ticket(ticket(status=raw)).status is expected


@pytest.mark.parametrize("raw", ["low", "normal", "high", "urgent"])
def test_priorities(raw: str) -> None:
    assert parse_ticket(ticket(priority=raw)).priority is Priority[raw.upper()]


def test_level_marker_from_tags_lexicographically_last() -> None:
    t = parse_ticket(ticket(tags=["vip", "escbridge_l2", "escbridge_l3"]))
    assert t.level == "l3"
    assert parse_ticket(ticket(tags=["escbridge_billing"])).level == "billing"
    assert parse_ticket(ticket(tags=["escbridge_", "other"])).level is None


def test_envelope_with_sideloads_and_metric_set() -> None:
    raw = {
        "ticket": ticket(),
        "groups": [{"id": 98738, "name": "Tier 2"}],
        "users": [{"id": 20978392, "name": "Carla", "email": "carla@customer.example"}],
        "metric_sets": [
            {
                "ticket_id": 35436,
                "reopens": 2,
                "replies": 1,
                "reply_time_in_minutes": {"calendar": 90, "business": 30},
                "requester_updated_at": "2011-05-05T10:00:00Z",
            }
        ],
    }
    t = parse_ticket(raw)
    assert t.group == "Tier 2"
    assert (t.requester.name, t.requester.email) == ("Carla", "carla@customer.example")
    assert t.reopen_count == 2
    assert t.first_response_at == t.created_at + timedelta(minutes=90)
    assert t.last_customer_reply_at == datetime(2011, 5, 5, 10, tzinfo=UTC)


def test_times_with_nanoseconds_and_unix_seconds() -> None:
    assert parse_time("2025-01-08T10:12:07.672717030Z") == datetime(
        2025, 1, 8, 10, 12, 7, 672717, tzinfo=UTC
    )
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(None) is None


def test_error_bodies() -> None:
    assert parse_error(404, ERROR_404).message == "Not found"
    assert parse_error(404, ERROR_404).code == "RecordNotFound"
    assert parse_error(401, ERROR_401).message == "Couldn't authenticate you"
    assert parse_error(401, ERROR_401_OAUTH).code == "invalid_token"
    assert parse_error(401, ERROR_401_OAUTH).message.startswith("The access token provided")
    details = parse_error(422, ERROR_422_CLOSED)
    assert details.fields == (FieldError("status", "Status: closed prevents ticket update"),)
    assert parse_error(429, THROTTLED_TEXT).message == THROTTLED_TEXT  # text/plain body
    assert parse_error(404, None).message == "not found"  # empty body
    nested = parse_error(
        403, {"error": {"title": "Forbidden", "message": "You do not have access"}}
    )
    assert (nested.code, nested.message) == ("Forbidden", "You do not have access")


def test_422_detail_codes_are_kept() -> None:
    body = {
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {
            "email": [{"description": "Email: is already taken", "error": "DuplicateValue"}]
        },
    }
    assert parse_error(422, body).fields == (
        FieldError("email", "Email: is already taken", "DuplicateValue"),
    )


def test_rate_limit_headers_both_spellings_and_most_constraining() -> None:
    observed_2023 = {
        "rate-limit": "700",
        "rate-limit-remaining": "650",
        "rate-limit-reset": "30",
        "zendesk-rate-limit-tickets-update": "total=20; remaining=19; resets=59",
    }
    assert parse_rate_limit(observed_2023) == RateLimit(19, 20, 59.0)
    documented = {
        "X-Rate-Limit": "700",
        "X-Rate-Limit-Remaining": "699",
        "Zendesk-RateLimit-tickets-index": "total=100; remaining=99; resets=41",
    }
    assert parse_rate_limit(documented) == RateLimit(99, 100, 41.0)
    assert parse_rate_limit(
        {"ratelimit-limit": "400", "ratelimit-remaining": "3", "ratelimit-reset": "12"}
    ) == RateLimit(3, 400, 12.0)
    assert parse_rate_limit({"Content-Type": "application/json"}) is None


def test_job_results_success_failure_and_conflict_shapes() -> None:
    outcomes = job_result_outcomes(
        [
            {"action": "update", "status": "Updated", "success": True, "id": 3862},
            {
                "id": 2,
                "error": "UpdateConflict",
                "details": "Safe Update prevented the update",
                "status": "Failed",
                "success": False,
            },
            {"id": 3, "error": "RecordInvalid", "details": "Status: closed prevents ticket update"},
            {"id": 4, "status": "Failed", "errors": "something"},
            {"index": 0, "account_id": 1},  # no id: ignored
        ]
    )
    assert outcomes["3862"] == (True, None, False)
    assert outcomes["2"][0] is False and outcomes["2"][2] is True
    assert outcomes["3"] == (False, "RecordInvalid: Status: closed prevents ticket update", False)
    assert outcomes["4"][0] is False and outcomes["4"][2] is False
    assert len(outcomes) == 4


def test_job_results_entries_with_only_an_index_map_to_the_submitted_ticket() -> None:
    """zendesk-java-client issue #98: a real failed entry has ``index``, no ``id``."""
    outcomes = job_result_outcomes(
        [
            {"index": 1, "error": "TicketCreateFailed", "details": "Description: cannot be blank"},
            {"action": "update", "status": "Updated", "success": True, "id": 7},
            {"index": 9, "error": "RecordInvalid"},  # outside the batch: ignored
        ],
        ["7", "8"],
    )
    assert outcomes == {
        "8": (False, "TicketCreateFailed: Description: cannot be blank", False),
        "7": (True, None, False),
    }
