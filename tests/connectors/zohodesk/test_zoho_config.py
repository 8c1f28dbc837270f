"""Settings: the data-centre table, the host rule that keeps credentials on Zoho, clear errors."""

from __future__ import annotations

import pytest
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.hosts import DATA_CENTRES, dc_of_api_domain
from pydantic import ValidationError
from zohodesk_support import CLIENT_SECRET, REFRESH_TOKEN, settings

from escbridge.config import parse_config
from escbridge.connector import CAP_BULK_UPDATE, CAP_EVENT_WEBHOOKS, Registry
from escbridge.errors import ConfigError
from escbridge.model import Priority


@pytest.mark.parametrize(
    ("dc", "accounts", "desk"),
    [
        ("com", "https://accounts.zoho.com", "https://desk.zoho.com"),
        ("eu", "https://accounts.zoho.eu", "https://desk.zoho.eu"),
        ("in", "https://accounts.zoho.in", "https://desk.zoho.in"),
        ("com.au", "https://accounts.zoho.com.au", "https://desk.zoho.com.au"),
        ("jp", "https://accounts.zoho.jp", "https://desk.zoho.jp"),
        ("ca", "https://accounts.zohocloud.ca", "https://desk.zohocloud.ca"),
        ("sa", "https://accounts.zoho.sa", "https://desk.zoho.sa"),
        # api-audit.md #4: Desk's ten data centres include Singapore and the UAE
        ("sg", "https://accounts.zoho.sg", "https://desk.zoho.sg"),
        ("ae", "https://accounts.zoho.ae", "https://desk.zoho.ae"),
        ("uk", "https://accounts.zoho.uk", "https://desk.zoho.uk"),
        ("com.cn", "https://accounts.zoho.com.cn", "https://desk.zoho.com.cn"),
    ],
)
def test_each_data_centre_pairs_its_accounts_server_with_its_desk_host(dc, accounts, desk):
    pair = ZohoDeskConfig.model_validate(settings(data_centre=dc)).host_pairs[0]
    assert (pair.accounts, pair.desk) == (accounts, desk)
    assert pair.jwks == f"{desk}/.well-known/jwks.json"


def test_canada_keeps_both_unconfirmed_hosts_in_order():
    pairs = DATA_CENTRES["ca"].pairs
    assert [p.desk for p in pairs] == ["https://desk.zohocloud.ca", "https://desk.zoho.ca"]


@pytest.mark.parametrize(
    ("api_domain", "dc"),
    [
        ("https://www.zohoapis.com", "com"),
        ("https://www.zohoapis.com.au", "com.au"),
        ("https://www.zohoapis.in", "in"),
        ("https://www.zohoapis.com.cn", "com.cn"),
        ("https://www.zohoapis.sg", "sg"),
        ("https://www.zohoapis.ae", "ae"),
        ("https://example.org", None),
    ],
)
def test_api_domain_only_tells_the_data_centre(api_domain, dc):
    assert dc_of_api_domain(api_domain) == dc


def test_an_unknown_data_centre_lists_the_valid_ones():
    with pytest.raises(ValidationError, match="'com', 'eu', 'in'"):
        ZohoDeskConfig.model_validate(settings(data_centre="us"))


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/api",
        "http://desk.zoho.eu",  # not https
        "https://desk.zoho.eu.evil.example",
        "https://evilzoho.eu",
        "http://127.0.0.1:8080",  # loopback needs sandbox: true
    ],
)
def test_production_config_cannot_send_credentials_to_another_host(url):
    with pytest.raises(ValidationError, match="on a Zoho domain"):
        ZohoDeskConfig.model_validate(settings(desk_url=url))
    with pytest.raises(ValidationError, match="on a Zoho domain"):
        ZohoDeskConfig.model_validate(settings(accounts_url=url))


def test_a_zoho_host_override_is_allowed_for_a_moved_desk_host():
    config = ZohoDeskConfig.model_validate(
        settings(data_centre="uk", desk_url="https://desk.zoho.uk")
    )
    assert config.host_pairs[0].accounts == "https://accounts.zoho.uk"


def test_sandbox_hosts_must_be_loopback():
    config = ZohoDeskConfig.model_validate(settings(sandbox=True, desk_url="http://127.0.0.1:5001"))
    pair = config.host_pairs[0]
    assert (pair.accounts, pair.desk) == ("http://127.0.0.1:5001", "http://127.0.0.1:5001")
    with pytest.raises(ValidationError, match=r"127\.0\.0\.1, ::1 or localhost"):
        ZohoDeskConfig.model_validate(settings(sandbox=True, desk_url="https://desk.example.com"))
    with pytest.raises(ValidationError, match="needs desk_url"):
        ZohoDeskConfig.model_validate(settings(sandbox=True))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("org_id", "zylker", "the orgId is a number"),
        ("webhook_token", "short", "at least 16 random characters"),
        ("level_field", "Escalation Level", "API name of a ticket custom field"),
        ("priority_map", {"High": "critical"}, "is not a priority"),
        ("priority_map", {}, "at least one Zoho priority"),
    ],
)
def test_mistakes_are_explained(key, value, message):
    with pytest.raises(ValidationError, match=message):
        ZohoDeskConfig.model_validate(settings(**{key: value}))


def test_uk_is_still_accepted_but_marked_unconfirmed():
    config = ZohoDeskConfig.model_validate(settings(data_centre="uk"))
    assert config.host_pairs[0].desk == "https://desk.zoho.uk"
    field = ZohoDeskConfig.model_fields["data_centre"]
    assert field.description is not None and "uk (unconfirmed for Desk)" in field.description


def test_a_search_result_cap_past_what_desk_pages_to_is_refused():
    """Desk's search takes ``from`` 0..999 (zohodesk-oas v1.0/Search.json)."""
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        ZohoDeskConfig.model_validate(settings(search_result_cap=2000))


def test_defaults():
    config = ZohoDeskConfig.model_validate(settings())
    assert config.priority_map == {
        "Low": Priority.LOW,
        "Medium": Priority.NORMAL,
        "High": Priority.HIGH,
    }
    assert config.level_field == "cf_escalation_level"
    assert config.search_result_cap == 1000  # Desk pages no further than from=999
    assert config.webhook_ids == ("55430000001230001",)
    assert ZohoDeskConfig.model_validate(settings(webhook_id=[1, "2"])).webhook_ids == ("1", "2")


def test_the_plugin_is_found_by_entry_point_and_built_from_escbridge_yaml(tmp_path):
    plugin = Registry().load("zohodesk")
    assert plugin.cls is ZohoDeskConnector
    assert plugin.info.config_model is ZohoDeskConfig
    assert {CAP_BULK_UPDATE, CAP_EVENT_WEBHOOKS} <= plugin.info.capabilities
    text = """
instances:
  support-eu:
    type: zohodesk
    data_centre: eu
    org_id: 20065432
    client_id: 1000.ESCBRIDGECLIENT
    client_secret: ${ZOHO_CLIENT_SECRET}
    refresh_token: ${ZOHO_REFRESH_TOKEN}
"""
    env = {"ZOHO_CLIENT_SECRET": CLIENT_SECRET, "ZOHO_REFRESH_TOKEN": REFRESH_TOKEN}
    instance = parse_config(text, "escbridge.yaml", tmp_path, env).instances["support-eu"]
    connector = plugin.create(instance)
    assert isinstance(connector, ZohoDeskConnector)
    assert connector.instance == "support-eu"
    assert connector.tokens.pair.desk == "https://desk.zoho.eu"


def test_config_errors_point_at_the_line_and_never_show_a_secret(tmp_path):
    text = """
instances:
  support-eu:
    type: zohodesk
    org_id: 20065432
    client_id: 1000.ESCBRIDGECLIENT
    client_secret: ${ZOHO_CLIENT_SECRET}
    refresh_token: ${ZOHO_REFRESH_TOKEN}
    desk_url: https://evil.example/${ZOHO_REFRESH_TOKEN}
"""
    env = {"ZOHO_CLIENT_SECRET": CLIENT_SECRET, "ZOHO_REFRESH_TOKEN": REFRESH_TOKEN}
    instance = parse_config(text, "escbridge.yaml", tmp_path, env).instances["support-eu"]
    with pytest.raises(ConfigError) as err:
        Registry().load("zohodesk").create(instance)
    message = str(err.value)
    assert "escbridge.yaml:" in message and "Zoho domain" in message
    assert REFRESH_TOKEN not in message and CLIENT_SECRET not in message
