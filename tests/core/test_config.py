"""escbridge.yaml: shape, ${VAR} secrets, and file:line errors that never show a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from escbridge.config import load_config, parse_config
from escbridge.errors import ConfigError

EXAMPLE = """\
store: sqlite:///escbridge.db
matrix: matrix.yaml
instances:
  support-eu:
    type: zendesk
    subdomain: acme
    email: escbridge@acme.example
    api_token: ${ZENDESK_API_TOKEN}
    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}
"""

ENV = {"ZENDESK_API_TOKEN": "tok-abcdef", "ZENDESK_WEBHOOK_SECRET": "whsec-123456"}


def test_the_documented_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "escbridge.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    cfg = load_config(path, env=ENV)
    assert cfg.store_url == f"sqlite:///{tmp_path.resolve()}/escbridge.db"
    assert cfg.matrix_path == tmp_path.resolve() / "matrix.yaml"
    inst = cfg.instances["support-eu"]
    assert (inst.name, inst.type) == ("support-eu", "zendesk")
    assert inst.settings == {
        "subdomain": "acme",
        "email": "escbridge@acme.example",
        "api_token": "tok-abcdef",
        "webhook_secret": "whsec-123456",
    }
    assert "tok-abcdef" not in repr(inst) and "tok-abcdef" not in repr(cfg)


def test_defaults_and_non_sqlite_urls_are_kept() -> None:
    cfg = parse_config("store: postgresql://db/escbridge\n", env={})
    assert cfg.store_url == "postgresql://db/escbridge"
    assert cfg.instances == {}
    assert parse_config("", env={}).store_url.endswith("/escbridge.db")
    assert parse_config("store: 'sqlite:///:memory:'\n", env={}).store_url == "sqlite:///:memory:"


def test_unset_variable_names_the_variable_and_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(EXAMPLE, "escbridge.yaml", env={"ZENDESK_API_TOKEN": "tok-abcdef"})
    (problem,) = info.value.problems
    assert str(problem) == (
        "escbridge.yaml:9 instances.support-eu.webhook_secret: "
        "environment variable ZENDESK_WEBHOOK_SECRET is not set"
    )
    assert "tok-abcdef" not in str(info.value)


def test_empty_variable_is_an_error_too() -> None:
    env = {**ENV, "ZENDESK_API_TOKEN": ""}
    with pytest.raises(ConfigError, match="ZENDESK_API_TOKEN is empty"):
        parse_config(EXAMPLE, "escbridge.yaml", env=env)


def test_unknown_top_level_key_and_bad_instance_name() -> None:
    text = "stroe: x\ninstances:\n  Support EU:\n    type: zendesk\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "escbridge.yaml", env={})
    shown = [str(p) for p in info.value.problems]
    assert any(s.startswith("escbridge.yaml:1 stroe: is not a known key") for s in shown)
    assert any("escbridge.yaml:2 instances:" in s and "lowercase" in s for s in shown)


def test_instance_without_type() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("instances:\n  eu:\n    subdomain: acme\n", "c.yaml", env={})
    assert str(info.value.problems[0]) == "c.yaml:2 instances.eu.type: is required"


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("instances:\n  eu: [\n", "c.yaml", env={})
    assert info.value.problems[0].line is not None


def test_secret_in_a_wrong_top_level_value_is_masked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("store: ${DB_URL}\nmatrix: [1]\n", "c.yaml", env={"DB_URL": "pg://u:pw@h/x"})
    assert "pw@h" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/escbridge.yaml")


def test_store_only_commands_read_the_config_without_the_helpdesks_secrets(
    tmp_path: Path,
) -> None:
    """`escbridge db upgrade` or `report` must not need the API tokens; the store's own
    secret is still required."""
    text = (
        "store: postgresql+psycopg://esc:${DB_PASSWORD}@db/esc\n"
        "instances:\n"
        "  support:\n"
        "    type: zendesk\n"
        "    api_token: ${ZENDESK_API_TOKEN}\n"
    )
    config = parse_config(
        text, "escbridge.yaml", tmp_path, {"DB_PASSWORD": "pw"}, helpdesk_secrets=False
    )
    assert "pw" in config.store_url
    with pytest.raises(ConfigError, match="ZENDESK_API_TOKEN is not set"):
        parse_config(text, "escbridge.yaml", tmp_path, {"DB_PASSWORD": "pw"})
    with pytest.raises(ConfigError, match="DB_PASSWORD is not set"):
        parse_config(text, "escbridge.yaml", tmp_path, {}, helpdesk_secrets=False)
