"""The settings of one Freshdesk instance in escbridge.yaml.

```yaml
instances:
  support-fd:
    type: freshdesk
    domain: acme                         # acme.freshdesk.com
    api_key: ${FRESHDESK_API_KEY}        # the key of the agent escbridge acts as
    webhook_secret: ${FRESHDESK_WEBHOOK_SECRET}
```

The domain is a Freshdesk subdomain and nothing else: the API key is sent with every call, so a
typo or a hostile config must never send it to another host. The only exception is
``api_url`` pointing at a loopback address, for the built-in sandbox and tests.
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from escbridge.connector.kit import ConnectorSettings, credential_url_problem
from escbridge.model import Status

__all__ = ["FreshdeskConfig", "base_url_for"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SUFFIX = ".freshdesk.com"


class FreshdeskConfig(ConnectorSettings):
    """One Freshdesk account, validated before any call is made."""

    domain: str = Field(
        description="the account's subdomain: 'acme' for acme.freshdesk.com "
        "(the full host is accepted too)"
    )
    api_key: SecretStr = Field(description="API key of the agent escbridge acts as")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret the 'Trigger webhook' action sends (basic-auth password "
        "or the secret header); webhooks are refused while it is unset",
    )
    webhook_username: str = Field(default="escbridge", min_length=1)
    webhook_header: str = Field(default="X-Escbridge-Secret", pattern=r"^[A-Za-z0-9-]+$")
    webhook_dedupe_window: int = Field(
        default=900,
        ge=60,
        le=86_400,
        description="seconds: identical deliveries for one ticket inside one window are one event",
    )
    rate_limit_window: int = Field(
        default=60,
        ge=1,
        description="seconds X-RateLimit-Total refers to: 60 on per-minute plans, 3600 on "
        "legacy per-hour accounts",
    )
    sync_lookback_days: int = Field(
        default=30,
        ge=1,
        description="first sync (no cursor, no 'since'): tickets updated in the last N days",
    )
    status_categories: dict[str, Status] = Field(
        default_factory=dict,
        description="custom status (id or name, any case) -> open|pending|on_hold|solved|closed",
    )
    level_field: str | None = Field(
        default=None,
        description="optional custom field (e.g. cf_escalation_level) that also gets the level, "
        "for Freshdesk views and reports; the tag stays authoritative",
    )
    job_timeout: float = Field(default=120.0, gt=0, description="seconds to wait for a bulk job")
    api_url: str | None = Field(
        default=None,
        description="loopback URL of a sandbox (tests and `escbridge demo` only)",
    )

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        text = value.strip().lower()
        if text.startswith("https://"):
            text = text.removeprefix("https://").rstrip("/")
        text = text.removesuffix(_SUFFIX)
        if not _LABEL.match(text):
            raise ValueError(
                f"'{value}' is not a Freshdesk domain: give the subdomain of "
                "<subdomain>.freshdesk.com (custom domains do not work with API v2)"
            )
        return text

    @field_validator("api_url")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # the one host rule (kit.credential_url_problem): api_url is always a sandbox
        if credential_url_problem(value, domains=(), sandbox=True) is not None:
            raise ValueError(
                "api_url may only point at a loopback sandbox (http://127.0.0.1:<port>); "
                "real accounts are reached through 'domain'"
            )
        return value.rstrip("/")

    def secret_values(self) -> list[str]:
        """Every secret value, for masking in logs and errors."""
        values = [self.api_key.get_secret_value()]
        if self.webhook_secret is not None:
            values.append(self.webhook_secret.get_secret_value())
        return [v for v in values if v]


def base_url_for(config: FreshdeskConfig) -> str:
    """``https://{domain}.freshdesk.com/api/v2``, or the sandbox's loopback URL."""
    if config.api_url is not None:
        return f"{config.api_url}/api/v2"
    return f"https://{config.domain}{_SUFFIX}/api/v2"
