"""The settings of one Zendesk instance in escbridge.yaml (validated with file:line errors).

Host rule (``escbridge.connector.kit.credential_url_problem``, shared with Freshdesk and Zoho):
the API token goes with every call, so ``base_url`` is ``https://<subdomain>.zendesk.com`` and
nothing else, or — with ``sandbox: true`` — a loopback address where the emulator runs.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from escbridge.connector.kit import ConnectorSettings, credential_url_problem

_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DOMAIN = "zendesk.com"


class ZendeskConfig(ConnectorSettings):
    """One Zendesk account.

    Auth is either an API token (``email`` + ``api_token``, sent as ``{email}/token:{token}``)
    or an OAuth access token (``oauth_token``). ``base_url`` replaces ``subdomain``: the
    account's ``https://<subdomain>.zendesk.com``, or the emulator's loopback address with
    ``sandbox: true``.
    """

    subdomain: str | None = None
    sandbox: bool = Field(
        default=False,
        description="base_url is a local emulator (loopback only); never set for a real account",
    )  # before base_url: its validator reads it
    base_url: str | None = None
    email: str | None = None
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    integration_user_id: int | None = Field(
        default=None, description="the user escbridge writes as; learned from /users/me if unset"
    )
    replay_window_seconds: int = Field(default=300, ge=1, le=3600)
    sync: Literal["auto", "incremental", "search"] = "auto"
    incremental_per_minute: int = Field(default=10, ge=1, le=1000)
    search_filter: str = Field(default="", description="extra search terms for the search fallback")
    job_timeout: float = Field(default=600.0, gt=0)
    job_poll_max_interval: float = Field(default=2.0, gt=0)

    @field_validator("subdomain")
    @classmethod
    def _subdomain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if value.endswith(".zendesk.com") or "://" in value:
            short = value.split("://")[-1].split(".")[0]
            raise ValueError(f'write only the subdomain, e.g. "{short}" for {short}.zendesk.com')
        if not _SUBDOMAIN.match(value):
            raise ValueError(f'"{value}" is not a Zendesk subdomain (letters, digits and "-")')
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        """``https://<subdomain>.zendesk.com`` only, or loopback with ``sandbox: true``."""
        if value is None:
            return None
        value = value.strip().rstrip("/")
        sandbox = bool(info.data.get("sandbox"))
        problem = credential_url_problem(
            value, domains=(_DOMAIN,), sandbox=sandbox, label=f"<subdomain>.{_DOMAIN}"
        )
        if problem is not None:
            raise ValueError(problem)
        parts = urlsplit(value)
        if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")):
            raise ValueError(f"write only the address, e.g. https://acme.{_DOMAIN} (no path)")
        label = (parts.hostname or "").removesuffix("." + _DOMAIN)
        if not sandbox and not _SUBDOMAIN.match(label):
            raise ValueError(f"must be https://<subdomain>.{_DOMAIN}")
        return value

    @model_validator(mode="after")
    def _account_and_auth(self) -> ZendeskConfig:
        if (self.subdomain is None) == (self.base_url is None):
            raise ValueError("set exactly one of subdomain (acme for acme.zendesk.com) or base_url")
        if self.sandbox and self.base_url is None:
            raise ValueError("sandbox: true needs base_url (the emulator's loopback address)")
        if self.oauth_token is not None and self.api_token is not None:
            raise ValueError("set either api_token (with email) or oauth_token, not both")
        if self.oauth_token is None and self.api_token is None:
            raise ValueError("set api_token (with email) or oauth_token")
        if self.api_token is not None and not self.email:
            raise ValueError("email is required with api_token (the token belongs to that user)")
        return self

    @property
    def api_url(self) -> str:
        """``https://{subdomain}.zendesk.com/api/v2`` (or ``{base_url}/api/v2``)."""
        root = self.base_url or f"https://{self.subdomain}.zendesk.com"
        return f"{root}/api/v2"

    def secret_values(self) -> list[str]:
        """Every secret, for masking in logs and errors."""
        return [
            s.get_secret_value()
            for s in (self.api_token, self.oauth_token, self.webhook_secret)
            if s is not None
        ]
