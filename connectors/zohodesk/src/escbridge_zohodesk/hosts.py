"""Zoho data centres: where the accounts server, the Desk API and the webhook keys live.

A Zoho account lives in exactly one data centre and its OAuth client, refresh token and Desk
portal must all be used there. The token response's ``api_domain`` (``www.zohoapis.{dc}``) is
*not* the Desk host, so the Desk host always comes from this static table.

Where the reference could not confirm a host (Canada: ``zohocloud.ca`` or ``zoho.ca``), the data
centre lists both pairs; the connector uses the first whose accounts server answers and keeps
the Desk host of the same pair, since accounts and Desk must be in the same data centre.

Sources (api-audit.md #4): Zoho Desk's data-centre table as quoted in public client code lists
ten data centres (US, EU, IN, AU, JP, CA, CN, SA, SG, AE); the Singapore and UAE hosts
(``accounts.zoho.sg``/``desk.zoho.sg``, ``accounts.zoho.ae``/``desk.zoho.ae``) come only from
such second-hand sources. No source confirms a Desk host for "uk": it is still accepted, for an
account that finds it works, but it is UNCONFIRMED.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

DataCentreName = Literal[
    "com", "eu", "in", "com.au", "jp", "ca", "sa", "sg", "ae", "uk", "com.cn"
]  # fmt: skip


@dataclass(frozen=True)
class HostPair:
    """One accounts server and the Desk host of the same data centre."""

    accounts: str  # e.g. https://accounts.zoho.eu
    desk: str  # e.g. https://desk.zoho.eu

    @property
    def jwks(self) -> str:
        """Desk serves the webhook signing keys on every data centre's host."""
        return f"{self.desk}/.well-known/jwks.json"


@dataclass(frozen=True)
class DataCentre:
    name: str
    label: str
    pairs: tuple[HostPair, ...]
    api_domain_suffix: str  # what ``api_domain`` in a token response ends with, for mismatch checks


def _pair(domain: str) -> HostPair:
    return HostPair(f"https://accounts.{domain}", f"https://desk.{domain}")


DATA_CENTRES: dict[str, DataCentre] = {
    "com": DataCentre("com", "US", (_pair("zoho.com"),), "zohoapis.com"),
    "eu": DataCentre("eu", "EU", (_pair("zoho.eu"),), "zohoapis.eu"),
    "in": DataCentre("in", "India", (_pair("zoho.in"),), "zohoapis.in"),
    "com.au": DataCentre("com.au", "Australia", (_pair("zoho.com.au"),), "zohoapis.com.au"),
    "jp": DataCentre("jp", "Japan", (_pair("zoho.jp"),), "zohoapis.jp"),
    # UNCONFIRMED which Canada host is right: zohocloud.ca (Zoho FSM page) first, zoho.ca second.
    "ca": DataCentre("ca", "Canada", (_pair("zohocloud.ca"), _pair("zoho.ca")), "zohoapis.ca"),
    "sa": DataCentre("sa", "Saudi Arabia", (_pair("zoho.sa"),), "zohoapis.sa"),
    # SG and AE: hosts from public client code quoting Desk's DC table; api_domain by the pattern
    "sg": DataCentre("sg", "Singapore", (_pair("zoho.sg"),), "zohoapis.sg"),
    "ae": DataCentre("ae", "United Arab Emirates", (_pair("zoho.ae"),), "zohoapis.ae"),
    # UNCONFIRMED for Desk: Zoho's accounts server exists, but no source names a Desk host.
    "uk": DataCentre("uk", "United Kingdom", (_pair("zoho.uk"),), "zohoapis.uk"),
    "com.cn": DataCentre("com.cn", "China", (_pair("zoho.com.cn"),), "zohoapis.com.cn"),
}

# Every Zoho domain in the table: an admin may point a host override at one of these (for a
# data centre whose Desk host has moved), never at any other public host.
ZOHO_DOMAINS = (
    "zoho.com",
    "zoho.eu",
    "zoho.in",
    "zoho.com.au",
    "zoho.jp",
    "zohocloud.ca",
    "zoho.ca",
    "zoho.sa",
    "zoho.sg",
    "zoho.ae",
    "zoho.uk",
    "zoho.com.cn",
)


def dc_of_api_domain(api_domain: str) -> str | None:
    """The data centre an ``api_domain`` (``https://www.zohoapis.eu``) belongs to, if known."""
    host = (urlsplit(api_domain).hostname or api_domain).lower().rstrip(".")
    best: str | None = None
    for dc in DATA_CENTRES.values():
        suffix = dc.api_domain_suffix
        if (host == suffix or host.endswith("." + suffix)) and (
            best is None or len(suffix) > len(DATA_CENTRES[best].api_domain_suffix)
        ):
            best = dc.name
    return best


def is_zoho_url(url: str) -> bool:
    """True for https URLs on a Zoho domain of the data-centre table."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return False
    return any(host == d or host.endswith("." + d) for d in ZOHO_DOMAINS)
