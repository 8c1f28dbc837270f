"""The plugin registry: discovery by entry point, lazy loading, broken plugins isolated."""

from __future__ import annotations

import argparse
import io
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from escbridge.cli.connectors import run_check, run_connectors
from escbridge.config import parse_config
from escbridge.connector import (
    ENTRY_POINT_GROUP,
    CheckReport,
    ConnectorInfo,
    PluginLoadError,
    Registry,
    create_connector,
)
from escbridge.errors import ConfigError, ConnectorLoadError


class EchoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    token: SecretStr
    groups: list[str] = []


class EchoConnector:
    """A minimal third-party connector, as the README's "Writing a connector" describes."""

    info: ClassVar[ConnectorInfo] = ConnectorInfo(
        name="echo",
        version="1.2.3",
        display_name="Echo Desk",
        capabilities=frozenset({"bulk_update", "sandbox"}),
        signature_scheme="none",
        config_model=EchoSettings,
    )

    def __init__(self, config: EchoSettings, *, instance: str, **kw: Any) -> None:
        self.config = config
        self.instance = instance
        self.kw = kw

    def check(self, groups: Any) -> CheckReport:
        missing = tuple(g for g in groups if g not in self.config.groups)
        return CheckReport(ok=not missing, identity="bot@echo", missing_groups=missing)


@pytest.fixture
def plugin_modules() -> Iterator[None]:
    good = types.ModuleType("escbridge_test_echo")
    good.EchoConnector = EchoConnector  # type: ignore[attr-defined]
    noinfo = types.ModuleType("escbridge_test_noinfo")
    noinfo.Thing = object  # type: ignore[attr-defined]
    sys.modules.update({"escbridge_test_echo": good, "escbridge_test_noinfo": noinfo})
    yield
    for name in ("escbridge_test_echo", "escbridge_test_noinfo"):
        sys.modules.pop(name, None)


def registry() -> Registry:
    return Registry(
        [
            EntryPoint("echo", "escbridge_test_echo:EchoConnector", ENTRY_POINT_GROUP),
            EntryPoint("broken", "escbridge_test_missing_module:Connector", ENTRY_POINT_GROUP),
            EntryPoint("noinfo", "escbridge_test_noinfo:Thing", ENTRY_POINT_GROUP),
        ]
    )


def test_names_are_listed_without_importing_anything() -> None:
    reg = registry()
    assert reg.names() == ["broken", "echo", "noinfo"]
    assert "escbridge_test_missing_module" not in sys.modules


def test_only_configured_plugins_are_loaded_and_a_broken_one_does_not_stop_the_others(
    plugin_modules: None,
) -> None:
    ok, failed = registry().load_many(["echo", "broken"])
    assert list(ok) == ["echo"] and ok["echo"].info.display_name == "Echo Desk"
    assert isinstance(failed["broken"], ConnectorLoadError)
    assert "broken" in str(failed["broken"])
    assert "ModuleNotFoundError" in failed["broken"].reason


def test_a_plugin_without_connector_info_is_rejected_by_name(plugin_modules: None) -> None:
    with pytest.raises(PluginLoadError, match=r"noinfo.*no ConnectorInfo"):
        registry().load("noinfo")


def test_unknown_plugin_says_what_is_installed_and_how_to_install() -> None:
    with pytest.raises(PluginLoadError) as info:
        registry().load("jira")
    assert "installed: broken, echo, noinfo" in str(info.value)
    assert "pip install ./connectors/jira" in str(info.value)


def test_connectors_command_lists_every_plugin_and_reports_the_broken_one(
    plugin_modules: None,
) -> None:
    out = io.StringIO()
    code = run_connectors(argparse.Namespace(), registry=registry(), out=out)
    text = out.getvalue()
    assert code == 1
    assert "echo  Echo Desk 1.2.3" in text
    assert "capabilities: bulk_update, sandbox" in text
    assert "broken  BROKEN" in text and "ModuleNotFoundError" in text
    assert "noinfo  BROKEN" in text


CONFIG = """\
store: sqlite:///escbridge.db
matrix: matrix.yaml
instances:
  echo-1:
    type: echo
    url: https://echo.example
    token: ${ECHO_TOKEN}
    groups: [Tier 1, Tier 2]
"""


def test_create_connector_validates_settings_with_the_plugin_model(plugin_modules: None) -> None:
    cfg = parse_config(CONFIG, "escbridge.yaml", env={"ECHO_TOKEN": "tok-123456"})
    conn = create_connector(cfg.instances["echo-1"], registry=registry(), sleep=None)
    assert isinstance(conn, EchoConnector)
    assert conn.instance == "echo-1"
    assert conn.config.token.get_secret_value() == "tok-123456"
    assert conn.kw == {"sleep": None}


def test_invalid_settings_point_at_file_line_and_mask_secrets(plugin_modules: None) -> None:
    text = CONFIG.replace("url: https://echo.example", "urll: ${ECHO_TOKEN}")
    cfg = parse_config(text, "escbridge.yaml", env={"ECHO_TOKEN": "tok-123456"})
    with pytest.raises(ConfigError) as info:
        create_connector(cfg.instances["echo-1"], registry=registry())
    messages = [str(p) for p in info.value.problems]
    assert "escbridge.yaml:6 instances.echo-1.urll: is not a known key here" in messages[1]
    assert "escbridge.yaml:4 instances.echo-1.url: is required" in messages[0]
    assert "tok-123456" not in str(info.value)


def test_check_command_reports_missing_groups_and_plugin_errors(
    plugin_modules: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_TOKEN", "tok-999999")
    (tmp_path / "escbridge.yaml").write_text(
        CONFIG + "  other:\n    type: broken\n", encoding="utf-8"
    )
    (tmp_path / "matrix.yaml").write_text("not: [a, valid matrix\n", encoding="utf-8")
    out = io.StringIO()
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=[])
    code = run_check(args, registry=registry(), out=out)
    text = out.getvalue()
    assert code == 1
    assert "echo-1 (echo)" in text and "matrix is invalid" in text
    assert "other (broken)" in text and "NOT READY: connector plugin 'broken'" in text
    assert "tok-999999" not in text


def test_check_command_only_the_instances_asked_for(
    plugin_modules: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_TOKEN", "tok-999999")
    (tmp_path / "escbridge.yaml").write_text(CONFIG, encoding="utf-8")
    out = io.StringIO()
    args = argparse.Namespace(config=str(tmp_path / "escbridge.yaml"), instance=["nope"])
    assert run_check(args, registry=registry(), out=out) == 2
    assert "unknown instance(s): nope (configured: echo-1)" in out.getvalue()


def test_the_first_party_connectors_are_discovered_from_installed_distributions() -> None:
    reg = Registry()
    assert {"zendesk"} <= set(reg.names())
    plugin = reg.load("zendesk")
    assert plugin.info.name == "zendesk"
    assert plugin.distribution is not None and plugin.distribution.startswith("escbridge-zendesk")
