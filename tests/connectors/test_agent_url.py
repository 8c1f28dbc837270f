"""``agent_url(ticket_id)``: where a person opens a ticket in each helpdesk's agent view.

Reports link ticket ids with it (and notifications will): it is built from escbridge.yaml alone,
through the registry as `escbridge report` builds it, and never calls the helpdesk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses

from escbridge.config import InstanceConfig
from escbridge.connector.base import BaseConnector
from escbridge.connector.registry import create_connector
from escbridge.errors import ConfigError

ZOHO = {"org_id": "2389290", "client_id": "1000.CLIENT", "client_secret": "s", "refresh_token": "r"}


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Any HTTP call fails the test: links are computed, never looked up."""
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        yield


def agent_url(kind: str, settings: dict[str, Any], ticket_id: str = "81") -> str | None:
    connector = create_connector(InstanceConfig("support", kind, settings))
    assert isinstance(connector, BaseConnector)
    return connector.agent_url(ticket_id)


@pytest.mark.parametrize(
    ("kind", "settings", "url"),
    [
        (
            "zendesk",
            {"subdomain": "acme", "email": "bot@acme.example", "api_token": "t"},
            "https://acme.zendesk.com/agent/tickets/81",
        ),
        (
            "zendesk",
            {"sandbox": True, "base_url": "http://127.0.0.1:8101", "oauth_token": "t"},
            "http://127.0.0.1:8101/agent/tickets/81",
        ),
        (
            "freshdesk",
            {"domain": "acme", "api_key": "k"},
            "https://acme.freshdesk.com/a/tickets/81",
        ),
        (
            "freshdesk",
            {"domain": "acme", "api_key": "k", "api_url": "http://127.0.0.1:8102"},
            "http://127.0.0.1:8102/a/tickets/81",
        ),
        (
            "zohodesk",
            {
                **ZOHO,
                "data_centre": "eu",
                "agent_ticket_url": "https://desk.zoho.eu/agent/acme/support/tickets/details/{id}",
            },
            "https://desk.zoho.eu/agent/acme/support/tickets/details/81",
        ),
        (
            "zohodesk",
            {
                **ZOHO,
                "sandbox": True,
                "desk_url": "http://127.0.0.1:8103",
                "agent_ticket_url": "http://127.0.0.1:8103/agent/sandbox/tickets/details/{id}",
            },
            "http://127.0.0.1:8103/agent/sandbox/tickets/details/81",
        ),
    ],
)
def test_each_helpdesk_links_to_its_agent_view(
    kind: str, settings: dict[str, Any], url: str
) -> None:
    assert agent_url(kind, settings) == url


def test_zoho_without_the_portal_address_has_no_link() -> None:
    """Desk's agent view has the portal's name in its path; no API call escbridge makes
    returns it, so without ``agent_ticket_url`` there is no link rather than a wrong one."""
    assert agent_url("zohodesk", ZOHO) is None


def test_an_id_is_one_path_segment() -> None:
    settings = {"subdomain": "acme", "email": "bot@acme.example", "api_token": "t"}
    assert agent_url("zendesk", settings, "../x?y") == (
        "https://acme.zendesk.com/agent/tickets/..%2Fx%3Fy"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://desk.zoho.eu/agent/acme/tickets/details/", "must hold {id} once"),
        ("https://evil.example/agent/{id}", "agent_ticket_url must be an https URL on a Zoho"),
    ],
)
def test_zoho_agent_ticket_url_is_checked(template: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_url("zohodesk", {**ZOHO, "agent_ticket_url": template})
    assert message in str(caught.value)


def test_a_connector_that_cannot_tell_returns_none() -> None:
    """The contract's default: a plugin without an agent view to link to shows plain ids."""
    from escbridge.testing import FakeConnector, FakeHelpdesk

    assert FakeConnector(FakeHelpdesk()).agent_url("1") is None
