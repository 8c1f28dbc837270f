"""One log format for every long-running command, readable banners, and bad input said plainly.

`--log-format text|json` (default text, or $ESCBRIDGE_LOG_FORMAT) and `--log-level` come from
one place (``escbridge.cli._common``); both formats mask every configured secret; the database
migration tool's INFO chatter is hidden unless the level is debug. The worker's banner names the
store by its URL (password masked), not by a Python repr, and counts say "1 thread". A store URL
escbridge cannot use is one line with the fix, whether it is a path, another database or a
broken port.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from escbridge.cli import main
from escbridge.cli._common import (
    REQUEST_ID,
    add_log_options,
    configure_logging,
    install_secrets,
    setup_logging,
)
from escbridge.errors import StoreUrlError
from escbridge.store import upgrade
from escbridge.store.database import parse_url, url_problem
from escbridge.wording import plural

TOKEN = "tok-9f8e7d6c5b4a"


@contextlib.contextmanager
def fresh_process() -> Iterator[None]:
    """The root logger as a fresh `escbridge` process has it (no handlers), restored after.

    Entered inside the test: pytest puts its capturing handlers on the root logger for each
    test phase, after fixtures ran.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic = logging.getLogger("alembic").level
    for handler in handlers:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("alembic").setLevel(alembic)


def parse(*argv: str, level: str = "INFO") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="escbridge worker")
    add_log_options(parser, level=level)
    return parser.parse_args(argv)


def test_text_is_the_default_and_json_is_one_object_per_line() -> None:
    stream = io.StringIO()
    with fresh_process():
        configure_logging(parse(), stream=stream)
        logging.getLogger("escbridge.test").info("claimed %d events", 3, extra={"instance": "eu"})
    [text] = stream.getvalue().splitlines()
    assert text.endswith("INFO escbridge.test: claimed 3 events instance=eu")

    stream = io.StringIO()
    token = REQUEST_ID.set("req-7")
    with fresh_process():
        configure_logging(parse("--log-format", "json"), stream=stream)
        logging.getLogger("escbridge.test").warning("slow", extra={"instance": "eu"})
    REQUEST_ID.reset(token)
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["msg"]) == ("warning", "escbridge.test", "slow")
    assert (entry["instance"], entry["request_id"]) == ("eu", "req-7")


def test_the_environment_chooses_the_default_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESCBRIDGE_LOG_FORMAT", "JSON")
    assert parse().log_format == "json"
    assert parse("--log-format", "text").log_format == "text"
    assert parse("--log-level", "debug").log_level == "DEBUG"
    assert parse("--log-level", "Warning").log_level == "WARNING"  # any case, as before


def test_a_wrong_format_or_level_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["worker", "--log-format", "xml"], ["sync", "--log-level", "loud"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(f"escbridge {argv[0]}: argument {argv[1]}: ")
    monkeypatch.setenv("ESCBRIDGE_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit):
        main(["serve"])
    [line] = capsys.readouterr().err.splitlines()
    assert '"yaml" is not a log format' in line and "ESCBRIDGE_LOG_FORMAT" in line


@pytest.mark.parametrize("form", ["text", "json"])
def test_both_formats_mask_secrets_in_messages_extras_and_tracebacks(form: str) -> None:
    stream = io.StringIO()
    with fresh_process():
        setup_logging(form, "INFO", stream=stream)
        install_secrets([TOKEN])  # once the config is read, as serve, worker and sync do
        log = logging.getLogger("escbridge.test")
        log.warning("calling with %s", TOKEN, extra={"header": f"Bearer {TOKEN}"})
        try:
            raise RuntimeError(f"refused {TOKEN}")
        except RuntimeError:
            log.exception("failed")
    output = stream.getvalue()
    assert TOKEN not in output
    assert output.count("[redacted]") >= 3


def test_alembic_says_nothing_at_info_and_everything_at_debug(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    stream = io.StringIO()
    with fresh_process():
        configure_logging(parse(), stream=stream)
        upgrade(url)
        assert "alembic" not in stream.getvalue()
        configure_logging(parse("--log-level", "debug"), stream=stream)
        upgrade(url)
    assert "alembic.runtime.migration" in stream.getvalue()


def test_a_process_whose_logging_is_set_up_keeps_it() -> None:
    # pytest's own handlers are on the root logger here, as a host application's would be
    before = list(logging.getLogger().handlers)
    assert configure_logging(parse("--log-format", "json")) is None
    assert logging.getLogger().handlers == before


def test_the_worker_banner_names_the_store_and_counts_in_words(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(url)
    (tmp_path / "matrix.yaml").write_text(
        "version: 1\nname: m\nlevels:\n  - id: l1\n    name: One\n"
        "    groups: {zendesk: Support}\nrules: []\n",
        encoding="utf-8",
    )
    (tmp_path / "escbridge.yaml").write_text(
        f"store: {url}\nmatrix: matrix.yaml\ninstances: {{}}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    with fresh_process():
        assert main(["worker", "--drain", "--log-format", "json"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.err.splitlines()]
    [banner] = [e["msg"] for e in lines if e["msg"].startswith("worker ")]
    assert banner.endswith(f": 1 thread on store {url}")
    assert "Store(" not in captured.err
    assert captured.out == "processed 0 events: none; 0 retried, 0 dead-lettered\n"


def test_plural_says_one_and_many() -> None:
    assert [plural(n, "team") for n in (0, 1, 2)] == ["0 teams", "1 team", "2 teams"]
    assert plural(2, "entry", "entries") == "2 entries"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("escbridge.db", '"escbridge.db" is not a URL: for a SQLite file write sqlite:///escbridge.db'),
        ("/var/lib/esc.db", "write sqlite:////var/lib/esc.db"),
        ("mysql://app:hunter2-pw@db/esc", 'mysql://app:[redacted]@db/esc (scheme "mysql")'),
        ("postgresql://app@db:99x/esc", 'port "99x" in postgresql://app@db:99x/esc is not a'),
        ("postgresql://app:p@ss@db:5x/esc", "postgresql://app:[redacted]@db:5x/esc"),
        ("postgresql+psycopg2://app@db/esc", 'driver "psycopg2"'),
        ("sqlite://db/esc.db", "names a host, but SQLite is a file"),
        ("app:hunter2-pw@db/esc", "is not a URL: write postgresql+psycopg://"),
    ],
)  # fmt: skip
def test_a_store_url_escbridge_cannot_use_is_said_with_the_fix(url: str, said: str) -> None:
    problem = url_problem(url)
    assert problem is not None and said in problem
    assert "hunter2" not in problem and "p@ss" not in problem
    with pytest.raises(StoreUrlError, match="store: "):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///escbridge.db",
        "sqlite:////abs/path/esc.db",
        "sqlite://",
        "postgresql:///esc",
        "postgresql+psycopg://app:p@ss/w:rd@db.internal:5432/esc?sslmode=require",
        "postgresql://app@[::1]:5432/esc",
    ],
)
def test_store_urls_escbridge_takes_pass(url: str) -> None:
    assert url_problem(url) is None
    parse_url(url)
