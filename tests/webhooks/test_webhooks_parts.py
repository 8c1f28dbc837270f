"""The receiver's smaller parts: settings, the serve command's refusals, the log formatter,
the API-error counter around an embedded worker's connectors."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from escbridge_webhooks.app import ReceiverSettings
from escbridge_webhooks.instrument import CountingConnector
from escbridge_webhooks.logs import JsonFormatter, new_request_id, request_context
from escbridge_webhooks.metrics import WebhookMetrics
from webhook_support import API_TOKEN, write_config

from escbridge.cli.serve import configure_serve_parser, run_serve
from escbridge.connector import ApplyResult
from escbridge.errors import RateLimited, TransientError
from escbridge.model import Actions


def test_settings_from_the_environment() -> None:
    settings = ReceiverSettings.from_env(
        {
            "ESCBRIDGE_WEBHOOK_MAX_BODY_BYTES": "65536",
            "ESCBRIDGE_WEBHOOK_METRICS_CACHE_SECONDS": "0",
        }
    )
    assert settings == ReceiverSettings(max_body_bytes=65536, metrics_cache_seconds=0)
    assert ReceiverSettings.from_env({}) == ReceiverSettings()
    with pytest.raises(ValueError, match="ESCBRIDGE_WEBHOOK_RETRY_AFTER='soon' is not a number"):
        ReceiverSettings.from_env({"ESCBRIDGE_WEBHOOK_RETRY_AFTER": "soon"})
    with pytest.raises(ValueError, match="must be positive"):
        ReceiverSettings.from_env({"ESCBRIDGE_WEBHOOK_MAX_BODY_BYTES": "0"})


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_serve_parser(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def keep_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_serve_refuses_bad_options_and_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_logging: Any
) -> None:
    assert run_serve(_serve_args("--workers", "-1")) == 2
    assert "--workers must be at least 0" in capsys.readouterr().err
    assert run_serve(_serve_args("--config", str(tmp_path / "missing.yaml"))) == 2
    assert "cannot read" in capsys.readouterr().err


def test_serve_refuses_a_store_that_is_not_upgraded(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    keep_logging: Any,
) -> None:
    monkeypatch.setenv("ZENDESK_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("ZENDESK_WEBHOOK_SECRET", "s3cret-value")
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'new.db'}")
    assert run_serve(_serve_args("--config", str(config))) == 1
    out, err = capsys.readouterr()
    assert "escbridge db upgrade" in err and API_TOKEN not in out + err


def test_json_lines_carry_the_request_id_extras_and_mask_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(["tok-123456"]))
    logger = logging.getLogger("test.webhooks.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        with request_context("req-1"):
            logger.warning("calling with tok-123456", extra={"instance": "eu"})
            try:
                raise ValueError("tok-123456 in a traceback")
            except ValueError:
                logger.exception("failed")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "calling with [redacted]" and first["instance"] == "eu"
    assert first["request_id"] == second["request_id"] == "req-1"
    assert "ValueError: [redacted] in a traceback" in second["exc"]
    assert third["request_id"] is None and third["level"] == "info"
    assert "tok-123456" not in stream.getvalue()


def test_request_ids_offered_by_the_caller_are_kept_only_when_sane() -> None:
    assert new_request_id("abc-123.x:y_z") == "abc-123.x:y_z"
    for odd in ("", "a b", "x" * 101, "é", "line\nbreak"):
        assert new_request_id(odd) != odd


class _Flaky:
    """A connector whose API fails the way the typed errors say."""

    instance = "eu"

    def fetch_ticket(self, ticket_id: str) -> Any:
        raise RateLimited("slow down", retry_after=3)

    def apply(self, ticket: Any, actions: Actions, *, on_conflict: Any = None) -> ApplyResult:
        return ApplyResult(ticket_id="1", ok=False, error="422")

    def iter_tickets(self, since: Any, cursor: Any) -> Any:
        yield "page"
        raise TransientError("boom")

    def is_own_change(self, event: Any) -> bool:
        return False


def test_api_errors_of_an_embedded_worker_are_counted_by_helpdesk() -> None:
    metrics = WebhookMetrics()
    connector = CountingConnector(_Flaky(), metrics.api_errors, "zendesk")  # type: ignore[arg-type]
    with pytest.raises(RateLimited):
        connector.fetch_ticket("1")
    assert not connector.apply(None, Actions()).ok  # type: ignore[arg-type]
    pages = connector.iter_tickets(None, None)
    assert next(pages) == "page"
    with pytest.raises(TransientError):
        next(pages)
    assert connector.is_own_change(None) is False  # everything else is passed through

    def value(error: str) -> float | None:
        return metrics.registry.get_sample_value(
            "escbridge_helpdesk_api_errors_total",
            {"helpdesk": "zendesk", "instance": "eu", "error": error},
        )

    assert (value("RateLimited"), value("ApplyFailed"), value("TransientError")) == (1, 1, 1)
