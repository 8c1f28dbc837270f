"""`escbridge sandbox --write-config FILE` (without --serve) starts its default store empty.

The emulators' tickets are new on every run and reuse the same ids, so a store kept from the
previous run would apply that run's escalations (level, cooldown) to the new tickets. A store
the user named (--store) is theirs and kept; with --webhook-url a receiver is already running,
perhaps on that very store, so it is kept too and the command says what that means.
"""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path
from typing import Any

import pytest

from escbridge.cli.sandbox import configure_sandbox_parser, run_sandbox

PREVIOUS = b"the previous run's store"


def sandbox(*argv: str) -> str:
    """Run `escbridge sandbox ARGV` (the Zendesk emulator only) until it is up; its output."""
    parser = argparse.ArgumentParser()
    configure_sandbox_parser(parser)
    args = parser.parse_args(["--only", "zendesk", "--tickets", "2", *argv])
    stop = threading.Event()

    def ready(_sandboxes: Any) -> None:
        stop.set()

    out = io.StringIO()
    assert run_sandbox(args, out=out, stop=stop, ready=ready) == 0
    return out.getvalue()


@pytest.fixture
def previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "escbridge-sandbox.db"
    store.write_bytes(PREVIOUS)
    return store


def test_the_default_store_of_a_written_config_starts_empty(previous: Path) -> None:
    out = sandbox("--write-config", "sb.yaml")
    assert not previous.exists()
    assert "escbridge db upgrade --config sb.yaml" in out  # what to run next creates it anew


def test_a_store_the_user_named_is_kept(previous: Path, tmp_path: Path) -> None:
    sandbox("--write-config", "sb.yaml", "--store", "sqlite:///escbridge-sandbox.db")
    assert previous.read_bytes() == PREVIOUS


def test_with_a_running_receiver_the_store_is_kept_and_the_command_says_so(
    previous: Path,
) -> None:
    out = sandbox("--write-config", "sb.yaml", "--webhook-url", "http://127.0.0.1:9")
    assert previous.read_bytes() == PREVIOUS
    assert f"Kept the store {previous} (the receiver at http://127.0.0.1:9 may be" in out
    assert "to start afresh, stop the receiver, delete the file and start it again" in out
