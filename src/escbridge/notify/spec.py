"""The ``notify:`` section of a matrix file, as pydantic models: structure and types only.

Cross-checks (one kind per target, URLs, addresses, templates, ids listed by levels and teams)
are made when the matrix is compiled (``escbridge.notify.model.compile_targets``), so every
problem gets the file:line of the key it concerns. ``${VAR}`` references are kept as written:
the matrix lives in git and is pure; they are resolved when a notification is sent.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, field_validator

from escbridge.calendar import WrittenDuration, read_duration

#: ``escbridge.matrix.spec.Duration`` again: the matrix's spec imports this module, so this one
#: cannot import the matrix package.
Duration = Annotated[WrittenDuration, PlainValidator(read_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def one_or_many(value: object) -> object:
    """One item written alone is a list of one: ``to: a@example.com``, ``quiet_hours: {...}``,
    a level's ``notify: leads-slack``."""
    return [value] if isinstance(value, str | dict) else value


class SlackSpec(_Spec):
    """An incoming webhook (``webhook_url``), or a bot token and a channel (chat.postMessage)."""

    webhook_url: str | None = None
    token: str | None = None
    channel: str | None = None
    api_url: str | None = None  # the Web API's base URL (a test sink); https://slack.com/api


class TeamsSpec(_Spec):
    """A Teams incoming webhook or Power Automate workflow URL (it takes an Adaptive Card)."""

    url: str


class EmailSpec(_Spec):
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str = Field(alias="from")
    to: Annotated[list[str], BeforeValidator(one_or_many)] = Field(min_length=1)


class WebhookSpec(_Spec):
    """A generic HTTPS endpoint; every request is signed with ``secret`` (HMAC-SHA256)."""

    url: str
    secret: str


class QuietHoursSpec(_Spec):
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    timezone: str = "UTC"
    days: str | None = None


class TemplateSpec(_Spec):
    subject: str | None = None
    text: str | None = None
    html: str | None = None


class TargetSpec(_Spec):
    slack: SlackSpec | None = None
    teams: TeamsSpec | None = None
    email: EmailSpec | None = None
    webhook: WebhookSpec | None = None
    digest: Duration | None = None
    quiet_hours: list[QuietHoursSpec] = Field(default_factory=list)
    template: TemplateSpec | None = None

    # Validators rather than Annotated types: "did you mean" finds the keys of a plain annotation.
    _quiet_hours = field_validator("quiet_hours", mode="before")(one_or_many)


def _targets_or_empty(value: object) -> object:
    return {} if value is None else value


class NotifySpec(_Spec):
    targets: dict[str, TargetSpec] = Field(default_factory=dict)

    _targets = field_validator("targets", mode="before")(_targets_or_empty)


#: The longest digest window: a digest is for bursts, not a daily report.
DIGEST_MAX: WrittenDuration = read_duration("24h")
