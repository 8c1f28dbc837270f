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

import difflib
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    with_suggestions,
)

if TYPE_CHECKING:
    from escbridge.matrix import Matrix

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Config",
    "InstanceConfig",
    "Routing",
    "group_key_problems",
    "is_config",
    "load_config",
    "parse_config",
    "routing",
    "unknown_helpdesk",
    "with_suggestions",
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
        if model is not None:
            problems = with_suggestions(problems, error, model)
        literal = _literal_secrets(self.settings, hidden)
        return [Problem(p.file, p.line, p.path, self.mask(p.message, literal)) for p in problems]

    def mask(self, text: str, literal: Iterable[str] = ()) -> str:
        """Every value that came from the environment as ``${VAR}``; ``literal`` ones as ***."""
        text = _mask(text, {value: var for value, var in self.secret_values.items() if value})
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

    @property
    def secret_values(self) -> list[str]:
        """Every instance's secrets: what each log line and message must mask."""
        return [value for instance in self.instances.values() for value in instance.secret_values]

    def helpdesk_problems(self, installed: Collection[str]) -> list[Problem]:
        """Every instance whose ``type:`` no installed connector provides, at its file:line."""
        doc = self.source or YamlDocument(str(self.path), None, {})
        return [
            doc.problem(("instances", name, "type"), unknown_helpdesk(instance.type, installed))
            for name, instance in self.instances.items()
            if instance.type not in installed
        ]

    def require_helpdesks(self, installed: Collection[str]) -> None:
        """ConfigError unless every instance's ``type:`` is an installed connector: checked
        before any connector is built, so a typo is one line naming the key, not a plugin
        load failure."""
        problems = self.helpdesk_problems(installed)
        if problems:
            raise ConfigError(problems)


class _InstanceSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)


class _ConfigSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = DEFAULT_STORE
    matrix: str = "matrix.yaml"
    instances: dict[str, _InstanceSpec] = Field(default_factory=dict)
    processing: dict[str, Any] = Field(default_factory=dict)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        """Refused here, with this file's line, not later by the driver with a traceback."""
        from escbridge.store.database import url_problem  # imports SQLAlchemy: only when read

        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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
    found = _processing_problems(doc, resolved.get("processing"))
    try:
        spec = _ConfigSpec.model_validate(resolved)
    except PydanticValidationError as exc:
        found = [*with_suggestions(problems_from_validation(doc, exc), exc, _ConfigSpec), *found]
    if found:
        masked = [Problem(p.file, p.line, p.path, _mask(p.message, secrets)) for p in found]
        raise ConfigError(sorted(masked, key=lambda p: p.line or 0)) from None

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
        if path and path[0] == "instances" and not got.isascii():
            # HTTP credentials are ASCII: a pasted "…" or a typographic quote would fail in
            # the middle of the first request instead of here.
            problems.append(
                doc.problem(
                    path,
                    f"environment variable {var} holds a character that is not ASCII — paste "
                    "the real value",
                )
            )
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
    """Show each secret as its ``${VAR}``. A value shorter than MIN_SECRET (a test value such
    as ``x``) is masked only where it stands alone, so it does not garble every word holding
    that letter ("is not a known ke${VAR}")."""
    for value, var in sorted(secrets.items(), key=lambda kv: -len(kv[0])):
        shown = "${" + var + "}"
        if len(value) >= MIN_SECRET:
            text = text.replace(value, shown)
        else:
            text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", shown.replace("\\", r"\\"), text)
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


# --- typos: did you mean … -----------------------------------------------------------------


def _processing_problems(doc: YamlDocument, section: Any) -> list[Problem]:
    """The ``processing:`` section checked when the file is read, like every other section,
    so `validate`, `check`, `sync`, `serve` and `worker` refuse the same typo the same way."""
    if not isinstance(section, dict):
        return []  # not a mapping: the file's own model says so
    from escbridge.processing.settings import ProcessingConfig  # the section's owner

    try:
        ProcessingConfig.model_validate(section)
    except PydanticValidationError as exc:
        found = problems_from_validation(doc, exc, prefix=("processing",))
        return with_suggestions(found, exc, ProcessingConfig)
    return []


# --- helpdesks and the matrix's routes ------------------------------------------------------

#: The group key every helpdesk matches (``groups: {"*": Team Leads}``).
ANY_HELPDESK = "*"


def unknown_helpdesk(name: str, installed: Collection[str]) -> str:
    """The one wording for a helpdesk type nothing installed provides (config ``type:``,
    ``explain --helpdesk``, a matrix ``groups:`` key)."""
    return f"unknown helpdesk '{name}' — installed: {', '.join(sorted(installed)) or 'none'}"


def _near_miss(key: str, installed: Collection[str]) -> bool:
    """A ``groups:`` key that reads as a misspelt helpdesk (``zendsk``), not as an instance
    name (``zendesk-eu``, ``eu2``): close to an installed name without containing one."""
    if any(name in key for name in installed):
        return False
    return bool(difflib.get_close_matches(key, list(installed), n=1, cutoff=0.8))


def group_key_problems(
    matrix: Matrix, installed: Collection[str], instances: Collection[str] | None = None
) -> list[Problem]:
    """``groups:`` keys of the matrix that name no helpdesk, at the matrix's file:line.

    A key is an instance name, a helpdesk type or ``"*"``. With the config's ``instances``
    every other key is refused; without them (a matrix on its own) only a key that reads as a
    misspelt helpdesk is, since any other may be an instance's name.
    """
    doc = _matrix_lines(matrix.source)
    places: list[tuple[tuple[str | int, ...], str]] = []
    for index, level in enumerate(matrix.levels):
        places.extend((("levels", index, "groups", key), key) for key in level.groups)
    for team_id, team in matrix.teams.items():
        places.extend((("teams", team_id, "groups", key), key) for key in team.groups)
    problems = []
    for path, key in places:
        if key == ANY_HELPDESK or key in installed:
            continue
        if instances is not None and key not in instances:
            configured = ", ".join(sorted(instances)) or "none"
            message = f"{unknown_helpdesk(key, installed)}; instances configured: {configured}"
        elif instances is None and _near_miss(key, installed):
            message = (
                f"{unknown_helpdesk(key, installed)} (an instance's name? validate "
                "escbridge.yaml, which knows them)"
            )
        else:
            continue
        problems.append(doc.problem(path, message))
    return problems


def _matrix_lines(source: str) -> YamlDocument:
    """The matrix file's key lines, for problems found after it was compiled."""
    from escbridge.errors import InvalidInputError

    try:
        return parse_yaml(Path(source).read_text(encoding="utf-8"), source)
    except (OSError, InvalidInputError):
        return YamlDocument(source, None, {})


@dataclass(frozen=True)
class Routing:
    """Where the matrix can send the tickets of one instance: the destinations (every level
    above the first, every team) that have a group on it, and those that have none.

    A destination without a group does not act (the engine says so per ticket); an instance
    where none has one escalates nothing at all, which `check`, `validate` and `sync` refuse
    to call fine.
    """

    instance: str
    helpdesk: str
    routed: tuple[str, ...]
    unrouted: tuple[str, ...]

    @property
    def routes_nothing(self) -> bool:
        return bool(self.unrouted) and not self.routed

    @property
    def skip_reason(self) -> str:
        """Why every ticket of an instance that routes nothing stays where it is."""
        return f"no group for {self.helpdesk} at any level"

    def problem(self) -> str | None:
        """One line when nothing can escalate on this instance, else None."""
        if not self.routes_nothing:
            return None
        keys = f"`{self.helpdesk}: GROUP`"
        if self.instance != self.helpdesk:
            keys += f" (or `{self.instance}: GROUP`)"
        return (
            f"{self.instance} ({self.helpdesk}): the matrix routes nothing here — no group for "
            f"{self.helpdesk} at {_places(self.unrouted)}; add {keys} under their groups:"
        )

    def warning(self) -> str | None:
        """One line when some destinations have no group on this instance, else None."""
        if self.routes_nothing or not self.unrouted:
            return None
        return (
            f"{self.instance} ({self.helpdesk}): no group for {self.helpdesk} at "
            f"{_places(self.unrouted)} — a ticket a rule sends there stays where it is"
        )


def routing(matrix: Matrix, instance: str, helpdesk: str | None) -> Routing:
    """The :class:`Routing` of one instance (``helpdesk``: its ``type:``), by the same lookup
    the engine uses (``Rung.group_for``: instance name, then helpdesk type, then ``"*"``)."""
    routed: list[str] = []
    unrouted: list[str] = []
    for rung in (*matrix.levels[1:], *matrix.teams.values()):
        place = f"{rung.kind} {rung.id}"
        (routed if rung.group_for(instance, helpdesk) is not None else unrouted).append(place)
    return Routing(instance, helpdesk or instance, tuple(routed), tuple(unrouted))


def _places(places: Sequence[str]) -> str:
    """``("level l2", "level l3", "team billing")`` -> ``levels l2, l3 and team billing``."""
    parts = []
    for kind in ("level", "team"):
        ids = [p.partition(" ")[2] for p in places if p.startswith(kind + " ")]
        if ids:
            parts.append(f"{kind}{'s' if len(ids) > 1 else ''} {', '.join(ids)}")
    return " and ".join(parts)


def is_config(data: Any) -> bool:
    """Whether a YAML file's data is an escbridge.yaml rather than a matrix, by its content
    (not its name): a top-level key of the config (``store``, ``instances``, …, or a near
    miss of one) and none of a matrix's (``levels``, ``rules``, …)."""
    if not isinstance(data, dict) or not data:
        return False
    from escbridge.matrix.spec import MatrixSpec

    keys = [str(key) for key in data]
    if any(key in MatrixSpec.model_fields for key in keys):
        return False
    known = list(_ConfigSpec.model_fields)
    return any(key in known or difflib.get_close_matches(key, known, 1, 0.8) for key in keys)
