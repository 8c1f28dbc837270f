"""Freshdesk config and ticket parsing: what an admin writes, what the engine then sees."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from escbridge_freshdesk import FreshdeskConfig, FreshdeskConnector
from escbridge_freshdesk.config import base_url_for
from escbridge_freshdesk.parse import Lookups, parse_ticket, status_category
from freshdesk_payloads import (
    API_KEY,
    DOC_TICKET_20,
    ESCALATIONS_ID,
    REAL_TICKET_21,
    open_ticket,
)
from pydantic import ValidationError

from escbridge.config import parse_config
from escbridge.connector import Plugin, Registry
from escbridge.errors import ConfigError
from escbridge.model import Channel, Priority, Status

LOOKUPS = Lookups(
    groups={ESCALATIONS_ID: "Escalations"},
    statuses={6: "Waiting on Customer", 7: "Escalated to vendor", 8: "On hold - parts"},
)


def cfg(**settings: Any) -> FreshdeskConfig:
    return FreshdeskConfig.model_validate({"domain": "acme", "api_key": API_KEY, **settings})


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "given", ["acme", "ACME", "acme.freshdesk.com", "https://acme.freshdesk.com/", " acme "]
)
def test_the_domain_is_a_freshdesk_subdomain_however_it_is_written(given: str) -> None:
    assert base_url_for(cfg(domain=given)) == "https://acme.freshdesk.com/api/v2"


@pytest.mark.parametrize(
    "given",
    [
        "evil.com",
        "acme.freshdesk.com.evil.com",
        "user@evil.com",
        "acme/../x",
        "http://acme.freshdesk.com",  # HTTPS only
        "support.acme.com",  # custom CNAMEs do not work with API v2
        "",
    ],
)
def test_any_other_host_is_refused_so_the_api_key_never_leaves_freshdesk(given: str) -> None:
    with pytest.raises(ValidationError, match="not a Freshdesk domain"):
        cfg(domain=given)


def test_api_url_may_only_point_at_a_loopback_sandbox() -> None:
    assert base_url_for(cfg(api_url="http://127.0.0.1:8123/")) == "http://127.0.0.1:8123/api/v2"
    assert cfg(api_url="http://localhost:9").api_url == "http://localhost:9"
    for bad in ("https://evil.example", "http://10.0.0.1:80", "http://user:pw@127.0.0.1:1"):
        with pytest.raises(ValidationError, match="loopback"):
            cfg(api_url=bad)


def test_a_config_error_points_at_the_line_and_never_shows_the_key() -> None:
    text = (
        "instances:\n"
        "  support-fd:\n"
        "    type: freshdesk\n"
        "    domain: acme.zendesk.com\n"
        "    api_key: ${FD_KEY}\n"
    )
    config = parse_config(text, source="escbridge.yaml", env={"FD_KEY": API_KEY})
    plugin = Plugin("freshdesk", "x", None, FreshdeskConnector, FreshdeskConnector.info)
    with pytest.raises(ConfigError) as caught:
        plugin.validate(config.instances["support-fd"])
    text_of_error = str(caught.value)
    assert "escbridge.yaml:4" in text_of_error and "domain" in text_of_error
    assert API_KEY not in text_of_error
    assert API_KEY not in repr(cfg())


def test_the_plugin_is_registered_under_its_entry_point() -> None:
    plugin = Registry().load("freshdesk")
    assert plugin.cls is FreshdeskConnector
    assert plugin.info.config_model is FreshdeskConfig
    assert "bulk_update" in plugin.info.capabilities


# --------------------------------------------------------------------------- tickets


def test_the_recorded_closed_outbound_ticket() -> None:
    t = parse_ticket(REAL_TICKET_21, LOOKUPS, instance="fd")
    assert (t.id, t.instance, t.subject, t.description) == ("21", "fd", "Test", "Test")
    assert t.status is Status.CLOSED and not t.status.is_open
    assert t.priority is Priority.LOW
    assert t.channel is Channel.EMAIL  # 10 = Outbound Email
    assert t.assignee == "67013469919"
    assert t.group is None
    assert t.requester.email == "iryna.grankova@airbyte.io"
    assert t.organization is not None and t.organization.id == "67001265522"
    assert t.due_at == datetime(2022, 11, 19, 15, 59, 28, tzinfo=UTC)
    assert t.created_at == t.updated_at == datetime(2022, 11, 16, 15, 59, 28, tzinfo=UTC)
    assert t.version == "2022-11-16T15:59:28Z"
    assert t.custom_fields["freshdesk.fr_due_by"] == "2022-11-17T15:59:28Z"
    assert t.custom_fields["freshdesk.is_escalated"] is False
    assert "freshdesk.nr_due_by" not in t.custom_fields  # null stays absent


def test_the_docs_sample_without_stats_or_requester() -> None:
    t = parse_ticket(DOC_TICKET_20, Lookups())
    assert t.status is Status.OPEN and t.channel is Channel.WEB  # 2 = Portal
    assert t.custom_fields["category"] == "Primary"
    assert t.first_response_at is None and t.reopen_count == 0
    assert t.requester.id == "1"


@pytest.mark.parametrize(
    ("code", "priority"), [(1, "low"), (2, "normal"), (3, "high"), (4, "urgent")]
)
def test_priorities_one_to_four(code: int, priority: str) -> None:
    assert parse_ticket(open_ticket(priority=code), LOOKUPS).priority.label == priority


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (2, Status.OPEN),
        (3, Status.PENDING),
        (4, Status.SOLVED),
        (5, Status.CLOSED),
        (6, Status.PENDING),  # "Waiting on Customer"
        (7, Status.OPEN),  # "Escalated to vendor": says nothing, stays escalatable
        (8, Status.ON_HOLD),  # "On hold - parts"
        (99, Status.OPEN),  # unknown to ticket_fields
    ],
)
def test_built_in_and_custom_statuses(code: int, status: Status) -> None:
    t = parse_ticket(open_ticket(status=code), LOOKUPS)
    assert t.status is status
    assert t.custom_fields["freshdesk.status_code"] == code


def test_an_admin_mapping_of_custom_statuses_wins_by_id_or_name() -> None:
    lookups = Lookups(
        statuses=LOOKUPS.statuses,
        status_categories={"waiting on CUSTOMER": Status.ON_HOLD, "7": Status.PENDING},
    )
    assert status_category(6, lookups) is Status.ON_HOLD
    assert status_category(7, lookups) is Status.PENDING
    assert status_category(3, lookups) is Status.PENDING  # built-ins are not remapped


@pytest.mark.parametrize(
    ("source", "channel"),
    [
        (1, "email"),
        (2, "web"),
        (3, "phone"),
        (7, "chat"),
        (9, "web"),
        (10, "email"),
        (13, "chat"),
        (14, "other"),  # undocumented
        (15, "chat"),  # web chat (chatwoot/chatwoot #15261)
        (42, "other"),
    ],
)
def test_source_codes(source: int, channel: str) -> None:
    assert parse_ticket(open_ticket(source=source), LOOKUPS).channel.value == channel


def test_group_name_level_tags_stats_and_sla_fields() -> None:
    raw = open_ticket(
        group_id=ESCALATIONS_ID,
        tags=["VIP", "escbridge_l2", "billing"],
        is_escalated=True,
        fr_escalated=True,
        nr_due_by="2026-03-11T12:00:00Z",
        custom_fields={"cf_plan": "enterprise"},
        stats={
            "first_responded_at": "2026-03-10T09:00:00Z",
            "requester_responded_at": "2026-03-11T08:00:00Z",
            "reopened_at": "2026-03-11T08:00:00Z",
            "agent_responded_at": "2026-03-10T09:00:00Z",
            "pending_since": None,
        },
    )
    t = parse_ticket(raw, LOOKUPS)
    assert t.group == "Escalations"
    assert t.level == "l2"
    assert t.tags == frozenset({"vip", "escbridge_l2", "billing"})
    assert t.first_response_at == datetime(2026, 3, 10, 9, tzinfo=UTC)
    assert t.last_customer_reply_at == datetime(2026, 3, 11, 8, tzinfo=UTC)
    assert t.reopen_count == 1
    assert t.custom_fields["cf_plan"] == "enterprise"
    assert t.custom_fields["freshdesk.is_escalated"] is True
    assert t.custom_fields["freshdesk.fr_escalated"] is True
    assert t.custom_fields["freshdesk.nr_due_by"] == "2026-03-11T12:00:00Z"
    assert t.custom_fields["freshdesk.fr_due_by"] == "2026-03-10T12:00:00Z"


def test_an_unknown_group_id_is_kept_as_text_rather_than_lost() -> None:
    assert parse_ticket(open_ticket(group_id=555), LOOKUPS).group == "555"


def test_the_higher_level_tag_wins_if_freshdesk_kept_an_old_one() -> None:
    kept = parse_ticket(open_ticket(tags=["escbridge_l3", "x", "escbridge_l1"]), LOOKUPS)
    assert kept.level == "l3"  # LevelMarker's tie-break: not the order Freshdesk lists them in
    assert parse_ticket(open_ticket(tags=["escbridge_", "other"]), LOOKUPS).level is None
