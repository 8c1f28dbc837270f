"""A 202 from a real gunicorn receiver is in the database for every other process, at once.

The receiver's SQLite connections must keep their locks on the database file: a process that
opens and closes the file by other means (not through SQLite) silently drops them, after which
any other process closing its last connection (a worker, `escbridge jobs`, a metrics scrape)
deletes the WAL under the receiver. Its later commits then go to a deleted file: answered 202,
invisible to the workers, and lost when the receiver is killed.
"""

from __future__ import annotations

import argparse
import http.client
from pathlib import Path

import pytest
from webhook_support import ENV, event_body, signed, webhook_bench, write_config

from escbridge.store import Store, upgrade

GUARD = 30.0  # seconds: a failure guard only


def _deliver(port: int, ticket: int) -> int:
    body = event_body(ticket)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    try:
        connection.request("POST", "/webhooks/eu", body=body, headers=signed(body))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _stored(url: str) -> int:
    """What another process sees: a Store opened and closed again (its last connection)."""
    with Store(url) as reader:
        return sum(reader.job_counts().values())


@pytest.mark.slow
def test_every_202_is_visible_to_other_processes_while_the_receiver_runs(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    config = write_config(tmp_path, url)
    args = argparse.Namespace(workers=1, threads=4, log_level="info")
    env = {**ENV, "ESCBRIDGE_CONFIG": str(config)}
    with webhook_bench().gunicorn(
        "escbridge_webhooks.wsgi:app", tmp_path, args, env, "receiver"
    ) as (
        port,
        _process,
    ):
        # The receiver's connection is open (gunicorn() waited for /readyz); this process
        # closes its last one, as a worker or `escbridge jobs` does between runs.
        assert _stored(url) == 0
        for n in range(1, 4):
            assert _deliver(port, 100 + n) == 202
            assert _stored(url) == n  # seen at once, not when the receiver exits
