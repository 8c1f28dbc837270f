"""Zoho OAuth: one access token per instance, refreshed from one place for all threads.

Zoho Accounts allows 10 access-token requests per 10 minutes per client and blocks the rest of
the window when it is exceeded, so the token is cached until shortly before it expires, a
refresh is single-flight (threads wait for the one in progress and share its result), a 401 on
the Desk API refreshes once (unless another thread already did), and escbridge counts its own
requests so it stops *before* Zoho blocks it. With a ``TokenCache`` (token_cache.py) the token
is shared by every process of the instance too: a process first reads the cache, and refreshes
only while holding the cache's lock, after reading the cache once more (another process may
have just refreshed it).

The refresh grant goes to the data centre's accounts server as a form body, so the client secret
and refresh token never sit in a URL (access logs, proxies). Zoho's documentation shows them as
query parameters instead: if the server answers that the request itself is malformed (not that
the credentials are wrong), the grant is sent once more that way.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import requests

from escbridge.connector.kit import SlidingWindow
from escbridge.errors import ApiError, AuthError, RateLimited, TransientError
from escbridge.http import ApiClient, RetryPolicy
from escbridge.secrets import redact
from escbridge_zohodesk.hosts import DATA_CENTRES, HostPair, dc_of_api_domain
from escbridge_zohodesk.token_cache import CachedToken, TokenCache

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/v2/token"
MAX_TOKEN_REQUESTS = 10
TOKEN_WINDOW = 600.0
REFRESH_MARGIN = 120.0  # refresh this long before expiry, so a slow call never carries a dead token
FAILURE_MEMORY = 30.0  # a refused refresh is remembered this long instead of asked again per thread


@dataclass(frozen=True)
class AccessToken:
    """A live access token. ``scopes`` is None when the accounts server did not list them."""

    value: str
    expires_at: float  # on the manager's monotonic clock
    scopes: frozenset[str] | None
    api_domain: str | None

    def __repr__(self) -> str:
        return f"AccessToken(***, expires_at={self.expires_at:.0f}, scopes={self.scopes})"


def parse_scopes(value: Any) -> frozenset[str] | None:
    """``"Desk.tickets.ALL Desk.search.READ"`` (spaces or commas) -> a set; None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    return frozenset(s for s in re.split(r"[\s,]+", value.strip()) if s)


class TokenManager:
    """Hands out a valid access token; thread-safe; asks Zoho Accounts as rarely as possible.

    ``cache`` (None: the token lives in this process only) shares it between processes.
    """

    def __init__(
        self,
        *,
        data_centre: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        pairs: Sequence[HostPair],
        check_data_centre: bool = True,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = (5.0, 30.0),
        cache: TokenCache | None = None,
    ) -> None:
        self.data_centre = data_centre
        self.cache = cache
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._pairs = tuple(pairs)
        self._pair: HostPair | None = self._pairs[0] if len(self._pairs) == 1 else None
        self._check_dc = check_data_centre
        self._clock = clock
        policy = RetryPolicy(max_attempts=3, max_total_wait=20.0, max_retry_after=20.0)
        common: dict[str, Any] = {
            "secrets": (client_secret, refresh_token),
            "timeout": timeout,
            "policy": policy,
            "sleep": sleep,
            "clock": clock,
        }
        self._form_api = ApiClient(
            "", session=session or requests.Session(), auth=FormBody(), **common
        )
        self._query_api = ApiClient("", session=requests.Session(), **common)
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._window = SlidingWindow(MAX_TOKEN_REQUESTS, TOKEN_WINDOW, clock)
        self._blocked_until = 0.0
        self._failure: tuple[float, ApiError] | None = None
        self._useless: tuple[str, float] | None = None
        self.refreshes = 0  # how many tokens were obtained (tests and `escbridge check` show it)
        self.adopted = 0  # how many tokens were taken from the shared cache instead

    # -- public ------------------------------------------------------------------------------

    @property
    def pair(self) -> HostPair:
        """The accounts/Desk hosts in use (found by the first token request when ambiguous)."""
        if self._pair is None:
            self.token()
        assert self._pair is not None
        return self._pair

    @property
    def current(self) -> AccessToken | None:
        return self._token

    def secret_values(self) -> list[str]:
        """Secrets to mask, including the live access token."""
        out = [self._client_secret, self._refresh_token]
        if self._token is not None:
            out.append(self._token.value)
        return out

    def token(self) -> str:
        """A token valid for at least the refresh margin; refreshes (single-flight) if not."""
        current = self._token
        if current is not None and self._fresh(current):
            return current.value
        with self._lock:
            current = self._token
            if current is not None and self._fresh(current):
                return current.value
            return self._obtain(rejected=None).value

    def refresh_after_rejection(self, rejected: str | None) -> str | None:
        """The Desk API refused ``rejected`` (401): a replacement, or None if none would help.

        Another thread may already have replaced it (then that token is returned). A token that
        was itself the replacement for a refused one and was refused too says the problem is
        not expiry: for a while, None tells callers to report the 401 instead of burning the
        10-per-10-minutes allowance on more tokens.
        """
        with self._lock:
            current = self._token
            if current is not None and current.value != rejected and self._fresh(current):
                return current.value
            if (
                self._useless is not None
                and self._useless[0] == rejected
                and self._clock() - self._useless[1] < FAILURE_MEMORY
            ):
                return None
            return self._obtain(rejected=rejected).value

    def mark_refused(self, token: str) -> None:
        """A token obtained because of a 401 was refused as well."""
        with self._lock:
            self._useless = (token, self._clock())

    # -- internals ---------------------------------------------------------------------------

    def _fresh(self, token: AccessToken) -> bool:
        return self._clock() < token.expires_at - REFRESH_MARGIN

    def _obtain(self, rejected: str | None) -> AccessToken:
        """A token from the shared cache, else a new one (one process at a time asks Zoho).

        Called with ``self._lock`` held. ``rejected`` (refused by Desk) is never taken from the
        cache: only a different, fresh token there means another process already replaced it.
        """
        cache = self.cache
        if cache is None:
            return self._refresh_locked()
        shared = self._adopt(cache, rejected)
        if shared is not None:
            return shared
        with cache.refreshing() as locked:
            if locked:  # another process may have refreshed while this one waited for the lock
                shared = self._adopt(cache, rejected)
                if shared is not None:
                    return shared
            token = self._refresh_locked()
            assert self._pair is not None
            now = cache.wallclock()
            cache.write(
                CachedToken(
                    value=token.value,
                    expires_at=now + (token.expires_at - self._clock()),
                    scopes=token.scopes,
                    api_domain=token.api_domain,
                    accounts=self._pair.accounts,
                    desk=self._pair.desk,
                    obtained_at=now,
                )
            )
            return token

    def _adopt(self, cache: TokenCache, rejected: str | None) -> AccessToken | None:
        """The cached token if it is fresh, not ``rejected`` and for one of our host pairs."""
        entry = cache.read()
        if entry is None or entry.value == rejected:
            return None
        left = cache.seconds_left(entry)
        if left <= REFRESH_MARGIN:
            return None
        pair = next(
            (p for p in self._pairs if p.accounts == entry.accounts and p.desk == entry.desk),
            None,
        )
        if pair is None:
            return None
        token = AccessToken(
            value=entry.value,
            expires_at=self._clock() + left,
            scopes=entry.scopes,
            api_domain=entry.api_domain,
        )
        self._pair = pair
        self._token = token
        self._failure = None
        self.adopted += 1
        log.debug("zohodesk: using the shared access token (valid %.0fs)", left)
        return token

    def _refresh_locked(self) -> AccessToken:
        now = self._clock()
        if self._failure is not None and now - self._failure[0] < FAILURE_MEMORY:
            raise self._failure[1]
        self._admit(now)
        try:
            token = self._request_token()
        except (AuthError, RateLimited) as exc:
            self._failure = (self._clock(), exc)
            raise
        self._failure = None
        self._token = token
        self.refreshes += 1
        log.info("zohodesk: new access token (valid %.0fs)", token.expires_at - self._clock())
        return token

    def _admit(self, now: float) -> None:
        """Count this request against Zoho's 10-per-10-minutes; refuse rather than get blocked."""
        wait = self._blocked_until - now if now < self._blocked_until else 0.0
        if wait <= 0:
            admitted = self._window.acquire()
            wait = 0.0 if admitted.allowed else admitted.retry_after
        if wait > 0:
            raise RateLimited(
                f"Zoho allows {MAX_TOKEN_REQUESTS} access-token requests per 10 minutes and they "
                f"are used up; the next one is possible in {wait:.0f}s. Another process using the "
                "same OAuth client, or a token rejected again and again (check org_id and the "
                "scopes), is the usual cause",
                retry_after=wait,
                status=None,
                code="TOKEN_LIMIT",
            )

    def _request_token(self) -> AccessToken:
        candidates = (self._pair,) if self._pair is not None else self._pairs
        last: TransientError | None = None
        for pair in candidates:
            try:
                body = self._post(pair)
            except TransientError as exc:
                if len(candidates) > 1 and exc.status is None:
                    log.warning("zohodesk: %s unreachable, trying the next host", pair.accounts)
                    last = exc
                    continue
                raise
            token = self._accept(pair, body)
            self._pair = pair
            return token
        assert last is not None
        raise last

    def _post(self, pair: HostPair) -> Mapping[str, Any]:
        url = pair.accounts + TOKEN_PATH
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        body = self._send(self._form_api, pair, url, form)
        if _malformed_request(body):
            log.info("zohodesk: accounts server refused the form body; sending query parameters")
            body = self._send(self._query_api, pair, url, form)
        return body

    def _send(
        self, api: ApiClient, pair: HostPair, url: str, form: Mapping[str, str]
    ) -> Mapping[str, Any]:
        try:
            # A refresh whose answer was lost only costs one of the 10 grants per 10 minutes:
            # asking again costs at most one more, and a retried grant is never an escalation.
            body = api.call("POST", url, params=form, bucket="accounts", idempotent=True)
        except ApiError as exc:
            if isinstance(exc, TransientError) or exc.status is None:
                raise
            body = _error_body(exc)
            if body is None:
                raise self._refused(pair, {"error": exc.code or "error"}, exc.status) from None
        if not isinstance(body, Mapping):
            raise AuthError("the accounts server answered without a token", url=url, method="POST")
        return body

    def _accept(self, pair: HostPair, body: Mapping[str, Any]) -> AccessToken:
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise self._refused(pair, body, None)
        api_domain = body.get("api_domain") if isinstance(body.get("api_domain"), str) else None
        if self._check_dc and api_domain:
            actual = dc_of_api_domain(api_domain)
            if actual is not None and actual != self.data_centre:
                label = DATA_CENTRES[actual].label
                raise AuthError(
                    f"the OAuth client belongs to the {label} data centre (api_domain "
                    f"{api_domain}), but data_centre is {self.data_centre!r}: set "
                    f"data_centre: {actual!r}",
                    code="WRONG_DATA_CENTRE",
                    url=pair.accounts + TOKEN_PATH,
                    method="POST",
                )
        try:
            expires_in = float(body.get("expires_in") or body.get("expires_in_sec") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        if expires_in > 86400:  # some Zoho responses count milliseconds
            expires_in /= 1000.0
        now = self._clock()
        return AccessToken(
            value=value,
            expires_at=now + expires_in,
            scopes=parse_scopes(body.get("scope")),
            api_domain=api_domain,
        )

    def _refused(self, pair: HostPair, body: Mapping[str, Any], status: int | None) -> ApiError:
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
        where = pair.accounts.split("://", 1)[-1]
        kw: dict[str, Any] = {
            "status": status,
            "code": error or None,
            "method": "POST",
            "url": pair.accounts + TOKEN_PATH,
        }
        if description.lower().startswith("you have made to") or error == "Access Denied":
            self._blocked_until = self._clock() + TOKEN_WINDOW
            return RateLimited(
                f"{where} refuses new access tokens for now (too many requests in 10 minutes); "
                "escbridge waits for the window to pass",
                retry_after=TOKEN_WINDOW,
                **kw,
            )
        if error == "invalid_code":
            message = (
                f"{where} did not accept the refresh token (invalid_code): it was revoked, "
                "mistyped, or was made in another data centre; generate a new one "
                "(docs/helpdesks/zohodesk.md, step 2: create the OAuth client)"
            )
        elif error in ("invalid_client", "invalid_client_secret"):
            message = (
                f"{where} did not accept the client id/secret ({error}): check them, and check "
                f"data_centre ({self.data_centre!r}) — a client made in another data centre's "
                "API console is unknown here"
            )
        else:
            detail = redact(description or error or "no token in the answer", self.secret_values())
            message = f"{where} refused the token refresh: {detail}"
        return AuthError(message, **kw)


class FormBody(requests.auth.AuthBase):
    """Moves a request's query parameters into an ``application/x-www-form-urlencoded`` body.

    The shared ApiClient sends ``params`` and ``json`` only; this keeps the grant out of URLs
    while still going through its retries, typed errors and redaction.
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(r.url or "")
        if parts.query:
            r.prepare_body(data=parse_qsl(parts.query, keep_blank_values=True), files=None)
            r.url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))
        return r


def _error_body(exc: ApiError) -> Mapping[str, Any] | None:
    import json

    try:
        body = json.loads(exc.body_excerpt) if exc.body_excerpt else None
    except ValueError:
        return None
    return body if isinstance(body, Mapping) else None


def _malformed_request(body: Mapping[str, Any]) -> bool:
    """An error about the request's shape (not its credentials) that a form body may fix."""
    if "access_token" in body:
        return False
    return str(body.get("error") or "") in ("invalid_request", "unsupported_grant_type")
