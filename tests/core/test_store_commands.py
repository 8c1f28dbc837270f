"""`escbridge db`, `escbridge jobs` and `escbridge worker`, as an operator runs them."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from processing_harness import MATRIX

from escbridge.cli.store import (
    configure_db_parser,
    configure_due_parser,
    configure_jobs_parser,
    run_db,
    run_due,
    run_jobs,
)
from escbridge.cli.worker import configure_worker_parser, run_worker
from escbridge.model import TicketEvent
from escbridge.processing import ProcessingConfig
from escbridge.store import Store, head_revision, upgrade

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def command(
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> Callable[..., tuple[int, str]]:
    def invoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="escbridge")
        configure(parser)
        code = run(parser.parse_args(list(argv)))
        seen = capsys.readouterr()  # what the operator sees: errors are on stderr
        return code, seen.out + seen.err

    return invoke


db = command(configure_db_parser, run_db)
jobs = command(configure_jobs_parser, run_jobs)
worker = command(configure_worker_parser, run_worker)
due = command(configure_due_parser, run_due)


def write_config(directory: Path, url: str, processing: str = "") -> Path:
    (directory / "matrix.yaml").write_text(MATRIX)
    config = directory / "escbridge.yaml"
    config.write_text(f"store: {url}\nmatrix: matrix.yaml\ninstances: {{}}\n{processing}")
    return config


def test_db_upgrade_creates_the_store_named_in_the_config_and_can_be_repeated(
    empty_database_url, tmp_path, capsys
):
    config = write_config(tmp_path, empty_database_url)

    code, out = db(capsys, "upgrade", "--config", str(config))
    assert code == 0 and f"upgraded empty → {head_revision()}" in out

    code, out = db(capsys, "upgrade", "--config", str(config))
    assert code == 0 and f"already at {head_revision()}" in out

    code, out = db(capsys, "status", "--config", str(config))
    assert code == 0 and "(current)" in out


def test_db_status_of_an_old_store_says_to_upgrade(empty_database_url, capsys):
    upgrade(empty_database_url, "0001")

    code, out = db(capsys, "status", "--store", empty_database_url)

    assert code == 1
    assert "revision 0001" in out and "run `escbridge db upgrade`" in out


def test_a_relative_sqlite_store_is_next_to_the_config_file(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path, "sqlite:///state/escbridge.db")
    (tmp_path / "state").mkdir()
    monkeypatch.chdir("/")

    code, _ = db(capsys, "upgrade", "--config", str(config))

    assert code == 0 and (tmp_path / "state" / "escbridge.db").exists()


def test_a_missing_config_is_invalid_input(tmp_path, capsys):
    code, out = jobs(capsys, "--config", str(tmp_path / "nope.yaml"))

    assert code == 2 and "nope.yaml" in out


@pytest.fixture
def failed_job(store: Store) -> int:
    store.enqueue(TicketEvent(instance="zd", ticket_id="42", dedupe_key="a"), NOW)
    store.enqueue(TicketEvent(instance="zd", ticket_id="43", dedupe_key="b"), NOW)
    failed, _pending = store.claim("host:1", NOW, limit=2)
    store.dead_letter(failed, NOW, "AuthError: HTTP 401: Couldn't authenticate you")
    store.retry_later(_pending, NOW, "TransientError: HTTP 503")
    return failed.id


def test_jobs_lists_what_is_waiting_and_what_failed_with_its_reason(store_url, failed_job, capsys):
    code, out = jobs(capsys, "--store", store_url)

    assert code == 0
    assert "jobs: 1 pending, 0 processing, 1 failed, 0 done" in out
    assert "zd/42" in out and "AuthError: HTTP 401" in out
    assert "zd/43" in out and "TransientError: HTTP 503" in out
    assert "escbridge jobs retry" in out

    code, out = jobs(capsys, "--store", store_url, "--failed")
    assert "zd/42" in out and "zd/43" not in out


def test_jobs_as_json(store_url, failed_job, capsys):
    code, out = jobs(capsys, "--store", store_url, "--failed", "--format", "json")

    listing = json.loads(out)
    assert code == 0
    assert listing["counts"]["failed"] == 1
    [job] = listing["jobs"]
    assert (job["id"], job["status"], job["ticket_id"]) == (failed_job, "failed", "42")


def test_jobs_retry_replays_a_failed_job(store, store_url, failed_job, capsys):
    code, out = jobs(capsys, "--store", store_url, "retry", str(failed_job))

    assert code == 0 and f"requeued job {failed_job}" in out
    assert store.job_counts()["failed"] == 0


def test_jobs_retry_all_failed(store, store_url, failed_job, capsys):
    code, out = jobs(capsys, "retry", "--all-failed", "--store", store_url)

    assert code == 0 and "requeued 1 failed job" in out


def test_jobs_retry_says_why_a_job_was_not_requeued(store_url, failed_job, capsys):
    code, out = jobs(capsys, "--store", store_url, "retry", "999")

    assert code == 1 and "job 999 not requeued: no such job" in out


def test_the_worker_processes_the_inbox_until_it_is_drained(store, store_url, tmp_path, capsys):
    config = write_config(tmp_path, store_url, "processing:\n  poll_seconds: 0.01\n")
    store.enqueue(TicketEvent(instance="unconfigured", ticket_id="1", dedupe_key="x"), NOW)

    code, out = worker(capsys, "--config", str(config), "--drain", "--concurrency", "2")

    assert code == 0 and "1 dead-lettered" in out
    [job] = store.jobs(["failed"])
    assert "no connector for instance 'unconfigured'" in (job.last_error or "")


def test_the_worker_refuses_a_store_that_needs_an_upgrade(empty_database_url, tmp_path, capsys):
    config = write_config(tmp_path, empty_database_url)

    code, out = worker(capsys, "--config", str(config), "--drain")

    assert code == 1 and "escbridge db upgrade" in out


def test_the_processing_section_is_validated_with_its_location(tmp_path, capsys):
    config = write_config(tmp_path, "sqlite:///x.db", "processing:\n  max_attempts: 0\n")

    code, out = worker(capsys, "--config", str(config))

    assert code == 2
    assert "escbridge.yaml:5" in out and "max_attempts" in out


def test_processing_settings_have_safe_defaults():
    settings = ProcessingConfig()
    assert (settings.max_attempts, settings.lease_seconds, settings.concurrency) == (8, 300.0, 1)


def test_db_upgrade_from_0002_keeps_the_rows_and_adds_the_report_facts(
    empty_database_url, tmp_path, capsys
):
    import sqlalchemy as sa

    from escbridge.errors import StoreSchemaError
    from escbridge.store import Store

    upgrade(empty_database_url, "0002")
    engine = sa.create_engine(empty_database_url)
    at = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO escalations (instance, ticket_id, from_level, to_level, "
                "destination_kind, actions, reasons, summary, decided_at, recorded_at, outcome) "
                "VALUES ('eu', '7', 'l1', 'l2', 'level', '{}', '[]', 'l1 -> l2', :at, :at, "
                "'applied')"
            ),
            {"at": at},
        )
        connection.execute(
            sa.text(
                "INSERT INTO ticket_state (instance, ticket_id, level, day_count, "
                "escalation_count, updated_at) VALUES ('eu', '7', 'l2', 1, 1, :at)"
            ),
            {"at": at},
        )
    engine.dispose()
    with Store(empty_database_url) as store, pytest.raises(StoreSchemaError):
        store.check_schema()  # the head revision is needed

    config = write_config(tmp_path, empty_database_url)
    code, out = db(capsys, "upgrade", "--config", str(config))
    assert code == 0 and f"0002 → {head_revision()}" in out

    with Store(empty_database_url) as store:
        store.check_schema()
        [kept] = store.escalations()
        assert (kept.ticket_id, kept.to_level, kept.channel, kept.from_group) == (
            "7",
            "l2",
            None,
            None,
        )
        state = store.ticket_state("eu", "7")
        assert state is not None and state.level == "l2" and state.resolved_at is None


def test_due_refuses_an_instance_it_does_not_know(store_url, tmp_path, capsys, monkeypatch):
    """A typo in --instance is not "no open tickets yet" (a silent no-op): it is refused."""
    monkeypatch.chdir(tmp_path)  # no escbridge.yaml here: the store's instances are the known ones
    code, out = due(capsys, "--store", store_url, "--instance", "zendsk")
    assert code == 2
    assert "--instance: unknown instance 'zendsk' (known: none yet)" in out
