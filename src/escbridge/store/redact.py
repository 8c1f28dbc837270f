"""Keep secrets out of what the store keeps: error texts end up in `escbridge jobs` and logs.

Known secret values (the configured tokens) are replaced wherever they appear; on top of that,
credentials in the shapes HTTP errors carry them (Authorization headers, ``token=`` parameters,
passwords in URLs, long opaque strings) are masked, so an unknown token is hidden too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"
MAX_LENGTH = 2000

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer abc / Authorization: Zoho-oauthtoken abc / Basic dXNlcjpwYXNz
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token|zoho-oauthtoken)\s+)?[^\s\"',;}]+"
        ),
        r"\1" + MASK,
    ),
    (
        re.compile(r"(?i)\b(bearer|basic|zoho-oauthtoken)\s+[A-Za-z0-9._~+/=-]{6,}"),
        r"\1 " + MASK,
    ),
    # api_key=..., "password": "...", token: ..., X-Api-Key: ...
    (
        re.compile(
            r"(?i)\b((?:x-)?(?:api[_-]?key|api[_-]?token|access[_-]?token|refresh[_-]?token"
            r"|client[_-]?secret|secret|password|passwd|token)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"'&,;}]+"
        ),
        r"\1" + MASK,
    ),
    # scheme://user:password@host
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # anything that looks like a token: 32+ characters of base64/hex without a space
    (re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}"), MASK),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known secret and every credential-shaped value masked, shortened."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_LENGTH:
        text = text[: MAX_LENGTH - 1] + "…"
    return text
