"""Zoho Desk's signing keys (JWKS) never make the webhook door wait (issue 14, item 1).

The receiver fetches Desk's JWKS in a background thread at start-up (``escbridge-jwks-<instance>``,
``kit.Learned``, as it learns who escbridge writes as). While Desk's key server hangs, a genuine
delivery is answered at once — refused, never a 2xx for an event that could not be verified,
and nothing is stored — and once the keys have come, it is accepted. A key rotation while the
key server hangs: deliveries signed with a known key still verify, those with the new key are
refused as "cannot verify yet" (``WebhookKeyUnavailable``: 503 + Retry-After, so Desk sends
them again), not as forged.

"Hanging" is a ``responses`` callback that blocks until the test releases it, so the order of
events is fixed by the test; the time a delivery waits for the keys (``MISS_WAIT``, half a
second) bounds the door's answer but no assertion depends on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from escbridge_zohodesk.webhook import MIN_REFETCH, MIN_RETRY_AFTER, JwksCache
from test_door_never_waits import (
    API,
    DELIVERIES,
    GUARD,
    JWKS_URL,
    KEY,
    KID,
    Door,
    Helpdesks,
    close,
    load_config,
    open_door,
)

from escbridge.errors import WebhookAuthError, WebhookKeyUnavailable
from escbridge.testing import FakeClock

NEW_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NEW_KID = "desk-door-rotated"


def jwks(*pairs: tuple[str, Any]) -> dict[str, Any]:
    keys = []
    for kid, key in pairs:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": keys}


class KeyServer:
    """Desk's JWKS endpoint: answers ``document``, or, while ``hanging``, blocks every request
    until ``release`` is set (then answers)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.hanging = True
        self.release = threading.Event()
        self.asked = threading.Event()
        self.calls: list[str] = []  # the thread of each request

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls.append(threading.current_thread().name)
        self.asked.set()
        if self.hanging:
            self.release.wait(GUARD)
        return 200, {}, json.dumps(self.document)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def start(rsps: responses.RequestsMock, keys: KeyServer, tmp_path: Path, store: str) -> Door:
    """The receiver on the three helpdesks (their APIs healthy), Desk's JWKS served by ``keys``."""
    api = Helpdesks("answer")
    rsps.add_callback("GET", JWKS_URL, callback=keys)
    for name, pattern in API.items():
        for method in ("GET", "POST", "PUT", "PATCH"):
            rsps.add_callback(method, pattern, callback=api._answer(name))
    return open_door(load_config(tmp_path, store), api)


def jwks_of(door: Door) -> JwksCache:
    cache = door.connector("zo").jwks  # type: ignore[attr-defined]
    assert isinstance(cache, JwksCache)
    return cache


def test_while_desks_key_server_hangs_a_delivery_is_answered_and_never_accepted(
    rsps: responses.RequestsMock, sqlite_url: str, tmp_path: Path
) -> None:
    keys = KeyServer(jwks((KID, KEY)))
    door = start(rsps, keys, tmp_path, sqlite_url)
    try:
        assert keys.asked.wait(GUARD)  # fetched at start-up, in the background ...
        assert keys.calls == ["escbridge-jwks-zo"]

        path, body, headers = DELIVERIES["zo"](301, "55430000000064111")
        response = door.client.post(path, data=body, headers=headers)

        assert not keys.release.is_set()  # ... and still hanging when the door answered
        # refused, never accepted unverified, and asked to come again (not called forged)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 30
        assert door.processor.store.job_counts().get("pending", 0) == 0

        keys.release.set()  # Desk answers: the start-up fetch completes
        assert jwks_of(door).join(GUARD)
        keys.hanging = False
        status, body = door.deliver("zo", 301, "55430000000064111")
        assert (status, body["status"]) == (202, "queued")
        assert keys.calls == ["escbridge-jwks-zo"]  # the door itself never asked
    finally:
        keys.release.set()
        jwks_of(door).stop(GUARD)
        close(door)


def test_a_rotated_key_while_the_key_server_hangs_is_cannot_verify_yet_not_forged(
    rsps: responses.RequestsMock,
) -> None:
    keys = KeyServer(jwks((KID, KEY)))
    keys.hanging = False
    rsps.add_callback("GET", JWKS_URL, callback=keys)
    clock = FakeClock()
    cache = JwksCache([JWKS_URL], clock=clock.monotonic, miss_wait=0.05)
    cache.start()
    assert cache.join(GUARD)

    keys.document, keys.hanging = jwks((KID, KEY), (NEW_KID, NEW_KEY)), True
    clock.advance(seconds=MIN_REFETCH + 1)
    try:
        with pytest.raises(WebhookKeyUnavailable) as later:
            cache.key(NEW_KID)  # refetch started in the background; waited for only briefly
        assert later.value.retry_after >= MIN_RETRY_AFTER
        assert cache.key(KID) is not None  # the known key still verifies meanwhile
        assert len(keys.calls) == 2 and not keys.calls[-1].startswith("MainThread")
    finally:
        keys.release.set()

    # Desk answered: the rotated key is known; an unknown one is now plainly not Desk's.
    assert cache.learned.wait_attempt(1, GUARD)  # the start-up fetch was attempt 1
    assert cache.key(NEW_KID) is not None
    with pytest.raises(WebhookAuthError) as forged:
        cache.key("not-desks")
    assert not isinstance(forged.value, WebhookKeyUnavailable)
    assert len(keys.calls) == 2  # a random kid within MIN_REFETCH fetches nothing
