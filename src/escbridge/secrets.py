"""The one Redactor: keeps secrets out of every log line, error, job row and report.

Known secret values (the configured tokens, in their plain, URL-encoded and base64 forms, so a
token inside ``Authorization: Basic …`` is caught too) are replaced wherever they appear; on top
of that, credentials in the shapes HTTP errors and URLs carry them (Authorization headers,
``token=`` parameters, passwords in URLs, long opaque strings) are masked, so an unknown token is
hidden as well. One mask, ``[redacted]``, everywhere.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "[redacted]"
MAX_LENGTH = 2000
MIN_SECRET = 4  # shorter values would mask ordinary words

# A credential value after a key: at least 8 characters and not a plain lower-case word, so
# "token: no response" or "password: required" stay readable while real values are masked.
_VALUE = r"(?=[^\s\"'&,;}]*(?-i:[0-9A-Z_+/=.~-]))[^\s\"'&,;}]{8,}"

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
            r"|client[_-]?secret|secret|password|passwd|token)[\"']?\s*[:=]\s*[\"']?)" + _VALUE
        ),
        r"\1" + MASK,
    ),
    # scheme://user:password@host — the password may hold any character but whitespace, the
    # user an "@" (admin@server, as Azure writes it); the userinfo ends at the last "@" before
    # the host.
    (re.compile(r"(://[^/\s:]+:)\S+@(?=[^@\s/]*(?:[/\s]|$))"), r"\1" + MASK + "@"),
    # anything that looks like a token: 32+ characters of base64/hex without a space (not a
    # URL path: "/" ends a run)
    (re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+_-]{32,}={0,2}"), MASK),
)


_HOST = re.compile(r"[A-Za-z0-9.\-]+(?::\d+)?(?:[/?]|$)|\[[0-9A-Fa-f:.]+\](?::\d+)?(?:[/?]|$)")


def _split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme, user, password or None, rest after the "@")``, or None without userinfo.

    The userinfo ends at the last ``@`` that is followed by a host name: a raw password may
    hold ``@``, ``/``, ``:`` and more, and is still found whole; the user name ends at the
    first ``:``. A URL whose authority is empty (``sqlite:////path@x``) has no userinfo.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/"):
        return None
    for match in reversed(list(re.finditer("@", rest))):
        if _HOST.match(rest, match.end()):
            user, colon, password = rest[: match.start()].partition(":")
            return scheme, user, password if colon else None, rest[match.end() :]
    return None


_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_RAW_IN_USERINFO = re.compile(r"[@/:?#\[\]\s]")


def quote_userinfo(url: str) -> str:
    """``url`` with a raw user name and password percent-encoded, so every URL parser (the
    database driver's included) reads the same host and the same whole password.

    ``postgresql://app:p@ss/w:rd@db/esc`` becomes ``postgresql://app:p%40ss%2Fw%3Ard@db/esc``;
    a password that is already encoded (only ``%XX`` escapes and safe characters) is kept.
    """
    split = _split_userinfo(url)
    if split is None:
        return url
    scheme, user, password, rest = split

    def encoded(part: str) -> str:
        raw = _RAW_IN_USERINFO.search(part) or "%" in _PERCENT_ESCAPE.sub("", part)
        return quote(part, safe="") if raw else part

    userinfo = encoded(user) + (f":{encoded(password)}" if password is not None else "")
    return f"{scheme}://{userinfo}@{rest}"


def _forms(secret: str) -> list[str]:
    """The ways a secret shows up in text: as is, URL-encoded, base64 (Basic auth)."""
    forms = {secret, quote(secret, safe="")}
    forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    return sorted(forms, key=len, reverse=True)


class Redactor:
    """Masks known secrets and credential-shaped values; safe to share between threads."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self._forms: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Learn more secret values (e.g. an access token obtained at run time)."""
        with self._lock:
            fresh = [
                s
                for s in dict.fromkeys(secrets)
                if s and len(s) >= MIN_SECRET and s not in self._secrets
            ]
            if not fresh:
                return
            self._secrets = (*self._secrets, *fresh)
            forms = {f for s in self._secrets for f in _forms(s) if len(f) >= MIN_SECRET}
            self._forms = tuple(sorted(forms, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def known(self, text: str) -> str:
        """Only the known secrets masked (for text whose shape the patterns would mangle)."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def __call__(self, text: str, *, limit: int | None = MAX_LENGTH) -> str:
        """``text`` with every known secret and credential-shaped value masked, shortened."""
        text = self.known(text)
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
        if limit is not None and len(text) > limit:
            text = text[: limit - 1] + "…"
        return text

    def url(self, url: str) -> str:
        """A URL fit for a log line: no password, no fragment, known secrets masked.

        The userinfo is cut at the last ``@`` that is followed by a host, so a password holding
        ``@``, ``/``, ``#``, ``:`` or ``%`` unescaped (as admins write database URLs) is removed
        whole; the user name is kept.
        """
        split = _split_userinfo(url)
        if split is not None:
            scheme, user, password, rest = split
            shown = f"{user}:{MASK}@" if password is not None else f"{user}@"
            url = f"{scheme}://{shown}{rest}"
        # Cut by hand: urlunsplit would turn sqlite:////abs/x.db into sqlite://abs/x.db.
        return self.known(url.partition("#")[0])


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with ``secrets`` and every credential-shaped value masked (one-off form)."""
    return Redactor(secrets)(text)


def safe_url(url: str, secrets: Iterable[str] = ()) -> str:
    """A URL without its userinfo (whatever characters the password holds) or fragment."""
    return Redactor(secrets).url(url)


__all__ = ["MASK", "MIN_SECRET", "Redactor", "quote_userinfo", "redact", "safe_url"]
