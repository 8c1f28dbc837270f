"""The plugin registry: discovery by entry point, lazy loading, broken plugins isolated.

The third-party plugin here is the real ``examples/acmedesk`` (the one docs/connectors.md
shows), reached through an entry point of its own; two deliberately broken plugins — a module
that does not exist and a class without ``ConnectorInfo`` — are what acmedesk cannot be.
"""

from __future__ import annotations

import argparse
import io
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from escbridge_acmedesk import AcmeDeskConnector
from escbridge_acmedesk.sandbox import AcmeDeskSandbox

from escbridge.cli.connectors import run_check, run_connectors
from escbridge.config import parse_config
from escbridge.connector import ENTRY_POINT_GROUP, PluginLoadError, Registry, create_connector
from escbridge.errors import ConfigError, ConnectorLoadError
from escbridge.sandbox import serve

API_KEY = "acme-registry-key-3f9a"
WEBHOOK_SECRET = "acme-registry-webhook-secret-71c2"


@pytest.fixture
def plugin_modules() -> Iterator[None]:
    noinfo = types.ModuleType("escbridge_test_noinfo")
    noinfo.Thing = object  # type: ignore[attr-defined]
    sys.modules["escbridge_test_noinfo"] = noinfo
    yield
    sys.modules.pop("escbridge_test_noinfo", None)


@pytest.fixture
def acme_url() -> Iterator[str]:
    """The Acme Desk emulator on 127.0.0.1, with the credentials the config below uses."""
    server = serve(AcmeDeskSandbox(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET).app)
    yield server.url
    server.stop()


def registry() -> Registry:
    return Registry(
        [
            EntryPoint("acmedesk", "escbridge_acmedesk:AcmeDeskConnector", ENTRY_POINT_GROUP),
            EntryPoint("broken", "escbridge_test_missing_module:Connector", ENTRY_POINT_GROUP),
            EntryPoint("noinfo", "escbridge_test_noinfo:Thing", ENTRY_POINT_GROUP),
        ]
    )


def test_names_are_listed_without_importing_anything() -> None:
    reg = registry()
    assert reg.names() == ["acmedesk", "broken", "noinfo"]
    assert "escbridge_test_missing_module" not in sys.modules


def test_only_configured_plugins_are_loaded_and_a_broken_one_does_not_stop_the_others() -> None:
    ok, failed = registry().load_many(["acmedesk", "broken"])
    assert list(ok) == ["acmedesk"] and ok["acmedesk"].cls is AcmeDeskConnector
    assert ok["acmedesk"].info.display_name == "Acme Desk"
    assert isinstance(failed["broken"], ConnectorLoadError)
    assert "broken" in str(failed["broken"])
    assert "ModuleNotFoundError" in failed["broken"].reason


def test_a_plugin_without_connector_info_is_rejected_by_name(plugin_modules: None) -> None:
    with pytest.raises(PluginLoadError, match=r"noinfo.*no ConnectorInfo"):
        registry().load("noinfo")


def test_unknown_plugin_says_what_is_installed_and_how_to_install() -> None:
    with pytest.raises(PluginLoadError) as info:
        registry().load("jira")
    assert "installed: acmedesk, broken, noinfo" in str(info.value)
    assert "escbridge's own connectors are zendesk, freshdesk, zohodesk" in str(info.value)
    assert "pip install escbridge-zendesk and so on); any other comes from its own" in str(
        info.value
    )
    assert "./connectors" not in str(info.value)  # no such folder in an installed escbridge


def test_a_shipped_connector_not_installed_is_named_by_its_distribution() -> None:
    with pytest.raises(PluginLoadError) as info:
        registry().load("freshdesk")
    assert "install it: pip install escbridge-freshdesk (from a checkout: make dist, then " in (
        str(info.value)
    )


def test_connectors_command_lists_every_plugin_and_reports_the_broken_one(
    plugin_modules: None,
) -> None:
    out = io.StringIO()
    code = run_connectors(argparse.Namespace(), registry=registry(), out=out)
    text = out.getvalue()
    assert code == 1
    assert f"acmedesk  Acme Desk {AcmeDeskConnector.info.version}" in text
    assert "capabilities: incremental_sync, safe_update, sandbox, trigger_webhooks" in text
    assert "webhook signature: HMAC-SHA256 of the body, hex, in X-Acme-Signature" in text
    assert "broken  BROKEN" in text and "ModuleNotFoundError" in text
    assert "noinfo  BROKEN" in text


def test_connectors_command_with_none_installed_names_a_distribution_to_install() -> None:
    out = io.StringIO()
    assert run_connectors(argparse.Namespace(), registry=Registry([]), out=out) == 1
    assert "No connector plugins installed. Install one, e.g.: pip install escbridge-zendesk " in (
        out.getvalue()
    )


CONFIG = """\
store: sqlite:///escbridge.db
matrix: matrix.yaml
instances:
  acme-1:
    type: acmedesk
    url: {url}
    api_key: ${{ACME_API_KEY}}
    webhook_secret: ${{ACME_WEBHOOK_SECRET}}
"""
ENV = {"ACME_API_KEY": API_KEY, "ACME_WEBHOOK_SECRET": WEBHOOK_SECRET}

# Acme Desk has the teams Frontline, Second Line and Managers; the matrix also routes to one
# it lacks.
MATRIX = """\
version: 1
name: Registry test
levels:
  - id: l1
    name: Frontline
    groups: {acmedesk: Frontline}
  - id: l2
    name: Night shift
    groups: {acmedesk: Night Shift}
rules:
  - id: urgent
    name: Urgent tickets
    kind: hierarchical
    when: {priority: {at_least: urgent}}
    to: l2
"""


def test_create_connector_validates_settings_with_the_plugin_model() -> None:
    cfg = parse_config(CONFIG.format(url="https://acme.example"), "escbridge.yaml", env=ENV)

    def sleep(seconds: float) -> None:
        raise AssertionError("nothing waits here")

    conn = create_connector(cfg.instances["acme-1"], registry=registry(), sleep=sleep)
    assert isinstance(conn, AcmeDeskConnector)
    assert conn.instance == "acme-1"
    assert conn.config.api_key.get_secret_value() == API_KEY
    assert conn.runtime.sleep is sleep  # a test override reaches the connector's runtime


def test_invalid_settings_point_at_file_line_and_mask_secrets() -> None:
    text = CONFIG.format(url="https://acme.example").replace(
        "url: https://acme.example", "urll: ${ACME_API_KEY}"
    )
    cfg = parse_config(text, "escbridge.yaml", env=ENV)
    with pytest.raises(ConfigError) as info:
        create_connector(cfg.instances["acme-1"], registry=registry())
    messages = [str(p) for p in info.value.problems]
    assert "escbridge.yaml:6 instances.acme-1.urll: is not a known key here" in messages[1]
    assert "escbridge.yaml:4 instances.acme-1.url: is required" in messages[0]
    assert API_KEY not in str(info.value)


def test_check_command_reports_the_missing_group_against_the_helpdesk(
    acme_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "escbridge.yaml").write_text(CONFIG.format(url=acme_url), encoding="utf-8")
    (tmp_path / "matrix.yaml").write_text(MATRIX, encoding="utf-8")
    out = io.StringIO()
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=[])
    code = run_check(args, registry=registry(), out=out)
    text = out.getvalue()
    assert code == 1
    assert "acme-1 (acmedesk)\n  connected as escbridge <bot@acme.example>" in text
    assert "groups the matrix routes to that do not exist: Night Shift" in text
    assert "groups resolved: Frontline" in text and "NOT READY" in text
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_check_command_reports_an_invalid_matrix_and_a_broken_plugin(
    acme_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "escbridge.yaml").write_text(
        CONFIG.format(url=acme_url) + "  other:\n    type: broken\n", encoding="utf-8"
    )
    (tmp_path / "matrix.yaml").write_text("not: [a, valid matrix\n", encoding="utf-8")
    out = io.StringIO()
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=[])
    code = run_check(args, registry=registry(), out=out)
    text = out.getvalue()
    assert code == 1
    assert "acme-1 (acmedesk)" in text and "matrix is invalid" in text
    assert "other (broken)" in text and "NOT READY: connector plugin 'broken'" in text
    assert API_KEY not in text and WEBHOOK_SECRET not in text


def test_check_command_only_the_instances_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "escbridge.yaml").write_text(
        CONFIG.format(url="https://acme.example"), encoding="utf-8"
    )
    out = io.StringIO()
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=["nope"])
    assert run_check(args, registry=registry(), out=out) == 2
    assert "unknown instance(s): nope (configured: acme-1)" in out.getvalue()


def test_the_first_party_connectors_are_discovered_from_installed_distributions() -> None:
    reg = Registry()
    assert {"zendesk"} <= set(reg.names())
    plugin = reg.load("zendesk")
    assert plugin.info.name == "zendesk"
    assert plugin.distribution is not None and plugin.distribution.startswith("escbridge-zendesk")
