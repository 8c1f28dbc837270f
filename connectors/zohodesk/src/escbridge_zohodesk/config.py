"""The settings of one Zoho Desk instance in escbridge.yaml (validated with file:line errors).

Host rule (so a typo or a hostile config cannot send the client secret or tokens elsewhere):
hosts come from the data-centre table. ``accounts_url``/``desk_url``/``jwks_url`` overrides are
accepted only when they are https URLs on a Zoho domain of that table, or when ``sandbox: true``
is set and every override is a loopback URL (127.0.0.0/8, ::1, localhost) — the emulator.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from escbridge.connector.kit import ConnectorSettings, credential_url_problem
from escbridge.model import Priority, Status
from escbridge_zohodesk.hosts import (
    DATA_CENTRES,
    ZOHO_DOMAINS,
    DataCentreName,
    HostPair,
)

_DIGITS = re.compile(r"^[0-9]{1,25}$")
_CF_NAME = re.compile(r"^cf_[A-Za-z0-9_]{1,100}$")

DEFAULT_PRIORITY_MAP: dict[str, Priority] = {
    "Low": Priority.LOW,
    "Medium": Priority.NORMAL,
    "High": Priority.HIGH,
}


class ZohoDeskConfig(ConnectorSettings):
    """One Zoho Desk portal (organisation), reached through an OAuth self-client."""

    data_centre: DataCentreName = Field(
        default="com",
        description="com, eu, in, com.au, jp, ca, sa, sg, ae, uk (unconfirmed for Desk) or com.cn",
    )
    org_id: str = Field(description="the Desk organisation id (GET /api/v1/organizations)")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    refresh_token: SecretStr

    # host overrides: see the module docstring for the rule
    sandbox: bool = False
    accounts_url: str | None = None
    desk_url: str | None = None
    jwks_url: str | None = None

    # how Zoho values map onto escbridge's vocabulary
    priority_map: dict[str, Priority] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITY_MAP),
        description="Zoho priority picklist value -> low|normal|high|urgent",
    )
    status_map: dict[str, Status] = Field(
        default_factory=dict, description="custom status display name -> escbridge status"
    )
    # Where escbridge keeps its level marker (escbridge.model.LevelMarker): a ticket tag
    # ``escbridge_<level>`` (Desk's tag API, zohodesk-oas v1.0/TicketTag.json; nothing for an
    # admin to create), or the custom field ``level_field`` for portals that already use one.
    # Naming ``level_field`` without ``level_marker`` means "field", as before tags existed.
    level_marker: Literal["tag", "field"] = Field(
        default="tag",
        description='"tag" (the default: the tag escbridge_<level>) or "field" (level_field)',
    )
    level_field: str | None = Field(
        default="cf_escalation_level",
        description="API name of the custom field that carries the level marker (level_marker: "
        "field); with level_marker: tag, a value found there is still read (older escalations)",
    )

    # who escbridge is, for loop prevention (learned from our own updates when unset)
    agent_id: str | None = None

    # Links to a ticket for people (report, notifications). Desk's agent view has the portal's
    # name in its path (desk.zoho.eu/agent/<portal>/...), which no API call escbridge makes
    # returns, so the admin copies one ticket's address and puts {id} in place of its id.
    agent_ticket_url: str | None = Field(
        default=None,
        description="a ticket's address in Desk's agent view with {id} for the ticket id, e.g. "
        "https://desk.zoho.eu/agent/acme/support/tickets/details/{id}; unset: no links",
    )

    # webhooks
    webhook_id: str | list[str] | None = Field(
        default=None, description="id(s) of the Desk webhook(s) that call escbridge (JWT aud)"
    )
    webhook_token: SecretStr | None = Field(
        default=None, description="the random ?token= in the webhook URL registered in Desk"
    )
    jwks_timeout: float = Field(default=1.5, gt=0, le=4.0)
    jwks_cache_seconds: float = Field(default=3600.0, ge=0)
    jwt_leeway_seconds: float = Field(default=30.0, ge=0, le=300)

    # sync and limits
    # /tickets/search takes ``from`` 0..999 and ``limit`` 1..100 (zohodesk-oas v1.0/Search.json),
    # so no window can be read past its 1,000th hit: a window with more is split.
    search_result_cap: int = Field(
        default=1000,
        ge=100,
        le=1000,
        description="most hits one search window may have (Desk pages no further than from=999)",
    )
    sync_overlap_seconds: int = Field(default=60, ge=0, le=3600)
    sync_start_days: int = Field(default=30, ge=1, le=3650)
    credit_reserve: int = Field(
        default=0, ge=0, description="stop the sync while fewer daily credits than this remain"
    )
    max_concurrency: int = Field(default=5, ge=1, le=25)
    note_dedupe_minutes: float = Field(
        default=15.0,
        gt=0,
        le=1440,
        description="a retry finds its own note this long; keep it below the matrix cooldown",
    )
    bulk_min_batch: int = Field(default=3, ge=2, le=50)
    token_cache: str | None = Field(
        default=None,
        description="directory of the access token shared by all processes (default "
        '$XDG_STATE_HOME/escbridge/zohodesk-tokens; "" keeps it per process)',
    )

    @field_validator("org_id", mode="before")
    @classmethod
    def _org_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not _DIGITS.match(value.strip()):
            raise ValueError("the orgId is a number, e.g. 2389290 (GET /api/v1/organizations)")
        return value.strip() if isinstance(value, str) else value

    @field_validator("agent_id", mode="before")
    @classmethod
    def _agent_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("webhook_id", mode="before")
    @classmethod
    def _webhook_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @field_validator("webhook_token")
    @classmethod
    def _webhook_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 random characters (it guards the webhook URL)")
        return value

    @field_validator("level_field")
    @classmethod
    def _level_field(cls, value: str | None) -> str | None:
        if value is not None and not _CF_NAME.match(value):
            raise ValueError(
                'must be the API name of a ticket custom field, e.g. "cf_escalation_level"'
            )
        return value

    @field_validator("priority_map", mode="before")
    @classmethod
    def _priority_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: Priority.parse(v) for k, v in value.items()}
        return value

    @field_validator("priority_map")
    @classmethod
    def _priority_map(cls, value: dict[str, Priority]) -> dict[str, Priority]:
        if not value:
            raise ValueError("needs at least one Zoho priority value")
        if any(not k.strip() for k in value):
            raise ValueError("Zoho priority values cannot be empty")
        return value

    @field_validator("agent_ticket_url")
    @classmethod
    def _agent_ticket_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.count("{id}") != 1:
            raise ValueError(
                "must hold {id} once, where the ticket id goes: e.g. "
                "https://desk.zoho.eu/agent/acme/support/tickets/details/{id}"
            )
        return value

    @field_validator("accounts_url", "desk_url", "jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be a full URL (https://…)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _marker_place(self) -> ZohoDeskConfig:
        """An explicit ``level_field`` (set before tags existed) keeps the field; a field
        marker needs a field to write."""
        explicit = self.model_fields_set
        if "level_marker" not in explicit and "level_field" in explicit and self.level_field:
            object.__setattr__(self, "level_marker", "field")  # frozen: set once, here
        if self.level_marker == "field" and not self.level_field:
            raise ValueError(
                'level_marker: field needs level_field (e.g. "cf_escalation_level"); '
                "or use level_marker: tag"
            )
        return self

    @property
    def marker_field(self) -> str | None:
        """The custom field escbridge writes its level into, or None (the marker is a tag)."""
        return self.level_field if self.level_marker == "field" else None

    @model_validator(mode="after")
    def _hosts(self) -> ZohoDeskConfig:
        overrides = {
            k: v
            for k, v in (
                ("accounts_url", self.accounts_url),
                ("desk_url", self.desk_url),
                ("jwks_url", self.jwks_url),
                ("agent_ticket_url", self.agent_ticket_url),
            )
            if v is not None
        }
        if self.sandbox and self.desk_url is None:
            raise ValueError("sandbox: true needs desk_url (the emulator's address)")
        for key, url in overrides.items():  # the one host rule (kit.credential_url_problem)
            problem = credential_url_problem(
                url,
                domains=ZOHO_DOMAINS,
                sandbox=self.sandbox,
                label="a Zoho domain (e.g. https://desk.zoho.eu)",
            )
            if problem is not None:
                raise ValueError(f"{key} {problem}")
        return self

    # -- derived -------------------------------------------------------------------------------

    @property
    def host_pairs(self) -> tuple[HostPair, ...]:
        """Candidate (accounts, desk) pairs, in the order they are tried."""
        table = DATA_CENTRES[self.data_centre].pairs
        if self.desk_url is None and self.accounts_url is None:
            return table
        desk = self.desk_url or table[0].desk
        accounts = self.accounts_url or (self.desk_url if self.sandbox else None)
        return (HostPair(accounts or table[0].accounts, desk),)

    @property
    def webhook_ids(self) -> tuple[str, ...]:
        if self.webhook_id is None:
            return ()
        if isinstance(self.webhook_id, str):
            return (self.webhook_id,)
        return tuple(self.webhook_id)

    def jwks_url_for(self, pair: HostPair) -> str:
        return self.jwks_url or pair.jwks

    def secret_values(self) -> list[str]:
        """Every configured secret, for masking in logs and errors."""
        return [
            s.get_secret_value()
            for s in (self.client_secret, self.refresh_token, self.webhook_token)
            if s is not None
        ]
