"""Secrets go only where they belong: not into validation errors, CLI output, reprs or logs.

Issue 14: a secret written literally in escbridge.yaml was echoed in validation errors, and a
database password holding "@" was only half masked (the driver read "p" as the password and
"ss@db.example" as the host, and its error printed that "host").
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, model_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.engine import make_url

from escbridge.cli.store import configure_db_parser, run_db
from escbridge.config import parse_config
from escbridge.connector.registry import Registry
from escbridge.errors import ConfigError
from escbridge.secrets import quote_userinfo, redact, safe_url
from escbridge.store import Store

PASSWORDS = [
    "p@ssword",
    "a:b@c/d",
    "x%40y",
    "100%sure",
    "we/ird#pw",
    "q?x=1@",
    "ab@db.internal",
    "a@b@c",
    "pw@10.0.0.1:5432/x",
    "sp ace@x",
]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_database_url_is_masked_whatever_the_password_holds(password: str) -> None:
    url = f"postgresql+psycopg://alice:{password}@db.internal:5432/esc?sslmode=require"
    masked = "postgresql+psycopg://alice:[redacted]@db.internal:5432/esc?sslmode=require"
    assert safe_url(url) == masked
    assert safe_url(quote_userinfo(url)) == masked
    assert redact(f"connect {quote_userinfo(url)} failed") == f"connect {masked} failed"
    if " " not in password:  # a raw URL in free text ends at a space
        assert redact(f"connect {url} failed") == f"connect {masked} failed"


@pytest.mark.parametrize("password", [p for p in PASSWORDS if p != "x%40y"])
def test_a_raw_password_is_encoded_so_the_driver_reads_the_right_host(password: str) -> None:
    url = quote_userinfo(f"postgresql://alice:{password}@db.internal:5432/esc")
    parsed = make_url(url)
    assert (parsed.username, parsed.password) == ("alice", password)
    assert (parsed.host, parsed.port, parsed.database) == ("db.internal", 5432, "esc")


def test_encoding_keeps_urls_that_need_none_and_an_azure_style_user() -> None:
    assert make_url(quote_userinfo("postgresql://a:x%40y@db/esc")).password == "x@y"  # encoded
    for url in (
        "postgresql://app:p%40ss@db/esc",
        "postgresql://app@db/esc",
        "postgresql://db/esc",
        "sqlite:////var/lib/escbridge/a@b.db",
        "sqlite:///escbridge.db",
    ):
        assert quote_userinfo(url) == url
    azure = make_url(quote_userinfo("postgresql://admin@srv:s3cret@srv.example/db"))
    assert (azure.username, azure.password, azure.host) == ("admin@srv", "s3cret", "srv.example")
    assert safe_url("postgresql://admin@srv:s3cret@srv.example/db") == (
        "postgresql://admin@srv:[redacted]@srv.example/db"
    )
    assert safe_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_the_config_hands_the_store_an_encoded_url(tmp_path: Any) -> None:
    config = parse_config(
        "store: postgresql://alice:p@ss/w:rd@db.internal/esc\n", base_dir=tmp_path
    )
    parsed = make_url(config.store_url)
    assert (parsed.password, parsed.host) == ("p@ss/w:rd", "db.internal")
    with Store(config.store_url, check_schema=False) as store:  # no connection is made yet
        assert "p@ss" not in repr(store) and "w:rd" not in repr(store)
        assert repr(store) == "Store('postgresql://alice:[redacted]@db.internal/esc')"


def test_db_commands_never_print_a_piece_of_a_password_holding_at(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refused connection's error names the host; before, it named "ssword@127.0.0.1"."""
    config = tmp_path / "escbridge.yaml"
    config.write_text("store: postgresql://alice:p@ssword@127.0.0.1:1/esc\n", encoding="utf-8")
    parser = argparse.ArgumentParser(prog="escbridge")
    configure_db_parser(parser)
    code = run_db(parser.parse_args(["upgrade", "--config", str(config)]))
    printed = capsys.readouterr()
    assert code != 0
    text = printed.out + printed.err
    assert "127.0.0.1" in text and "alice:[redacted]@" in text
    assert "ssword" not in text and "p@ss" not in text


# --------------------------------------------------------------------------- validation errors

LITERAL = "s3cret-literal-value-9f8e7d"


@pytest.mark.parametrize(
    ("kind", "settings", "key"),
    [
        ("zendesk", "subdomain: acme\n    email: a@b.example\n", "api_token"),
        (
            "zendesk",
            "subdomain: acme\n    email: a@b.example\n    api_token: t0ken\n",
            "webhook_secret",
        ),
        ("freshdesk", "domain: acme\n", "api_key"),
        (
            "zohodesk",
            "org_id: 1\n    client_id: x\n    refresh_token: 1000.abcdef\n",
            "client_secret",
        ),
        (
            "zohodesk",
            "org_id: 1\n    client_id: x\n    client_secret: abcdefgh\n"
            "    refresh_token: 1000.abcdef\n",
            "webhook_token",
        ),
    ],
)
@pytest.mark.parametrize(
    "written",
    [
        f"[{LITERAL}]",
        f"{{value: {LITERAL}}}",
        "987654321987654321",
        "12345.6789",
    ],
)
def test_a_literal_secret_of_the_wrong_type_is_never_echoed(
    kind: str, settings: str, key: str, written: str
) -> None:
    text = f"instances:\n  x:\n    type: {kind}\n    {settings}    {key}: {written}\n"
    instance = parse_config(text).instances["x"]
    with pytest.raises(ConfigError) as raised:
        Registry().load(kind).validate(instance)
    message = str(raised.value)
    assert f"instances.x.{key}" in message
    for secret in (LITERAL, "987654321987654321", "12345.6789", "6789"):
        assert secret not in message, message


class _Plugin(BaseModel):
    """A third-party model: its secret is a SecretStr with an unrevealing name."""

    pin: SecretStr
    owner: str = "x"

    @model_validator(mode="after")
    def _weak(self) -> _Plugin:
        pin = self.pin.get_secret_value()
        if pin.isdigit():
            raise ValueError(f"pin {pin} is too weak for {self.owner}")  # a careless plugin
        return self


def test_secret_fields_of_the_model_and_literal_secrets_are_masked_in_any_message() -> None:
    text = "instances:\n  x:\n    type: acme\n    pin: 424242424242\n    owner: [1]\n"
    instance = parse_config(text).instances["x"]
    with pytest.raises(PydanticValidationError) as raised:
        _Plugin.model_validate(instance.settings)
    messages = [p.message for p in instance.problems_from(raised.value, _Plugin)]
    assert messages == [
        "this secret value is not valid: input should be a valid string",
        ("a list is not valid: input should be a valid string"),
    ]
    valid_owner = {"pin": "987654321", "owner": "team"}
    with pytest.raises(PydanticValidationError) as raised:
        _Plugin.model_validate(valid_owner)
    literal = parse_config(
        "instances:\n  x:\n    type: acme\n    pin: '987654321'\n    owner: team\n"
    ).instances["x"]
    (problem,) = literal.problems_from(raised.value, _Plugin)
    assert problem.message == "pin *** is too weak for team"


def test_a_secret_from_the_environment_is_shown_as_its_variable() -> None:
    text = (
        "instances:\n  x:\n    type: freshdesk\n    domain: 'bad domain ${FD_KEY}'\n"
        "    api_key: k\n"
    )
    instance = parse_config(text, env={"FD_KEY": "env-secret-123"}).instances["x"]
    with pytest.raises(ConfigError) as raised:
        Registry().load("freshdesk").validate(instance)
    assert "env-secret-123" not in str(raised.value) and "${FD_KEY}" in str(raised.value)


def test_top_level_values_are_shown_without_their_credentials() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("store: {url: 'postgresql://u:hunter2pw@db/esc'}\n")
    assert "hunter2pw" not in str(raised.value) and "a mapping is not valid" in str(raised.value)
