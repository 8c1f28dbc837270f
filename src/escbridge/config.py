"""escbridge.yaml: where the store is, where the matrix is, and which helpdesk accounts to serve.

```yaml
store: sqlite:///escbridge.db          # SQLAlchemy URL; a relative SQLite path: relative to here
matrix: matrix.yaml                    # relative to this file
instances:
  support-eu:
    type: zendesk                      # the connector plugin
    subdomain: acme
    email: escbridge@acme.example
    api_token: ${ZENDESK_API_TOKEN}    # from the environment, never written in the file
```

Secrets come from ``${VAR}``. An unset variable is an error naming the variable and file:line,
never a value. Each instance's settings are validated later by its connector's own model
(``escbridge.connector.Plugin.validate``), with errors pointing at the same file:line; values
that came from the environment are shown as ``${VAR}`` in those messages, and a secret written
literally in the file (under a key named like one: ``api_token``, ``webhook_secret``, …, or a
``SecretStr`` field of the model) as ``***``.

A store URL whose password holds characters a URL cannot carry raw (``@``, ``/``, ``:``, ``#``,
``?``, ``%``) is percent-encoded here, so the driver connects to the right host and every mask
(``escbridge.secrets.safe_url``) hides the whole password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from escbridge.errors import ConfigError, Problem
from escbridge.secrets import MIN_SECRET, quote_userinfo
from escbridge.yamlfile import (
    YamlDocument,
    is_secret_key,
    parse_yaml,
    problems_from_validation,
    secret_fields,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Config",
    "InstanceConfig",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_FILE = "escbridge.yaml"
DEFAULT_STORE = "sqlite:///escbridge.db"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_INSTANCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MASK = "***"
ModelClass = type[BaseModel]  # named here: InstanceConfig has a field called "type"


@dataclass(frozen=True)
class InstanceConfig:
    """One configured helpdesk account: its name, its connector type and raw settings.

    ``settings`` has ``${VAR}`` already replaced; ``secret_values`` maps each substituted value
    to its variable name so validation messages can show ``${VAR}`` instead of the value.
    """

    name: str
    type: str
    settings: dict[str, Any] = field(repr=False)  # may hold secrets: never in a repr
    source: YamlDocument | None = field(default=None, repr=False, compare=False)
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def problems_from(
        self, error: PydanticValidationError, model: ModelClass | None = None
    ) -> list[Problem]:
        """The connector model's errors as file:line problems under ``instances.<name>``.

        With the ``model`` that raised them, its ``SecretStr`` fields are hidden too (fields
        named like credentials always are).
        """
        doc = self.source or YamlDocument("<config>", None, {})
        hidden: frozenset[str] = secret_fields(model) if model is not None else frozenset()
        problems = problems_from_validation(
            doc, error, prefix=("instances", self.name), secrets=hidden
        )
        literal = _literal_secrets(self.settings, hidden)
        return [Problem(p.file, p.line, p.path, self.mask(p.message, literal)) for p in problems]

    def mask(self, text: str, literal: Iterable[str] = ()) -> str:
        """Every value that came from the environment as ``${VAR}``; ``literal`` ones as ***."""
        for value, var in sorted(self.secret_values.items(), key=lambda kv: -len(kv[0])):
            if value:
                text = text.replace(value, "${" + var + "}")
        for value in sorted(literal, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


def _literal_secrets(settings: Mapping[str, Any], fields: Collection[str]) -> set[str]:
    """The values written under credential keys (any depth), long enough to mask safely."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, secret or str(key) in fields or is_secret_key(str(key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, secret)
        elif secret and value is not None and not isinstance(value, bool):
            text = str(value)
            if len(text) >= MIN_SECRET:
                found.add(text)

    walk(settings, False)
    return found


@dataclass(frozen=True)
class Config:
    """escbridge.yaml, validated. ``processing`` is left raw for the processing section's owner."""

    path: Path
    store_url: str
    matrix_path: Path
    instances: dict[str, InstanceConfig]
    processing: dict[str, Any] = field(default_factory=dict)
    source: YamlDocument | None = field(default=None, repr=False, compare=False)


class _InstanceSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


class _ConfigSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = DEFAULT_STORE
    matrix: str = "matrix.yaml"
    instances: dict[str, _InstanceSpec] = Field(default_factory=dict)
    processing: dict[str, Any] = Field(default_factory=dict)

    @field_validator("instances")
    @classmethod
    def _names(cls, value: dict[str, _InstanceSpec]) -> dict[str, _InstanceSpec]:
        for name in value:
            if not _INSTANCE_NAME.match(name):
                raise ValueError(
                    f'instance name "{name}" must be lowercase letters, digits, "-" or "_" '
                    "(it becomes part of the webhook URL)"
                )
        return value


def load_config(
    path: str | Path = DEFAULT_CONFIG_FILE,
    env: Mapping[str, str] | None = None,
    *,
    helpdesk_secrets: bool = True,
) -> Config:
    """Read and validate escbridge.yaml; ConfigError lists every problem with file:line.

    ``helpdesk_secrets=False`` is for commands that only use the store (db, jobs, report): an
    instance's unset ``${VAR}`` is then read as empty instead of refusing the whole file, so an
    operator can upgrade the schema or read a report without the helpdesks' API tokens.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(p), None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(
        text,
        source=str(p),
        base_dir=p.resolve().parent,
        env=env,
        helpdesk_secrets=helpdesk_secrets,
    )


def parse_config(
    text: str,
    source: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    helpdesk_secrets: bool = True,
) -> Config:
    """Validate config text. Relative paths are resolved against ``base_dir`` (the file's dir)."""
    from escbridge.errors import InvalidInputError

    try:
        doc = parse_yaml(text, source)
    except InvalidInputError as exc:
        raise ConfigError(exc.problems) from None
    base = base_dir or Path.cwd()
    env = os.environ if env is None else env
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), "must be a mapping of settings (store, matrix, …)")])

    problems: list[Problem] = []
    secrets: dict[str, str] = {}
    resolved = _substitute(data, (), doc, env, problems, secrets)
    if not helpdesk_secrets:
        problems = [p for p in problems if not p.path.startswith("instances.")]
    if problems:
        raise ConfigError(problems)
    try:
        spec = _ConfigSpec.model_validate(resolved)
    except PydanticValidationError as exc:
        masked = [
            Problem(p.file, p.line, p.path, _mask(p.message, secrets))
            for p in problems_from_validation(doc, exc)
        ]
        raise ConfigError(masked) from None

    instances = {}
    for name, inst in spec.instances.items():
        settings = dict(inst.model_extra or {})
        instances[name] = InstanceConfig(
            name=name,
            type=inst.type,
            settings=settings,
            source=doc,
            secret_values={v: k for v, k in secrets.items() if _contains(settings, v)},
        )
    return Config(
        path=Path(source) if source != "<string>" else base / DEFAULT_CONFIG_FILE,
        store_url=_store_url(spec.store, base),
        matrix_path=(base / spec.matrix).resolve()
        if not Path(spec.matrix).is_absolute()
        else Path(spec.matrix),
        instances=instances,
        processing=dict(spec.processing),
        source=doc,
    )


def _substitute(
    value: Any,
    path: tuple[str | int, ...],
    doc: YamlDocument,
    env: Mapping[str, str],
    problems: list[Problem],
    secrets: dict[str, str],
) -> Any:
    """Replace ``${VAR}`` in every string; record problems for unset variables."""
    if isinstance(value, dict):
        return {
            k: _substitute(v, (*path, str(k)), doc, env, problems, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _substitute(v, (*path, i), doc, env, problems, secrets) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(match: re.Match[str]) -> str:
        var = match.group(1)
        got = env.get(var)
        if got is None or got == "":
            state = "is not set" if got is None else "is empty"
            problems.append(doc.problem(path, f"environment variable {var} {state}"))
            return ""
        secrets[got] = var
        return got

    return _ENV_REF.sub(repl, value)


def _contains(value: Any, secret: str) -> bool:
    if isinstance(value, dict):
        return any(_contains(v, secret) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, secret) for v in value)
    return isinstance(value, str) and secret in value


def _mask(text: str, secrets: Mapping[str, str]) -> str:
    for value, var in sorted(secrets.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(value, "${" + var + "}")
    return text


def _store_url(url: str, base: Path) -> str:
    """A relative SQLite path is taken relative to the config file, not the working directory;
    a raw password (``p@ss/w:rd``) is percent-encoded, so the driver reads the host right."""
    prefix = "sqlite:///"
    url = quote_userinfo(url)
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        db, sep, query = rest.partition("?")
        if db and db != ":memory:" and not db.startswith("/"):
            return f"{prefix}{(base / db).resolve()}{sep}{query}"
    return url
