"""Zoho Desk webhooks: is the request genuine, and which tickets does it name?

Desk signs nothing but a JWT in ``X-ZDesk-JWT`` (RS256; ``iss`` "orgId:<org>", ``aud``
"webhookId:<webhook>"); the signature covers the claims, not the body, so a captured token could
carry another body while it lives. Hence three independent checks: a random secret in the URL
(``?token=``), the JWT against the data centre's JWKS, and — downstream — the body is only a
hint: the ticket is re-fetched before anything is decided.

JWKS keys are fetched in the background (at start-up, and again for an unknown ``kid``: at
most every 30 s, so random kids cannot make us hammer Desk) and cached by ``kid``; a delivery
waits for them at most half a second and is otherwise answered 503 so Desk sends it again
(``JwksCache``). Stale keys are used when Desk cannot be reached.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt
import requests

from escbridge.connector.contract import Headers
from escbridge.connector.kit import Learned
from escbridge.connector.payload import load_json
from escbridge.errors import WebhookAuthError, WebhookKeyUnavailable, WebhookPayloadError
from escbridge.model import TicketEvent
from escbridge_zohodesk.parse import parse_time

log = logging.getLogger(__name__)

JWT_HEADER = "x-zdesk-jwt"
TOKEN_PARAM = "token"
MIN_REFETCH = 30.0
MISS_WAIT = 0.5  # the longest a delivery waits for Desk's keys (Desk allows 5 s for an answer)
MIN_RETRY_AFTER = 30.0  # what a 503 for keys not fetched in time asks Desk to wait at least

EVENT_KINDS = {
    "Ticket_Add": "ticket.created",
    "Ticket_Update": "ticket.updated",
    "Ticket_Delete": "ticket.deleted",
    "Ticket_Comment_Add": "comment.added",
    "Ticket_Comment_Update": "comment.updated",
    "Ticket_Thread_Add": "thread.added",
    "Ticket_Approval_Add": "approval.added",
    "Ticket_Approval_Update": "approval.updated",
    "Ticket_Attachment_Add": "attachment.added",
    "Ticket_Attachment_Update": "attachment.updated",
    "Ticket_Attachment_Delete": "attachment.deleted",
}


_TICKET_ITSELF = frozenset({"Ticket_Add", "Ticket_Update", "Ticket_Delete"})


class JwksCache:
    """Desk's webhook signing keys by ``kid``, fetched from the first URL that answers —
    always in the background, never while a delivery waits longer than ``miss_wait``.

    ``start()`` (a receiver at start-up) fetches them in a daemon thread, retrying with
    back-off until they come (``kit.Learned``). A key that is known answers at once; past
    ``ttl`` it is still used while a refresh runs in the background. An unknown ``kid`` (a
    rotation, or no keys yet) starts a refresh — at most one every ``MIN_REFETCH`` seconds, so
    random kids cannot make us hammer Desk — and waits for it at most ``miss_wait`` seconds:

    - the keys came and the kid is not among them: forged, ``WebhookAuthError`` (401);
    - they did not come in time (Desk's key server hangs, is down, or we fetched too recently
      after a failure): ``WebhookKeyUnavailable``, answered 503 + ``Retry-After`` so Desk
      delivers it again. Never a 2xx for an unverified event; the door never waits on Desk.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session: requests.Session | None = None,
        timeout: float = 1.5,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        miss_wait: float = MISS_WAIT,
        instance: str = "zohodesk",
    ) -> None:
        self._urls = list(urls)
        self._session = session or requests.Session()
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self.miss_wait = miss_wait
        #: the keys, learned in the background (``kit.Learned``: attempts, wait_attempt, …)
        self.learned = _JwksKeys(self._download, instance=instance, clock=clock)
        self._fetched_at: float | None = None
        self._refreshed_at: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def start(self) -> None:
        """Fetch the keys in the background now, so the first delivery finds them."""
        self.learned.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the background fetching; whether it has ended within ``timeout``."""
        return self.learned.stop(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background fetch started by ``start()`` to end (for a CLI, a test);
        whether keys are known."""
        return self.learned.join(timeout) is not None

    @property
    def known(self) -> bool:
        return self.learned.value is not None

    def key(self, kid: str | None) -> Any:
        """The public key for ``kid`` (None: the only key there is). ``WebhookAuthError`` when
        Desk does not publish it, ``WebhookKeyUnavailable`` when that cannot be known in time."""
        found = _pick(self.learned.value, kid)
        if found is not None:
            if self._fetched_at is None or self._clock() - self._fetched_at >= self._ttl:
                self._refresh()  # the cached key serves meanwhile
            return found
        since = self.learned.attempts
        if self._refresh() or self.learned.busy:
            self.learned.wait_attempt(since, self.miss_wait)
        found = _pick(self.learned.value, kid)
        if found is not None:
            return found
        keys = self.learned
        if keys.value is not None and keys.last_error is None and not keys.busy:
            raise WebhookAuthError(f"JWT key id {kid!r} is not among Desk's published keys")
        retry = max(MIN_RETRY_AFTER, self.learned.retry_in())
        why = self.learned.last_error or f"no answer within {self.miss_wait:g}s"
        raise WebhookKeyUnavailable(
            f"Desk's webhook signing keys (JWKS) could not be fetched ({why}): the delivery is "
            "refused for now and Desk asked to send it again",
            retry_after=retry,
        )

    def _refresh(self) -> bool:
        """Start one background fetch, unless one ran less than ``MIN_REFETCH`` seconds ago."""
        with self._lock:
            now = self._clock()
            if self._refreshed_at is not None and now - self._refreshed_at < MIN_REFETCH:
                return False
            self._refreshed_at = now
        return self.learned.refresh()

    def _download(self) -> dict[str, Any]:
        """One fetch: the keys of the first URL that answers (it is tried first next time)."""
        failed: list[str] = []
        for url in list(self._urls):
            try:
                response = self._session.get(
                    url,
                    timeout=(self._timeout, self._timeout),
                    headers={"Accept": "application/json"},
                )
                response.raise_for_status()
                keys = _parse_jwks(response.json())
            except (requests.RequestException, ValueError) as exc:
                log.warning("zohodesk: JWKS %s unavailable (%s)", url, type(exc).__name__)
                failed.append(type(exc).__name__)
                continue
            with self._lock:
                self.fetches += 1
                self._fetched_at = self._clock()
                if url != self._urls[0]:
                    self._urls.remove(url)
                    self._urls.insert(0, url)
            return keys
        if self.learned.value is not None:
            log.warning("zohodesk: using cached JWKS keys; Desk's JWKS could not be refreshed")
        raise ConnectionError(", ".join(failed) or "no JWKS URL")


class _JwksKeys(Learned[dict[str, Any]]):
    what = "Desk's webhook signing keys (JWKS)"
    consequence = " (until then, deliveries with an unknown key are answered 503)"
    thread_name = "escbridge-jwks"


def _pick(keys: Mapping[str, Any] | None, kid: str | None) -> Any:
    if not keys:
        return None
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None


def _parse_jwks(data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Any] = {}
    for item in data["keys"]:
        if not isinstance(item, Mapping) or item.get("kty") != "RSA":
            continue
        try:
            jwk = jwt.PyJWK(dict(item), algorithm="RS256")
        except jwt.PyJWTError:
            continue
        keys[str(item.get("kid") or "")] = jwk.key
    if not keys:
        raise ValueError("no usable RSA key in the JWKS")
    return keys


def _seconds(value: Any) -> float | None:
    """A JWT time claim in seconds; Desk documents milliseconds but shows seconds (both)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number / 1000.0 if number >= 1e11 else number


class WebhookVerifier:
    """The URL secret, then the JWT: signature, issuer, audience and lifetime."""

    def __init__(
        self,
        *,
        org_id: str,
        webhook_ids: Sequence[str],
        url_token: str | None,
        jwks: JwksCache,
        leeway: float = 30.0,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._org_id = org_id
        self._audiences = tuple(f"webhookId:{w}" for w in webhook_ids)
        self._url_token = url_token
        self._jwks = jwks
        self._leeway = leeway
        self._wallclock = wallclock

    def url_token_ok(self, query: Mapping[str, str]) -> bool:
        given = query.get(TOKEN_PARAM)
        if not self._url_token or not given:
            return False
        return hmac.compare_digest(given.encode(), self._url_token.encode())

    def verify(self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]) -> None:
        if not self._url_token:
            raise WebhookAuthError("webhook_token is not configured for this instance")
        if not self.url_token_ok(query):
            raise WebhookAuthError("the webhook URL token is missing or wrong")
        token = Headers(headers).get(JWT_HEADER)
        if not token:
            if not _has_events(body):
                return  # Desk's URL-validation POST: nothing in it can cause an action
            raise WebhookAuthError("X-ZDesk-JWT header is missing")
        if not self._audiences:
            raise WebhookAuthError(
                "webhook_id is not configured: the JWT audience cannot be checked"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise WebhookAuthError("X-ZDesk-JWT is not a JWT") from None
        if header.get("alg") != "RS256":
            raise WebhookAuthError(f"X-ZDesk-JWT uses {header.get('alg')!r}, not RS256")
        key = self._jwks.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,  # checked below: Desk may count milliseconds
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise WebhookAuthError("X-ZDesk-JWT signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise WebhookAuthError(f"X-ZDesk-JWT is invalid ({type(exc).__name__})") from None
        self._check_claims(claims)
        self._check_org(body)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != f"orgId:{self._org_id}":
            raise WebhookAuthError(f"JWT issuer {claims.get('iss')!r} is not orgId:{self._org_id}")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if not any(a in self._audiences for a in audiences):
            raise WebhookAuthError(f"JWT audience {aud!r} is not a configured webhook_id")
        now = self._wallclock()
        exp = _seconds(claims.get("exp"))
        if exp is None:
            raise WebhookAuthError("JWT has no exp claim")
        if now > exp + self._leeway:
            raise WebhookAuthError(f"JWT expired {now - exp:.0f}s ago")
        iat = _seconds(claims.get("iat"))
        if iat is not None and iat > now + self._leeway:
            raise WebhookAuthError("JWT is issued in the future (check the server clock)")
        nbf = _seconds(claims.get("nbf"))
        if nbf is not None and nbf > now + self._leeway:
            raise WebhookAuthError("JWT is not valid yet")

    def _check_org(self, body: bytes) -> None:
        try:
            events = _events(body)
        except WebhookPayloadError:
            return  # genuine sender, unreadable body: parse_webhook reports it as such
        for event in events:
            org = event.get("orgId")
            if org is not None and str(org) != self._org_id:
                # the org named in the body is not quoted: logs carry nothing a sender wrote
                raise WebhookAuthError(f"an event for another org, not {self._org_id}")


def _known(event_type: str) -> str:
    """The event type for a log or an error: named only when it is one Desk documents."""
    return event_type if event_type in EVENT_KINDS else "a Ticket_* event"


def _events(body: bytes) -> list[Mapping[str, Any]]:
    data = load_json(body) if body.strip() else []
    if isinstance(data, Mapping):
        data = [data]  # Desk sends an array; accept a single event as well
    if not isinstance(data, list) or not all(isinstance(e, Mapping) for e in data):
        raise WebhookPayloadError("the webhook body is not a list of events")
    return list(data)


def _has_events(body: bytes) -> bool:
    try:
        events = _events(body)
    except WebhookPayloadError:
        return True  # unreadable: treat as content that must be signed
    return any(e.get("eventType") or e.get("payload") for e in events)


def parse_events(body: bytes, instance: str) -> list[TicketEvent]:
    """Each event that concerns a ticket -> TicketEvent (others, e.g. Contact_Update, dropped).

    Desk sends no delivery id, so the dedupe key hashes the instance and the event itself.
    """
    out = []
    for event in _events(body):
        event_type = str(event.get("eventType") or "")
        payload = event.get("payload")
        if not event_type.startswith("Ticket_") or not isinstance(payload, Mapping):
            continue
        if event_type in _TICKET_ITSELF:
            ticket_id = payload.get("id")
            actor = payload.get("modifiedBy")
        else:  # comments, threads, attachments, approvals name their ticket in ticketId
            ticket_id = payload.get("ticketId")
            actor = (
                payload.get("commenterId") or payload.get("authorId") or payload.get("modifiedBy")
            )
            if ticket_id is None:
                log.info("zohodesk: %s event without ticketId ignored", _known(event_type))
                continue
        if ticket_id is None or str(ticket_id).strip() == "":
            raise WebhookPayloadError(f"{_known(event_type)} event without a ticket id")
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(f"zohodesk\0{instance}\0{canonical}".encode()).hexdigest()
        try:
            occurred = parse_time(event.get("eventTime"))
        except ValueError:
            occurred = None
        out.append(
            TicketEvent(
                instance=instance,
                ticket_id=str(ticket_id),
                dedupe_key=f"zohodesk:{digest[:40]}",
                kind=EVENT_KINDS.get(event_type, event_type.lower()),
                actor=str(actor) if actor is not None else None,
                occurred_at=occurred,
            )
        )
    return out
