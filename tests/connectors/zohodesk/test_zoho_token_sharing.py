"""One Zoho access token per instance, shared by all its processes (issue 13, item 5).

Zoho Accounts allows 10 access-token requests per refresh token per 10 minutes. These tests
count the requests that restart storms and concurrent starts of real processes cost against
the Zoho emulator, and check the cache file itself (mode 0600, no client secret or refresh
token, atomic, a broken file ignored). Processes are synchronised by files (a barrier), never
by sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import responses
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_ORG_ID,
    SANDBOX_REFRESH_TOKEN,
    DeskEmulator,
    emulator,
)
from escbridge_zohodesk.token_cache import (
    CachedToken,
    TokenCache,
    cache_key,
    default_directory,
    token_cache_for,
)
from zohodesk_support import (
    CLIENT_SECRET,
    DESK,
    REFRESH_TOKEN,
    TICKET_ID,
    TOKEN_URL,
    Clock,
    settings,
    ticket_json,
)

from escbridge.connector import Runtime
from escbridge.sandbox.emulator import ServerThread, serve

INSTANCE = "support-eu"
INVALID_OAUTH = {"errorCode": "INVALID_OAUTH", "message": "The OauthToken is invalid."}


# --------------------------------------------------------------------------- in one process


def connector_with_cache(clock: Clock, directory: Path, **overrides: Any) -> ZohoDeskConnector:
    """A connector as a separate process would build it: same config, same cache directory."""
    config = ZohoDeskConfig.model_validate(settings(token_cache=str(directory), **overrides))
    runtime = Runtime.simulated(clock)
    return ZohoDeskConnector(config, instance=INSTANCE, runtime=runtime)


def grants(rsps: responses.RequestsMock) -> int:
    return sum(1 for c in rsps.calls if c.request.url == TOKEN_URL)


def test_a_second_process_uses_the_first_ones_token(rsps, clock, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    first = connector_with_cache(clock, tmp_path)
    first.fetch_ticket(TICKET_ID)
    clock.advance(minutes=20)

    second = connector_with_cache(clock, tmp_path)
    second.fetch_ticket(TICKET_ID)

    assert grants(rsps) == 1
    assert rsps.calls[-1].request.headers["Authorization"] == "Zoho-oauthtoken 1000.tok.one"
    assert (second.tokens.refreshes, second.tokens.adopted) == (0, 1)
    assert "1000.tok.one" not in caplog.text + repr(second.tokens.cache)


def test_the_cache_file_is_private_and_holds_no_client_secret(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    old = os.umask(0o000)  # a permissive umask must not make the file readable by others
    try:
        connector_with_cache(clock, tmp_path / "tokens").tokens.token()
    finally:
        os.umask(old)

    files = sorted(p.name for p in (tmp_path / "tokens").iterdir())
    key = cache_key(INSTANCE, "eu", "1000.ESCBRIDGECLIENT", REFRESH_TOKEN)
    assert files == [f"{key}.json", f"{key}.lock"]  # no temporary file left behind
    path = tmp_path / "tokens" / f"{key}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tokens").stat().st_mode) == 0o700
    text = path.read_text()
    assert "1000.tok.one" in text
    for secret in (CLIENT_SECRET, REFRESH_TOKEN):
        assert secret not in text
        assert secret not in str(path)


def test_a_loosened_cache_file_is_made_private_again(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    connector_with_cache(clock, tmp_path).tokens.token()
    (path,) = tmp_path.glob("*.json")
    path.chmod(0o644)

    assert connector_with_cache(clock, tmp_path).tokens.token() == "1000.tok.one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert grants(rsps) == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"format": 1, "access_token": 7}', b"\xff\xfe", b'["a list"]'],
)
def test_a_corrupt_cache_file_is_ignored_and_replaced(rsps, clock, tmp_path, content, caplog):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    key = cache_key(INSTANCE, "eu", "1000.ESCBRIDGECLIENT", REFRESH_TOKEN)
    (tmp_path / f"{key}.json").write_bytes(content)

    assert connector_with_cache(clock, tmp_path).tokens.token() == "1000.tok.one"
    assert json.loads((tmp_path / f"{key}.json").read_text())["access_token"] == "1000.tok.one"
    assert "1000.tok.one" not in caplog.text


def test_an_unusable_cache_location_costs_nothing_but_the_sharing(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.get(f"{DESK}/tickets/{TICKET_ID}", json=ticket_json())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    connector = connector_with_cache(clock, blocker / "tokens")
    assert connector.fetch_ticket(TICKET_ID).id == TICKET_ID
    assert connector.tokens.token() == "1000.tok.one"  # kept in memory, not asked again
    assert grants(rsps) == 1


def test_an_expired_shared_token_is_refreshed_once_for_every_process(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600})
    processes = [connector_with_cache(clock, tmp_path) for _ in range(3)]
    for p in processes:
        p.tokens.token()
    assert grants(rsps) == 1

    clock.advance(seconds=3600 - 60)  # inside the refresh margin for everyone
    assert {p.tokens.token() for p in processes} == {"1000.tok.two"}
    assert grants(rsps) == 2


def test_a_401_refreshes_once_and_the_others_reread_the_cache(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600})
    first, second = (connector_with_cache(clock, tmp_path) for _ in range(2))
    first.tokens.token()
    second.tokens.token()

    def desk(request: Any) -> tuple[int, dict[str, str], str]:
        if request.headers["Authorization"].endswith("tok.one"):  # Desk revoked it
            return 401, {}, json.dumps(INVALID_OAUTH)
        return 200, {}, json.dumps(ticket_json())

    rsps.add_callback(responses.GET, f"{DESK}/tickets/{TICKET_ID}", callback=desk)
    first.fetch_ticket(TICKET_ID)
    second.fetch_ticket(TICKET_ID)  # its 401 finds a newer token in the cache: no request

    assert grants(rsps) == 2
    assert (second.tokens.refreshes, second.tokens.adopted) == (0, 2)
    assert second.tokens.current is not None and second.tokens.current.value == "1000.tok.two"


def test_a_token_refused_again_is_not_taken_back_from_the_cache(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.two", "expires_in": 3600})
    connector = connector_with_cache(clock, tmp_path)
    assert connector.tokens.token() == "1000.tok.one"
    assert connector.tokens.refresh_after_rejection("1000.tok.one") == "1000.tok.two"
    assert grants(rsps) == 2


def test_a_process_waiting_for_the_refresh_lock_uses_the_token_it_brings(rsps, clock, tmp_path):
    grant = rsps.post(TOKEN_URL, json={"access_token": "1000.unwanted", "expires_in": 3600})
    connector = connector_with_cache(clock, tmp_path)
    cache = connector.tokens.cache
    assert cache is not None
    got: list[str] = []
    with cache.refreshing():  # "another process" is refreshing
        waiter = threading.Thread(target=lambda: got.append(connector.tokens.token()))
        waiter.start()
        now = cache.wallclock()
        cache.write(
            CachedToken(
                value="1000.from.the.other.process",
                expires_at=now + 3600,
                scopes=None,
                api_domain=None,
                accounts="https://accounts.zoho.eu",
                desk="https://desk.zoho.eu",
                obtained_at=now,
            )
        )
    waiter.join()
    assert got == ["1000.from.the.other.process"]
    assert grant.call_count == 0


def test_a_cached_token_for_other_hosts_is_not_used(rsps, clock, tmp_path):
    rsps.post(TOKEN_URL, json={"access_token": "1000.tok.one", "expires_in": 3600})
    connector = connector_with_cache(clock, tmp_path)
    cache = connector.tokens.cache
    assert cache is not None
    now = cache.wallclock()
    cache.write(
        CachedToken("1000.elsewhere", now + 3600, None, None, "https://x", "https://y", now)
    )
    assert connector.tokens.token() == "1000.tok.one"


def test_where_the_cache_lives(tmp_path):
    base = settings()
    real = ZohoDeskConfig.model_validate(base)
    cache = token_cache_for(real, INSTANCE)
    assert cache is not None
    assert cache.directory == default_directory()
    assert default_directory({"XDG_STATE_HOME": str(tmp_path)}) == (
        tmp_path / "escbridge" / "zohodesk-tokens"
    )
    configured = ZohoDeskConfig.model_validate({**base, "token_cache": str(tmp_path)})
    ours, other = (token_cache_for(configured, name) for name in (INSTANCE, "support-us"))
    assert ours is not None and other is not None
    assert ours.directory == tmp_path and other.path != ours.path  # one file per instance
    # per process only: asked for, simulated time (its clock is not the shared one), a sandbox
    assert token_cache_for(configured.model_copy(update={"token_cache": ""}), INSTANCE) is None
    assert token_cache_for(real, INSTANCE, Runtime.simulated(Clock())) is None
    sandbox = ZohoDeskConfig.model_validate(
        {**base, "sandbox": True, "desk_url": "http://127.0.0.1:9"}
    )
    assert token_cache_for(sandbox, INSTANCE) is None


def test_the_connector_builds_its_token_manager_with_the_shared_cache(tmp_path):
    config = ZohoDeskConfig.model_validate(settings(token_cache=str(tmp_path)))
    connector = ZohoDeskConnector(config, instance=INSTANCE)
    assert connector.tokens.cache is not None
    assert connector.tokens.cache.directory == tmp_path


# --------------------------------------------------------------------------- real processes

# One process start: build the connector from the config, wait at the barrier, make one call.
PROCESS = r"""
import json, os, sys, time
from pathlib import Path
from escbridge_zohodesk import ZohoDeskConfig, ZohoDeskConnector
from escbridge_zohodesk.token_cache import token_cache_for

config_file, barrier, name = sys.argv[1], sys.argv[2], sys.argv[3]
config = ZohoDeskConfig.model_validate(json.loads(Path(config_file).read_text()))
connector = ZohoDeskConnector(config, instance="support")
if barrier != "-":
    Path(barrier, "ready-" + name).touch()
    go = Path(barrier, "go")
    deadline = time.monotonic() + 120  # a safety net for a broken test, not a synchronisation
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit("the test never opened the barrier")
        time.sleep(0.01)
orgs = connector.client.organizations()
print(json.dumps({"orgs": len(orgs), "refreshes": connector.tokens.refreshes,
                  "adopted": connector.tokens.adopted}))
"""


@dataclass
class Instance:
    """The Zoho emulator and an escbridge config pointing at it, with a token cache."""

    desk: DeskEmulator
    config_file: Path
    cache_dir: Path
    root: Path

    def start(self, count: int) -> list[dict[str, Any]]:
        """``count`` processes released together by a barrier file; their reports."""
        barrier = Path(self._fresh_dir("barrier"))
        procs = [self._spawn(str(barrier), str(i)) for i in range(count)]
        try:
            for i, proc in enumerate(procs):  # all built and waiting: none has called Zoho
                while not (barrier / f"ready-{i}").exists() and proc.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.02)  # a poll interval while it starts up
            (barrier / "go").touch()
            return [self._report(p) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def restart(self) -> dict[str, Any]:
        """One process start, run to its end (as a restarted worker or a `check` run)."""
        return self._report(self._spawn("-", "solo"))

    def cache_file(self) -> Path:
        (path,) = self.cache_dir.glob("*.json")
        return path

    def _spawn(self, barrier: str, name: str) -> subprocess.Popen[str]:
        env = {**os.environ, "XDG_STATE_HOME": str(self.root / "state")}
        return subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(self.config_file), barrier, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _report(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert report["orgs"] == 1
        return report

    def _fresh_dir(self, name: str) -> Path:
        n = 0
        while (self.root / f"{name}-{n}").exists():
            n += 1
        path = self.root / f"{name}-{n}"
        path.mkdir()
        return path


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    app = ZohoDeskConnector.sandbox()
    server: ServerThread = serve(app)
    cache_dir = tmp_path / "tokens"
    config = {
        "data_centre": "com",
        "org_id": SANDBOX_ORG_ID,
        "client_id": SANDBOX_CLIENT_ID,
        "client_secret": SANDBOX_CLIENT_SECRET,
        "refresh_token": SANDBOX_REFRESH_TOKEN,
        "sandbox": True,
        "desk_url": server.url,
        "token_cache": str(cache_dir),
    }
    config_file = tmp_path / "zoho.json"
    config_file.write_text(json.dumps(config))
    try:
        yield Instance(emulator(app), config_file, cache_dir, tmp_path)
    finally:
        emulator(app).dispatcher.close()
        server.stop()


def test_twenty_process_starts_cost_one_token_request(instance):
    together = instance.start(8)  # eight workers started at once, released by a barrier
    assert instance.desk.token_requests == 1
    assert sorted(r["refreshes"] for r in together) == [0] * 7 + [1]

    restarts = [instance.restart() for _ in range(12)]  # restarts and `check` runs
    assert instance.desk.token_requests == 1
    assert all(r == {"orgs": 1, "refreshes": 0, "adopted": 1} for r in restarts)

    path = instance.cache_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in (SANDBOX_CLIENT_SECRET, SANDBOX_REFRESH_TOKEN):
        assert secret not in text and secret not in str(path)


def test_an_expired_token_is_refreshed_once_across_processes(instance):
    instance.restart()
    cache = TokenCache(instance.cache_dir, instance.cache_file().stem)
    stored = cache.read()
    assert stored is not None
    expired = CachedToken(
        stored.value,
        cache.wallclock() - 1,
        stored.scopes,
        stored.api_domain,
        stored.accounts,
        stored.desk,
        stored.obtained_at,
    )
    assert cache.write(expired)

    reports = instance.start(6)
    assert instance.desk.token_requests == 2
    assert sum(r["refreshes"] for r in reports) == 1


def test_a_revoked_token_costs_one_request_for_all_processes(instance):
    instance.restart()
    instance.desk.revoke_tokens()  # every live token now answers 401

    reports = instance.start(6)
    assert instance.desk.token_requests == 2
    assert sum(r["refreshes"] for r in reports) == 1
