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


# --- issue 17: every section checked when the file is read -------------------------------------


def test_a_typo_in_processing_is_refused_when_the_file_is_read_with_the_nearest_key() -> None:
    text = "store: sqlite:///e.db\nprocessing:\n  poll_second: 1\n  batch_size: 0\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", env={})
    assert [str(p) for p in info.value.problems] == [
        "c.yaml:3 processing.poll_second: is not a known key here — did you mean poll_seconds?",
        "c.yaml:4 processing.batch_size: Input should be greater than or equal to 1",
    ]


def test_an_unknown_top_level_key_suggests_the_known_one_and_a_far_one_does_not() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("instance: {}\nfrobnicate: 1\n", "c.yaml", env={})
    assert [str(p) for p in info.value.problems] == [
        "c.yaml:1 instance: is not a known key here — did you mean instances?",
        "c.yaml:2 frobnicate: is not a known key here (check the spelling)",
    ]


def test_helpdesk_types_are_checked_against_what_is_installed() -> None:
    cfg = parse_config(EXAMPLE.replace("type: zendesk", "type: zendsk"), "e.yaml", env=ENV)
    assert [str(p) for p in cfg.helpdesk_problems(["zendesk", "freshdesk"])] == [
        "e.yaml:5 instances.support-eu.type: unknown helpdesk 'zendsk' — "
        "installed: freshdesk, zendesk"
    ]
    with pytest.raises(ConfigError):
        cfg.require_helpdesks(["zendesk"])
    parse_config(EXAMPLE, env=ENV).require_helpdesks(["zendesk"])


@pytest.mark.parametrize(
    ("text", "config"),
    [
        (EXAMPLE, True),
        ("store: sqlite:///x.db\n", True),
        ("instance: {}\n", True),  # a near miss of a config key: validated as a config, refused
        ("levels: []\nrules: []\n", False),
        ("name: m\nstore: x\n", False),  # a matrix key wins: the matrix's errors are clearer
        ("", False),
    ],
)
def test_a_config_is_told_from_a_matrix_by_its_content(text: str, config: bool) -> None:
    import yaml

    from escbridge.config import is_config

    assert is_config(yaml.safe_load(text)) is config


def test_a_short_secret_does_not_garble_the_messages(tmp_path: Path) -> None:
    """A one-letter test token is masked where it stands alone, not inside every word (a new
    user's `ZENDESK_WEBHOOK_SECRET=y` made "is not a known ke${…} here")."""
    from escbridge.config import parse_config

    config = parse_config(
        "store: sqlite:///x.db\nmatrix: matrix.yaml\ninstances:\n  support:\n"
        "    type: zendesk\n    api_token: ${SHORT}\n",
        env={"SHORT": "y"},
    )
    instance = config.instances["support"]
    assert instance.mask("is not a known key here — did you mean y?") == (
        "is not a known key here — did you mean ${SHORT}?"
    )
    assert instance.mask('store "mysql://h/db"') == 'store "mysql://h/db"'


def test_a_credential_with_a_non_ascii_character_is_refused_at_load() -> None:
    """The README's `export ZENDESK_API_TOKEN=…` copied literally: refused with the variable
    named, not a UnicodeEncodeError in the middle of the first request."""
    from escbridge.config import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config(
            "matrix: matrix.yaml\ninstances:\n  support:\n    type: zendesk\n"
            "    api_token: ${TOKEN}\n",
            env={"TOKEN": "…"},
        )
    (problem,) = info.value.problems
    assert problem.path == "instances.support.api_token" and problem.line == 5
    assert "TOKEN holds a character that is not ASCII — paste the real value" in problem.message
    assert "…" not in str(problem)
