"""Webhooks: the validation GET, the URL secret, the RS256 X-ZDesk-JWT, and events as hints."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from zohodesk_support import (
    AGENT_ID,
    JWKS_URL,
    ORG_ID,
    URL_TOKEN,
    WEBHOOK_ID,
    Clock,
    load,
    make_connector,
)

from escbridge.errors import WebhookAuthError, WebhookPayloadError
from escbridge.model import TicketEvent

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "desk-2026-10"
QUERY = {"token": URL_TOKEN}


def jwks(*pairs) -> dict:
    keys = []
    for kid, key in pairs:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": keys}


def token(clock: Clock, *, key=KEY, kid=KID, unit=1, **claims) -> str:
    now = clock().timestamp()
    body = {
        "iss": f"orgId:{ORG_ID}",
        "aud": f"webhookId:{WEBHOOK_ID}",
        "iat": int(now * unit),
        "exp": int((now + 300) * unit),
    }
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def body(**event_changes) -> bytes:
    events = load("webhook_ticket_update.json")
    events[0]["orgId"] = ORG_ID
    events[0].update(event_changes)
    return json.dumps(events).encode()


@pytest.fixture
def keys(rsps):
    return rsps.get(JWKS_URL, json=jwks((KID, KEY)))


def test_a_genuine_delivery_is_accepted(keys, connector, clock):
    connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)
    connector.verify_webhook({"x-zdesk-jwt": token(clock)}, body(), QUERY)  # any header case
    assert keys.call_count == 1  # keys cached by kid
    assert keys.calls[0].request.req_kwargs["timeout"] == (1.5, 1.5)  # the 5 s answer window holds


@pytest.mark.parametrize("query", [{}, {"token": "guessed-token-0000000"}, {"token": ""}])
def test_the_url_secret_is_required(keys, connector, clock, query):
    with pytest.raises(WebhookAuthError, match="URL token is missing or wrong") as err:
        connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), query)
    assert URL_TOKEN not in str(err.value)


def test_a_token_signed_by_another_key_is_refused(keys, connector, clock):
    with pytest.raises(WebhookAuthError, match="signature does not verify"):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock, key=OTHER_KEY)}, body(), QUERY)


def test_an_expired_token_is_refused(keys, connector, clock):
    old = token(clock, exp=int(clock().timestamp() - 120))
    with pytest.raises(WebhookAuthError, match="JWT expired 120s ago"):
        connector.verify_webhook({"X-ZDesk-JWT": old}, body(), QUERY)
    late = token(clock)
    clock.advance(seconds=300 + 31)  # past exp and the 30 s leeway
    with pytest.raises(WebhookAuthError, match="expired"):
        connector.verify_webhook({"X-ZDesk-JWT": late}, body(), QUERY)


def test_times_in_milliseconds_as_documented_are_understood(keys, connector, clock):
    connector.verify_webhook({"X-ZDesk-JWT": token(clock, unit=1000)}, body(), QUERY)
    stale = token(clock, unit=1000, exp=int((clock().timestamp() - 120) * 1000))
    with pytest.raises(WebhookAuthError, match="expired"):  # ms must not read as "far future"
        connector.verify_webhook({"X-ZDesk-JWT": stale}, body(), QUERY)


def test_a_token_from_the_future_is_refused(keys, connector, clock):
    with pytest.raises(WebhookAuthError, match="in the future"):
        connector.verify_webhook(
            {
                "X-ZDesk-JWT": token(
                    clock, iat=int(clock().timestamp() + 3600), exp=int(clock().timestamp() + 3900)
                )
            },
            body(),
            QUERY,
        )


def test_the_wrong_audience_or_issuer_is_refused(keys, connector, clock):
    with pytest.raises(WebhookAuthError, match="audience 'webhookId:999' is not a configured"):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock, aud="webhookId:999")}, body(), QUERY)
    with pytest.raises(WebhookAuthError, match="issuer 'orgId:1' is not orgId:20065432"):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock, iss="orgId:1")}, body(), QUERY)


def test_several_webhooks_can_be_configured(keys, clock):
    connector = make_connector(clock, webhook_id=["111", WEBHOOK_ID])
    connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)


def test_only_rs256_is_accepted(keys, connector, clock):
    forged = jwt.encode(
        {
            "iss": f"orgId:{ORG_ID}",
            "aud": f"webhookId:{WEBHOOK_ID}",
            "exp": int(clock().timestamp() + 60),
        },
        "a-shared-secret-of-32-bytes-long!!",
        algorithm="HS256",
        headers={"kid": KID},
    )
    with pytest.raises(WebhookAuthError, match="uses 'HS256', not RS256"):
        connector.verify_webhook({"X-ZDesk-JWT": forged}, body(), QUERY)
    with pytest.raises(WebhookAuthError, match="not a JWT"):
        connector.verify_webhook({"X-ZDesk-JWT": "garbage"}, body(), QUERY)


def test_an_event_for_another_org_is_refused(keys, connector, clock):
    with pytest.raises(WebhookAuthError, match="an event for another org"):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(orgId="54983163"), QUERY)


def test_a_rotated_key_is_fetched_once_and_random_kids_cannot_hammer_desk(rsps, connector, clock):
    keys = rsps.get(JWKS_URL, json=jwks((KID, KEY)))
    connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)
    rsps.replace("GET", JWKS_URL, json=jwks((KID, KEY), ("desk-2026-11", OTHER_KEY)))
    clock.advance(seconds=31)
    connector.verify_webhook(
        {"X-ZDesk-JWT": token(clock, key=OTHER_KEY, kid="desk-2026-11")}, body(), QUERY
    )
    assert keys.call_count == 1
    fetches = connector.jwks.fetches
    for kid in ("x1", "x2", "x3"):
        with pytest.raises(WebhookAuthError, match="not among Desk's published keys"):
            connector.verify_webhook({"X-ZDesk-JWT": token(clock, kid=kid)}, body(), QUERY)
    assert connector.jwks.fetches == fetches  # just refetched for the rotation: not again yet
    clock.advance(seconds=31)
    with pytest.raises(WebhookAuthError):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock, kid="x4")}, body(), QUERY)
    assert connector.jwks.fetches == fetches + 1  # at most one refetch every 30 s


def test_when_desk_is_unreachable_cached_keys_still_verify(rsps, clock):
    connector = make_connector(clock, jwks_cache_seconds=60)
    rsps.get(JWKS_URL, json=jwks((KID, KEY)))
    connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)
    rsps.replace("GET", JWKS_URL, body=requests.ConnectTimeout("slow"))
    clock.advance(seconds=3600)
    connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)


def test_no_keys_at_all_is_a_refusal_not_a_crash(rsps, connector, clock):
    rsps.get(JWKS_URL, status=503)
    with pytest.raises(WebhookAuthError, match="could not be fetched"):
        connector.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)


def test_the_validation_get_is_answered_200_only_for_our_url(connector):
    assert connector.answer_validation(QUERY) == 200
    assert connector.answer_validation({}) == 401


def test_the_unsigned_validation_post_is_accepted_but_unsigned_events_are_not(keys, connector):
    connector.verify_webhook({}, b"", QUERY)
    connector.verify_webhook({}, b"[]", QUERY)
    assert connector.parse_webhook({}, b"") == []
    with pytest.raises(WebhookAuthError, match="X-ZDesk-JWT header is missing"):
        connector.verify_webhook({}, body(), QUERY)
    with pytest.raises(WebhookAuthError, match="URL token"):
        connector.verify_webhook({}, b"", {})


def test_webhooks_need_their_settings(keys, clock):
    no_id = make_connector(clock, webhook_id=None)
    with pytest.raises(WebhookAuthError, match="webhook_id is not configured"):
        no_id.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)
    no_token = make_connector(clock, webhook_token=None)
    with pytest.raises(WebhookAuthError, match="webhook_token is not configured"):
        no_token.verify_webhook({"X-ZDesk-JWT": token(clock)}, body(), QUERY)


def test_events_become_ticket_hints(connector):
    [event] = connector.parse_webhook({}, body())
    assert event.instance == "support-eu"
    assert event.ticket_id == "31138000011967402"
    assert event.kind == "ticket.updated"
    assert event.actor == "31138000000071001"
    assert event.occurred_at == datetime(2021, 4, 15, 13, 34, 27, 780000, tzinfo=UTC)
    assert event.dedupe_key.startswith("zohodesk:")


def test_a_batch_of_events_with_iso_times_and_comment_events(connector):
    batch = [
        {
            "payload": {"id": "1", "modifiedBy": AGENT_ID},
            "eventType": "Ticket_Add",
            "eventTime": "2026-10-05T17:28:58.000Z",
            "orgId": ORG_ID,
        },
        {
            "payload": {"id": "c9", "ticketId": "2", "commenterId": "77"},
            "eventType": "Ticket_Comment_Add",
            "eventTime": "1618493667780",
            "orgId": ORG_ID,
        },
        {
            "payload": {"id": "c10"},  # no ticketId: a comment's own id is no ticket id
            "eventType": "Ticket_Comment_Add",
            "eventTime": "1618493667780",
            "orgId": ORG_ID,
        },
        {
            "payload": {"id": "5"},
            "eventType": "Contact_Update",
            "eventTime": "1618493667780",
            "orgId": ORG_ID,
        },
    ]
    events = connector.parse_webhook({}, json.dumps(batch).encode())
    assert [(e.ticket_id, e.kind, e.actor) for e in events] == [
        ("1", "ticket.created", AGENT_ID),
        ("2", "comment.added", "77"),
    ]
    assert events[0].occurred_at == datetime(2026, 10, 5, 17, 28, 58, tzinfo=UTC)
    single = connector.parse_webhook({}, json.dumps(batch[0]).encode())
    assert [e.ticket_id for e in single] == ["1"]


def test_the_dedupe_key_is_the_same_for_a_redelivery_and_differs_between_events(connector):
    first = connector.parse_webhook({}, body())[0].dedupe_key
    assert connector.parse_webhook({}, body())[0].dedupe_key == first
    assert connector.parse_webhook({}, body(eventTime="1618493667999"))[0].dedupe_key != first


@pytest.mark.parametrize(
    "raw", [b"{not json", b'"text"', b"[1, 2]", b'[{"eventType":"Ticket_Update","payload":{}}]']
)
def test_unreadable_bodies_are_payload_errors(connector, raw):
    with pytest.raises(WebhookPayloadError):
        connector.parse_webhook({}, raw)


def test_own_changes_are_recognised_by_modified_by(connector, clock):
    ours = TicketEvent(instance="support-eu", ticket_id="1", dedupe_key="k", actor=AGENT_ID)
    theirs = TicketEvent(instance="support-eu", ticket_id="1", dedupe_key="k", actor="123")
    assert connector.is_own_change(ours) and not connector.is_own_change(theirs)
    unknown = make_connector(clock, agent_id=None)
    assert not unknown.is_own_change(ours)
