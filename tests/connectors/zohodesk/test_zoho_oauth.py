"""OAuth: one cached token for all threads, refreshed on expiry and on 401, within Zoho's limits."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import parse_qs

import pytest
import requests
import responses
from zohodesk_support import (
    CLIENT_SECRET,
    DESK,
    ORG_ID,
    REFRESH_TOKEN,
    SECRETS,
    TICKET_ID,
    TOKEN_URL,
    make_connector,
    ticket_json,
    token_reply,
)

from escbridge.errors import AuthError, RateLimited

INVALID_OAUTH = {
    "errorCode": "INVALID_OAUTH",
    "message": "The OauthToken is invalid or has expired.",
}


def test_the_refresh_grant_is_a_form_body_to_the_data_centres_accounts_server(rsps, clock):
    token_reply(rsps, "1000.tok.one")
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    make_connector(clock).fetch_ticket(TICKET_ID)

    grant = rsps.calls[0].request
    assert grant.url == TOKEN_URL  # nothing secret in the URL (access logs, proxies)
    form = parse_qs(grant.body)
    assert form == {
        "grant_type": ["refresh_token"],
        "client_id": ["1000.ESCBRIDGECLIENT"],
        "client_secret": [CLIENT_SECRET],
        "refresh_token": [REFRESH_TOKEN],
    }
    desk = rsps.calls[1].request
    assert desk.headers["Authorization"] == "Zoho-oauthtoken 1000.tok.one"
    assert desk.headers["orgId"] == ORG_ID


def test_the_org_list_is_asked_without_the_orgid_header(rsps, clock):
    token_reply(rsps)
    rsps.get(f"{DESK}/organizations", json={"data": [{"id": ORG_ID, "companyName": "Zylker"}]})
    make_connector(clock).client.organizations()
    assert "orgId" not in rsps.calls[1].request.headers


def test_the_token_is_reused_until_shortly_before_it_expires(rsps, clock):
    grants = token_reply(rsps, "1000.tok.one")
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    connector = make_connector(clock)
    for _ in range(5):
        connector.fetch_ticket(TICKET_ID)
    assert grants.call_count == 1

    clock.advance(seconds=3600 - 100)  # inside the refresh margin: the next call gets a new token
    rsps.replace(
        responses.POST, TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600}
    )
    connector.fetch_ticket(TICKET_ID)
    assert rsps.calls[-1].request.headers["Authorization"] == "Zoho-oauthtoken 1000.tok.two"


def test_a_token_that_expires_mid_run_is_refreshed_once_and_the_call_repeated(rsps, clock):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600})
    connector = make_connector(clock)
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    connector.fetch_ticket(TICKET_ID)
    clock.advance(
        seconds=600
    )  # Desk revokes the token early (e.g. an 11th token for the same client)

    rsps.replace(responses.GET, f"{DESK}/tickets/{TICKET_ID}", json=INVALID_OAUTH, status=401)
    rsps.add(responses.GET, f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    ticket = connector.fetch_ticket(TICKET_ID)

    assert ticket.id == TICKET_ID
    auths = [
        c.request.headers.get("Authorization") for c in rsps.calls if "/api/v1/" in c.request.url
    ]
    assert auths[-2:] == ["Zoho-oauthtoken 1000.tok.one", "Zoho-oauthtoken 1000.tok.two"]
    assert connector.tokens.refreshes == 2


def test_a_new_token_that_is_refused_too_stops_the_refreshing(rsps, clock):
    grants = token_reply(rsps)
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=INVALID_OAUTH, status=401)
    connector = make_connector(clock)
    for _ in range(4):
        with pytest.raises(AuthError, match="a new access token was refused too: check org_id"):
            connector.fetch_ticket(TICKET_ID)
    assert grants.call_count == 2  # the first token and one replacement, not one per call
    clock.advance(seconds=31)
    with pytest.raises(AuthError):
        connector.fetch_ticket(TICKET_ID)
    assert grants.call_count == 3  # tried again after a pause


def test_a_young_token_revoked_by_desk_is_replaced(rsps, clock):
    # Desk keeps 10 live tokens per refresh token: another process's refresh can revoke ours.
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600})
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=INVALID_OAUTH, status=401)
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    assert make_connector(clock).fetch_ticket(TICKET_ID).id == TICKET_ID


def test_scope_and_org_mismatches_do_not_refresh(rsps, clock):
    grants = token_reply(rsps)
    rsps.get(
        f"{DESK}/tickets/{TICKET_ID}",
        json={"errorCode": "OAUTH_ORG_MISMATCH", "message": "orgId mismatch"},
        status=401,
    )
    with pytest.raises(AuthError, match="org_id is not an organisation of the user") as err:
        make_connector(clock).fetch_ticket(TICKET_ID)
    assert err.value.code == "OAUTH_ORG_MISMATCH"
    assert grants.call_count == 1


def _slow_grant(values: list[str]):
    lock = threading.Lock()

    def callback(request):
        time.sleep(0.05)  # long enough for every thread to pile up behind the first refresh
        with lock:
            value = values.pop(0)
        return 200, {}, f'{{"access_token":"{value}","expires_in":3600}}'

    return callback


def test_threads_share_one_refresh(rsps, clock):
    rsps.add_callback(responses.POST, TOKEN_URL, callback=_slow_grant(["1000.tok.one", "x", "y"]))
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    connector = make_connector(clock)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            connector.fetch_ticket(TICKET_ID)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(1 for c in rsps.calls if c.request.url == TOKEN_URL) == 1
    assert {
        c.request.headers["Authorization"] for c in rsps.calls if "/api/v1/" in c.request.url
    } == {"Zoho-oauthtoken 1000.tok.one"}


def test_threads_hit_by_the_same_401_share_one_refresh(rsps, clock):
    rsps.add_callback(
        responses.POST, TOKEN_URL, callback=_slow_grant(["1000.tok.one", "1000.tok.two", "z"])
    )
    connector = make_connector(clock)
    connector.tokens.token()
    clock.advance(seconds=300)

    def desk(request):
        if request.headers["Authorization"].endswith("tok.one"):
            return 401, {}, '{"errorCode":"INVALID_OAUTH","message":"expired"}'
        return 200, {}, __import__("json").dumps(ticket_json())

    rsps.add_callback(responses.GET, f"{DESK}/tickets/{TICKET_ID}", callback=desk)
    threads = [threading.Thread(target=connector.fetch_ticket, args=(TICKET_ID,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for c in rsps.calls if c.request.url == TOKEN_URL) == 2  # the first, one refresh
    assert connector.tokens.current is not None and connector.tokens.current.value == "1000.tok.two"


def test_a_token_from_another_data_centre_is_refused_with_the_fix(rsps, clock):
    token_reply(rsps, api_domain="https://www.zohoapis.com")
    with pytest.raises(AuthError, match=r"US data centre .* set data_centre: 'com'"):
        make_connector(clock).tokens.token()


def test_a_client_unknown_to_this_data_centre_names_data_centre(rsps, clock):
    rsps.post(TOKEN_URL, json={"error": "invalid_client"})  # Zoho answers 200 with an error body
    with pytest.raises(AuthError, match=r"client id/secret.*check data_centre \('eu'\)"):
        make_connector(clock).tokens.token()


def test_a_revoked_refresh_token_is_named_and_not_asked_again_by_every_caller(rsps, clock):
    grants = rsps.post(TOKEN_URL, json={"error": "invalid_code"}, status=400)
    connector = make_connector(clock)
    for _ in range(3):
        with pytest.raises(AuthError, match="did not accept the refresh token"):
            connector.fetch_ticket(TICKET_ID)
    assert grants.call_count == 1
    clock.advance(seconds=31)
    with pytest.raises(AuthError):
        connector.fetch_ticket(TICKET_ID)
    assert grants.call_count == 2


def test_escbridge_stops_at_ten_token_requests_in_ten_minutes(rsps, clock):
    # Tokens that (wrongly) live only 60 s force a refresh on every call.
    grants = rsps.post(TOKEN_URL, json={"access_token": "1000.short", "expires_in": 60})
    connector = make_connector(clock)
    for _ in range(10):
        connector.tokens.token()
        clock.advance(seconds=5)
    with pytest.raises(RateLimited) as err:
        connector.tokens.token()
    assert grants.call_count == 10
    assert 540 < (err.value.retry_after or 0) <= 600
    clock.advance(seconds=err.value.retry_after or 0)
    connector.tokens.token()
    assert grants.call_count == 11


def test_zohos_token_block_is_respected_for_the_rest_of_the_window(rsps, clock):
    grants = rsps.post(
        TOKEN_URL,
        json={
            "error_description": "You have made too many requests continuously. "
            "Please try again after some time.",
            "error": "Access Denied",
            "status": "failure",
        },
        status=400,
    )
    connector = make_connector(clock)
    with pytest.raises(RateLimited) as err:
        connector.tokens.token()
    assert err.value.retry_after == 600
    clock.advance(seconds=120)
    with pytest.raises(RateLimited):
        connector.tokens.token()
    assert grants.call_count == 1


def test_a_server_that_wants_query_parameters_gets_them(rsps, clock):
    def accounts(request):
        if request.body:  # this server reads only the query string
            return 400, {}, '{"error":"invalid_request"}'
        return 200, {}, '{"access_token":"1000.q","expires_in":3600}'

    rsps.add_callback(responses.POST, TOKEN_URL, callback=accounts)
    assert make_connector(clock).tokens.token() == "1000.q"
    second = rsps.calls[1].request
    assert parse_qs(second.url.split("?", 1)[1])["grant_type"] == ["refresh_token"]


def test_canada_falls_back_to_the_second_host_pair_and_keeps_desk_in_step(rsps, clock):
    rsps.post(
        "https://accounts.zohocloud.ca/oauth/v2/token",
        body=requests.ConnectionError("no such host"),
    )
    rsps.post(
        "https://accounts.zoho.ca/oauth/v2/token",
        json={
            "access_token": "1000.ca",
            "expires_in": 3600,
            "api_domain": "https://www.zohoapis.ca",
        },
    )
    rsps.get(f"https://desk.zoho.ca/api/v1/tickets/{TICKET_ID}", json=ticket_json())
    connector = make_connector(clock, data_centre="ca")
    assert connector.fetch_ticket(TICKET_ID).id == TICKET_ID
    assert connector.tokens.pair.desk == "https://desk.zoho.ca"


def test_secrets_never_reach_errors_or_logs(rsps, clock, caplog):
    caplog.set_level(logging.DEBUG)
    echo = f"client_secret={CLIENT_SECRET} refresh_token={REFRESH_TOKEN} is wrong"
    rsps.post(TOKEN_URL, json={"error": "something_else", "error_description": echo}, status=400)
    connector = make_connector(clock)
    with pytest.raises(AuthError) as err:
        connector.tokens.token()
    text = str(err.value) + err.value.body_excerpt + caplog.text + repr(connector)
    for secret in SECRETS:
        assert secret not in text

    caplog.clear()
    rsps.replace(
        responses.POST, TOKEN_URL, json={"access_token": "1000.live.token", "expires_in": 3600}
    )
    clock.advance(seconds=60)
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=INVALID_OAUTH, status=401)
    with pytest.raises(AuthError) as err2:
        connector.fetch_ticket(TICKET_ID)
    text = str(err2.value) + caplog.text + repr(connector.tokens.current)
    for secret in (*SECRETS, "1000.live.token"):
        assert secret not in text
