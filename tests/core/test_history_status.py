"""`escbridge history NAME ID`, `escbridge status` and `escbridge jobs --ticket`, as an operator
runs them: "why did ticket #81 move?" and "is everything all right?", answered from the store.

The store tests run on SQLite and PostgreSQL (``store_url``, see tests/conftest.py). Times are
set around the real clock with margins of hours, since the commands read the time themselves.
The last test runs the issue's scenario end to end against the Zendesk emulator: a ticket sync
escalated, asked about with `jobs`, `history` and `status`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from escbridge.cli import main
from escbridge.cli.status import record_check_reports
from escbridge.connector import CheckReport
from escbridge.model import Actions, Decision, Destination, Priority, Ticket, TicketEvent
from escbridge.store import Intent, ShadowWrite, Store, safe_url, upgrade
from escbridge.sync import LEASE_TICKET_ID, InstanceResult, SyncReport
from escbridge.sync import record_report as record_sync_report

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run with --store in a folder without escbridge.yaml."""
    monkeypatch.chdir(tmp_path)


def escalate_by_sync(store: Store, ticket_id: str, at: datetime, to: str = "l2") -> None:
    """What sync records: an escalation with a note, and no inbox job."""
    decision = Decision(
        ticket_id=ticket_id,
        instance="zd",
        at=at,
        escalate=True,
        from_level="l1",
        destination=Destination(kind="level", id=to, name=to.upper(), rank=1, group="Senior"),
        rule_id="vip-idle",
        kind="hierarchical",
        actions=Actions(
            group="Senior",
            priority=Priority.HIGH,
            note="VIP ticket idle for 2h: over to the team leads.\nRule vip-idle.",
            tags_add=(f"escbridge_{to}",),
            level=to,
        ),
        reasons=("tags have vip", "idle for 2h 10m, over 2h"),
        summary=f"escalate l1 → {to}",
    )
    lock = store.lock_ticket("zd", ticket_id, "host:1:sync", at, timedelta(minutes=5))
    assert lock is not None
    intent = Intent(decision, from_group="Support", channel="email")
    store.write_intent(lock, intent, at)
    store.record_escalation(lock, intent, outcome="applied", now=at + timedelta(seconds=2))


def webhook(store: Store, ticket_id: str, key: str, at: datetime) -> int:
    event = TicketEvent(
        instance="zd", ticket_id=ticket_id, dedupe_key=key, kind="ticket.updated", actor="42"
    )
    job_id = store.enqueue(event, at).job_id
    assert job_id is not None
    return job_id


def shadow(store: Store, ticket_id: str, due: datetime, at: datetime) -> None:
    ticket = Ticket(id=ticket_id, instance="zd", created_at=at - HOUR, updated_at=at, level="l2")
    store.save_shadows([ShadowWrite("zd", ticket_id, ticket, due)], at)


# --- history ---------------------------------------------------------------------------------


def test_history_tells_why_a_ticket_moved_in_time_order(store_url, capsys):
    with Store(store_url) as store:
        webhook(store, "81", "zd-evt-1", NOW - 3 * HOUR)
        [job] = store.claim("worker-a", NOW - 3 * HOUR + timedelta(seconds=1))
        store.complete(job, NOW - 3 * HOUR + timedelta(seconds=2), "unchanged")
        escalate_by_sync(store, "81", NOW - 2 * HOUR)
        shadow(store, "81", NOW + 5 * HOUR, NOW - 2 * HOUR + timedelta(seconds=2))

    code, out, err = run(capsys, "history", "zd", "81", "--store", store_url)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "zd #81: at level l2, 1 escalation"
    text = "\n".join(lines)
    order = [
        "webhook event ticket.updated received as job #1",
        "dedupe key zd-evt-1",
        "job #1 done: unchanged (1 attempt)",
        "escalated l1 → l2 by rule vip-idle (by sync)",
        "reason: tags have vip",
        "reason: idle for 2h 10m, over 2h",
        "group Support → Senior; priority → high; tags +escbridge_l2",
        "internal note written",
        "VIP ticket idle for 2h: over to the team leads.",
        "last seen open at level l2",
        "next due",
    ]
    positions = [text.find(piece) for piece in order]
    assert -1 not in positions, [p for p, i in zip(order, positions, strict=True) if i < 0]
    assert positions == sorted(positions)
    assert "(in 4h" in text  # the next due time, from now

    code, out, _ = run(capsys, "history", "zd", "81", "--store", store_url, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["level"] == "l2" and data["escalations"] == 1
    kinds = [moment["kind"] for moment in data["timeline"]]
    assert kinds == ["event", "job", "escalation", "note", "state", "due"]
    escalation = data["timeline"][2]
    assert (escalation["from"], escalation["to"], escalation["rule"], escalation["by"]) == (
        "l1",
        "l2",
        "vip-idle",
        "sync",
    )
    assert data["timeline"][0]["dedupe_key"] == "zd-evt-1"


def test_history_shows_retries_and_dead_letters_with_their_reason(store_url, capsys):
    with Store(store_url) as store:
        webhook(store, "7", "k-7", NOW - HOUR)
        [job] = store.claim("worker-a", NOW - HOUR)
        store.dead_letter(job, NOW - HOUR + timedelta(seconds=1), "NotFound: ticket 7 is gone")
        webhook(store, "7", "k-7b", NOW - HOUR / 2)
        [job] = store.claim("worker-a", NOW - HOUR / 2)
        store.retry_later(job, NOW + HOUR, "TransientError: 503 from the helpdesk")
        shadow(store, "7", NOW - HOUR / 4, NOW - HOUR / 3)
        assert store.promote_due(NOW - HOUR / 5) == 1  # its deadline came: a job for a worker

    code, out, _ = run(capsys, "history", "zd", "7", "--store", store_url)

    assert code == 0
    given = f" --store {shlex.quote(safe_url(store_url))}"  # the hint runs as printed
    assert (
        f"job #1 dead-lettered after 1 attempt: replay with `escbridge jobs retry 1{given}`" in out
    )
    assert "NotFound: ticket 7 is gone" in out
    assert "job #2 retries (after 1 attempt)" in out
    assert "last error: TransientError: 503 from the helpdesk" in out
    assert "deadline reached: queued for a worker as job #3" in out
    assert "next due" not in out  # taken from the due-queue: processing sets the next one


def test_history_of_an_unknown_ticket_says_where_to_ask_instead(store_url, capsys):
    code, out, _ = run(capsys, "history", "zd", "404", "--store", store_url)

    assert code == 1
    assert "escbridge knows nothing of this ticket" in out
    assert "`escbridge explain --instance zd --ticket 404`" in out


def test_history_of_an_instance_not_in_escbridge_yaml_is_invalid_input(store_url, capsys, tmp_path):
    (tmp_path / "escbridge.yaml").write_text(
        f"store: {store_url}\ninstances:\n  support-eu: {{type: zendesk}}\n"
    )

    code, _, err = run(capsys, "history", "support-us", "1")

    assert code == 2
    assert err.strip() == "escbridge history: unknown instance support-us (configured: support-eu)"


# --- jobs --ticket ---------------------------------------------------------------------------


def test_jobs_for_a_ticket_sync_escalated_points_at_history(store_url, capsys):
    with Store(store_url) as store:
        escalate_by_sync(store, "81", NOW - HOUR)

    code, out, _ = run(capsys, "jobs", "--store", store_url, "--ticket", "81", "--all")

    assert code == 0
    assert "nothing to show" not in out
    assert (
        "ticket 81 on zd was escalated once by sync, which makes no job: "
        f"`escbridge history zd 81 --store {shlex.quote(safe_url(store_url))}` shows each "
        "escalation with its rule and reasons"
    ) in out

    code, out, _ = run(
        capsys, "jobs", "--store", store_url, "--ticket", "81", "--all", "--format", "json"
    )
    assert json.loads(out)["escalated_without_job"] == {"zd": 1}

    code, out, _ = run(capsys, "jobs", "--store", store_url, "--ticket", "99", "--all")
    assert "nothing to show for ticket 99 (`escbridge history INSTANCE 99 --store " in out


def test_hints_keep_the_config_the_user_gave(store_url, capsys, tmp_path):
    """A suggested command run as printed reads the same store: without --config it would
    look for escbridge.yaml and fail."""
    (tmp_path / "sandbox.yaml").write_text(
        f"store: {store_url}\ninstances:\n  zd: {{type: zendesk}}\n"
    )
    with Store(store_url) as store:
        escalate_by_sync(store, "35", NOW - HOUR)

    code, out, _ = run(
        capsys, "jobs", "--config", "sandbox.yaml", "--instance", "zd", "--ticket", "35", "--all"
    )
    assert code == 0
    hint = re.search(r"`(escbridge history [^`]*)` shows each escalation", out)
    assert hint is not None, out
    assert hint[1] == "escbridge history zd 35 --config sandbox.yaml"
    code, out, _ = run(capsys, *hint[1].split()[1:])  # as the user would paste it
    assert code == 0 and "escalated" in out

    code, out, _ = run(capsys, "history", "zd", "404", "--config", "sandbox.yaml")
    assert code == 1
    assert "`escbridge explain --instance zd --ticket 404 --config sandbox.yaml`" in out


# --- status ----------------------------------------------------------------------------------


def sync_report(instance: str, *, stopped: str | None = None, failed: int = 0) -> SyncReport:
    result = InstanceResult(instance, scanned=92, skipped=89, failed=failed, stopped=stopped)
    result.escalated = Counter({"l2": 3})
    report = SyncReport(NOW - HOUR, dry_run=False, instances={instance: result}, duration=4.0)
    return report


def test_status_of_a_quiet_store_needs_no_attention(store_url, capsys):
    with Store(store_url) as store:
        record_sync_report(store, sync_report("zd"))
        shadow(store, "81", NOW + 2 * HOUR, NOW - HOUR)

    code, out, err = run(capsys, "status", "--store", store_url)

    assert code == 0, out + err
    assert "(current)" in out.splitlines()[0]
    assert "zd (not in escbridge.yaml: seen in the store only): not checked" in out
    assert "queue: empty, no dead letters" in out
    assert "ok — scanned 92, escalated 3, skipped 89, failed 0" in out
    assert "due-queue: 1 open ticket known, 1 with a deadline, 0 overdue; next" in out
    assert "leases held: none" in out
    assert out.rstrip().endswith("nothing needs attention")


def test_status_names_dead_letters_a_failed_sync_overdue_deadlines_and_leases(store_url, capsys):
    with Store(store_url) as store:
        record_sync_report(store, sync_report("zd"))  # a good run, then a failed one
        record_sync_report(store, sync_report("zd", stopped="AuthError: 401"))
        webhook(store, "1", "k-1", NOW - HOUR)
        [job] = store.claim("worker-a", NOW - HOUR)
        store.dead_letter(job, NOW - HOUR, "NotFound: gone")
        webhook(store, "2", "k-2", NOW - HOUR)  # waiting
        shadow(store, "3", NOW - 3 * HOUR, NOW - 4 * HOUR)  # overdue: no worker running
        assert store.lock_ticket("zd", LEASE_TICKET_ID, "host:9:sync", NOW, 2 * HOUR)
        assert store.lock_ticket("zd", "5", "host:9:worker", NOW, 2 * HOUR)

    code, out, _ = run(capsys, "status", "--store", store_url)

    assert code == 1
    assert "queue: 1 waiting, 0 retrying, 0 claimed; 1 dead letter (oldest" in out
    assert "FAILED — stopped early: AuthError: 401" in out
    assert "last one that got through: " in out and "last one that got through: never" not in out
    assert "  sync of zd: host:9:sync until" in out
    assert "  ticket zd/5: host:9:worker until" in out
    attention = out.split("needs attention:\n", 1)[1]
    given = f" --store {shlex.quote(safe_url(store_url))}"  # the hint runs as printed
    assert f"zd: 1 dead letter — `escbridge jobs --failed --instance zd{given}`" in attention
    assert "zd: the last sync did not get through: stopped early: AuthError: 401" in attention
    assert "zd: 1 deadline overdue since" in attention and "start `escbridge worker`" in attention

    code, out, _ = run(capsys, "status", "--store", store_url, "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and len(data["attention"]) == 3
    zd = data["instances"]["zd"]
    assert zd["queue"] == {"pending": 1, "retrying": 0, "claimed": 0, "failed": 1, "done": 0}
    assert zd["last_sync"]["ok"] is False and zd["last_sync"]["last_ok_at"] is not None
    assert zd["check"] is None and zd["due"]["overdue"] == 1
    assert sorted(lease["kind"] for lease in data["leases"]) == ["sync", "ticket"]


def test_status_of_a_store_behind_this_escbridge_says_to_upgrade(empty_database_url, capsys):
    upgrade(empty_database_url, "0004")

    code, out, _ = run(capsys, "status", "--store", empty_database_url)

    assert code == 1
    assert "schema is at revision 0004" in out and "run `escbridge db upgrade`" in out
    code, out, _ = run(capsys, "status", "--store", empty_database_url, "--format", "json")
    schema = json.loads(out)["schema"]
    assert code == 1 and schema["revision"] == "0004" and schema["current"] is False


def test_status_of_a_store_not_created_yet_does_not_create_it(tmp_path, capsys):
    path = tmp_path / "nothing-yet.db"

    code, out, _ = run(capsys, "status", "--store", f"sqlite:///{path}")

    given = shlex.quote(f"sqlite:///{path}")
    assert code == 1 and f"does not exist yet — run `escbridge db upgrade --store {given}`" in out
    assert not path.exists()


def test_status_lists_every_configured_instance(store_url, capsys, tmp_path):
    (tmp_path / "escbridge.yaml").write_text(
        f"store: {store_url}\ninstances:\n  support-eu: {{type: zendesk}}\n"
    )

    code, out, _ = run(capsys, "status")

    assert code == 0
    assert "support-eu (zendesk): not checked" in out
    assert "last sync: never (no `escbridge sync` run recorded)" in out


def test_the_last_check_of_an_instance_is_its_readiness(store_url, capsys):
    ready = CheckReport.of("escbridge@acme.example")
    broken = CheckReport.of("escbridge@acme.example", missing_groups=["Senior Support"])

    said = record_check_reports(store_url, {"zd": ready, "fd": broken}, NOW - HOUR, NOW - HOUR)

    assert said is None
    code, out, _ = run(capsys, "status", "--store", store_url)
    assert code == 1
    assert "fd: not ready at the last check: group 'Senior Support' not found" in out
    assert "zd (not in escbridge.yaml: seen in the store only): ready at the last check" in out
    assert "ready as escbridge@acme.example" in out
    assert "fd (not in escbridge.yaml: seen in the store only): NOT READY" in out
    assert "group 'Senior Support' not found" in out
    missing = f"sqlite:///{Path.cwd() / 'none.db'}"
    assert "does not exist yet" in str(record_check_reports(missing, {"zd": ready}, NOW, NOW))


def test_a_dry_run_is_not_kept_as_the_last_sync(store_url, capsys):
    report = sync_report("zd")
    report.dry_run = True
    with Store(store_url) as store:
        record_sync_report(store, report)

    code, out, _ = run(capsys, "status", "--store", store_url, "--format", "json")
    assert code == 0 and "zd" not in json.loads(out)["instances"]


# --- the scenario, end to end ---------------------------------------------------------


def test_a_ticket_sync_escalated_is_explained_by_jobs_history_and_status(tmp_path, capsys):
    from escbridge.matrix import load_matrix
    from escbridge.sandbox.backlog import config_yaml, default_matrix_path
    from escbridge.sandbox.driver import SimClock, TicketSpec, available_drivers

    drivers = available_drivers(only=["zendesk"])
    if not drivers:
        pytest.skip("the zendesk connector is not installed")
    [driver] = drivers
    clock = SimClock(datetime(2026, 3, 11, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")))
    matrix = load_matrix(default_matrix_path())
    groups = [g for r in matrix.rungs if (g := r.group_for("zendesk", "zendesk"))]
    driver.start(clock, groups)
    try:
        config = tmp_path / "escbridge.yaml"
        store = f"sqlite:///{tmp_path / 'escbridge.db'}"
        config.write_text(
            config_yaml({"zendesk": driver.instance_settings()}, default_matrix_path(), store)
        )
        ticket = driver.create_ticket(
            TicketSpec(
                subject="Refund 45 days after purchase",
                description="Can I still get my money back?",
                tags=("policy_exception",),
                group=groups[0],
                created_at=clock.now() - timedelta(minutes=5),  # listed by the export
                updated_at=clock.now() - timedelta(minutes=5),
            ),
            notify=False,
        )
        assert run(capsys, "db", "upgrade", "--config", str(config))[0] == 0
        code, out, err = run(capsys, "sync", "--config", str(config), "--json")
        assert code == 0, out + err

        code, out, _ = run(capsys, "jobs", "--config", str(config), "--ticket", ticket, "--all")
        assert f"escbridge history zendesk {ticket}" in out and "escalated once by sync" in out

        code, out, _ = run(capsys, "history", "zendesk", ticket, "--config", str(config))
        assert code == 0
        assert out.splitlines()[0].startswith(f"zendesk #{ticket}: at level l2, 1 escalation")
        assert "escalated l1 → l2 by rule policy-exception (by sync)" in out
        assert "internal note written" in out

        code, out, _ = run(capsys, "status", "--config", str(config))
        assert code == 0, out
        assert "zendesk (zendesk): not checked" in out
        assert "ok — scanned 1, escalated 1, skipped 0, failed 0" in out
    finally:
        driver.stop()
