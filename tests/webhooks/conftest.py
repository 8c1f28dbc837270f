"""Fixtures for the receiver: an app on a real store, and its structured log lines."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from escbridge_webhooks import ReceiverSettings, create_app
from escbridge_webhooks.logs import JsonFormatter
from webhook_support import METRICS_TOKEN, LogLines, MakeRig, Rig, load, write_config

from escbridge.processing import build_processor


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh SQLite store at the schema head (for tests about the chain, not the database)."""
    path = tmp_path / "escbridge.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


def _rig(directory: Path, store_url: str, **settings: Any) -> Rig:
    config = load(write_config(directory, store_url))
    processor = build_processor(config)
    settings.setdefault("metrics_token", METRICS_TOKEN)  # scrapes send webhook_support.SCRAPE
    app = create_app(config, processor=processor, settings=ReceiverSettings(**settings))
    return Rig(app, app.test_client(), processor)


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[MakeRig]:
    made: list[Rig] = []

    def make(store_url: str, **settings: Any) -> Rig:
        rig = _rig(tmp_path, store_url, **settings)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.store.close()


@pytest.fixture
def rig(make_rig: MakeRig, sqlite_url: str) -> Rig:
    return make_rig(sqlite_url, max_body_bytes=4096, metrics_cache_seconds=0)


@pytest.fixture
def db_rig(make_rig: MakeRig, store_url: str) -> Rig:
    """The same receiver on each store backend (SQLite and PostgreSQL)."""
    return make_rig(store_url, metrics_cache_seconds=0)


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    from webhook_support import API_TOKEN, SECRET

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter([API_TOKEN, SECRET]))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield LogLines(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
