"""Webhook receiver under load and under a worker crash: gunicorn on 127.0.0.1.

A load generator (several processes, several keep-alive connections each) sends 20,000 signed
Zendesk webhooks at full speed: 10% are redeliveries of earlier ones (duplicates) and 1% are
forged (signed with the wrong secret). In the same run, on the same gunicorn settings, the same
load hits three endpoints one after the other:

- the receiver, power-loss durable: a 202 means the event is on disk (SQLite
  ``synchronous=FULL``), concurrent deliveries sharing one commit;
- a bare Flask endpoint that only answers 202 (the ceiling: HTTP and Flask alone);
- a bare Flask endpoint doing the honest minimum of the job: one raw sqlite3 insert per request
  in its own durable commit (WAL, ``synchronous=FULL``), nothing verified, parsed or deduplicated.

Like a helpdesk, the generator delivers a webhook again when it gets no answer or a 5xx.

Printed: requests/second and p50/p99 latency of each, the ratios receiver/bare and
receiver/raw-insert, and the end count read from the store: events stored = unique genuine
events sent, forged events stored = 0. Then the receiver run is repeated (fresh events) while
one gunicorn worker is killed with SIGKILL mid-run, twice, and restarted by the gunicorn
master: still zero lost, zero forged.

Targets: at least 0.5x the bare endpoint's throughput, at least 1.0x the raw-insert
endpoint's, receiver p99 under 15 ms. The machine's disk sets the price of a durable commit
(an fsync: 0.1 ms on a quiet SSD, several ms on a busy shared disk): read the ratios of one run,
and repeat runs on a shared machine.

Run: .venv/bin/python benchmarks/webhooks.py [--requests 20000] [--workers 2] [--threads 4]
     [--processes 2] [--connections 8] [--store-url postgresql+psycopg://…] [--no-kill]
Bounded: every phase stops at --phase-timeout seconds; loopback only; cleans up after itself.
``BENCH_GUNICORN_CONF=path`` swaps the gunicorn config file (e.g. one that profiles a worker).
Also printed: the gunicorn processes' CPU time per request, the figure least disturbed by
whatever else the machine is running.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from escbridge_zendesk.parse import format_time
from escbridge_zendesk.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

from escbridge.config import parse_config
from escbridge.connector import create_connector
from escbridge.store import Store, upgrade

SECRET = "benchmark-webhook-signing-secret"
INSTANCE = "eu"
MAX_ATTEMPTS = 50  # deliveries of one webhook before the generator gives up (a loss)

BARE_APP = """
from flask import Flask, jsonify

app = Flask("bare")


@app.post("/webhooks/<instance>")
def webhook(instance):
    return jsonify(status="queued"), 202


@app.get("/readyz")
def readyz():
    return jsonify(status="ready")
"""

RAW_INSERT_APP = """
import os
import sqlite3
import threading

from flask import Flask, jsonify, request

app = Flask("raw_insert")
PATH = os.environ["BENCH_RAW_DB"]
_local = threading.local()


def connection():
    # One connection per thread, each commit its own and durable (WAL, synchronous=FULL).
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(PATH, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
    return db


@app.post("/webhooks/<instance>")
def webhook(instance):
    body = request.get_data()
    db = connection()
    db.execute("BEGIN IMMEDIATE")
    row = db.execute(
        "INSERT INTO events (instance, body) VALUES (?, ?) RETURNING id", (instance, body)
    ).fetchone()
    db.execute("COMMIT")
    return jsonify(status="queued", event_id=row[0]), 202


@app.get("/readyz")
def readyz():
    return jsonify(status="ready")
"""


# --- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    kind: str  # genuine | duplicate | forged
    dedupe_key: str


@dataclass
class Load:
    deliveries: list[Delivery]
    genuine_keys: set[str]
    forged_keys: set[str]


def build_load(total: int, connector: Any, rng: random.Random) -> Load:
    """``total`` deliveries: 1% forged, 10% duplicates of earlier genuine ones, the rest new."""
    forged_n = total // 100
    duplicate_n = total // 10
    genuine_n = total - forged_n - duplicate_n
    stamp = format_time(datetime.now(UTC))

    def event(ticket: int) -> bytes:
        return json.dumps(
            {
                "account_id": 18525119,
                "detail": {"id": str(ticket), "actor_id": "9003", "status": "OPEN"},
                "event": {"current": "HIGH", "previous": "NORMAL"},
                "id": str(uuid.uuid4()),
                "subject": f"zen:ticket:{ticket}",
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "type": "zen:event-type:ticket.priority_changed",
                "zendesk_event_version": "2022-11-06",
            }
        ).encode()

    def delivery(body: bytes, secret: str, kind: str) -> Delivery:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Zendesk Webhook",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, stamp, body),
        }
        [parsed] = connector.parse_webhook(headers, body)  # the production parser's key
        return Delivery(body, headers, kind, parsed.dedupe_key)

    genuine = [delivery(event(rng.randint(1, 5000)), SECRET, "genuine") for _ in range(genuine_n)]
    duplicates = [
        Delivery(d.body, d.headers, "duplicate", d.dedupe_key)
        for d in rng.choices(genuine, k=duplicate_n)
    ]
    forged = [delivery(event(rng.randint(1, 5000)), "a-guess", "forged") for _ in range(forged_n)]
    everything = genuine + duplicates + forged
    rng.shuffle(everything)
    # A redelivery comes after the first delivery (helpdesks retry, they do not pre-send).
    seen: set[str] = set()
    ordered: list[Delivery] = []
    held: deque[Delivery] = deque()
    for d in everything:
        if d.kind == "duplicate" and d.dedupe_key not in seen:
            held.append(d)
            continue
        ordered.append(d)
        if d.kind == "genuine":
            seen.add(d.dedupe_key)
    ordered.extend(held)
    return Load(
        ordered,
        {d.dedupe_key for d in genuine},
        {d.dedupe_key for d in forged},
    )


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Result:
    started: float = 0.0
    ended: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # final answer per delivery
    redeliveries: int = 0
    connection_errors: int = 0
    lost: int = 0  # gave up after MAX_ATTEMPTS
    forged_accepted: int = 0

    def merge(self, other: Result) -> None:
        self.started = min(self.started or other.started, other.started)
        self.ended = max(self.ended, other.ended)
        self.latencies.extend(other.latencies)
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.redeliveries += other.redeliveries
        self.connection_errors += other.connection_errors
        self.lost += other.lost
        self.forged_accepted += other.forged_accepted


_progress: Any = None  # a shared counter, inherited by the forked load processes


def _send_all(port: int, path: str, work: deque[Delivery], deadline: float, out: Result) -> None:
    """One keep-alive connection: deliver until the shared work queue is empty."""
    conn: http.client.HTTPConnection | None = None
    while time.time() < deadline:
        try:
            d = work.popleft()
        except IndexError:
            break
        for attempt in range(MAX_ATTEMPTS):
            if time.time() >= deadline:
                out.lost += 1
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=d.body, headers=d.headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                # The worker died under us (or closed the connection): deliver again.
                conn.close()
                conn = None
                out.connection_errors += 1
                out.redeliveries += 1
                time.sleep(0.01 * (attempt + 1))
                continue
            out.latencies.append(time.perf_counter() - started)
            if response.status >= 500:
                out.redeliveries += 1
                time.sleep(0.01 * (attempt + 1))
                continue
            if response.will_close:
                conn.close()
                conn = None
            out.statuses[response.status] = out.statuses.get(response.status, 0) + 1
            if d.kind == "forged" and response.status < 300:
                out.forged_accepted += 1
            break
        else:
            out.lost += 1
        if _progress is not None:
            with _progress.get_lock():
                _progress.value += 1
    if conn is not None:
        conn.close()


def _load_process(args: tuple[int, str, list[Delivery], int, float]) -> Result:
    port, path, deliveries, connections, deadline = args
    work: deque[Delivery] = deque(deliveries)
    results = [Result() for _ in range(connections)]
    threads = [
        threading.Thread(target=_send_all, args=(port, path, work, deadline, r)) for r in results
    ]
    total = Result(started=time.time())
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total.ended = time.time()
    for r in results:
        r.started, r.ended = total.started, total.ended
        total.merge(r)
    return total


def run_load(
    port: int,
    deliveries: Sequence[Delivery],
    *,
    processes: int,
    connections: int,
    deadline: float,
) -> Result:
    """Split the deliveries over ``processes`` × ``connections`` and send them all at once."""
    path = f"/webhooks/{INSTANCE}"
    per = [list(deliveries[i::processes]) for i in range(processes)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        parts = pool.map(
            _load_process,
            [(port, path, chunk, connections, deadline) for chunk in per],
        )
    total = Result()
    for part in parts:
        total.merge(part)
    return total


# --- gunicorn --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gunicorn(
    app: str, work: Path, args: argparse.Namespace, env: dict[str, str], name: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    metrics = work / f"metrics-{name}"
    metrics.mkdir()
    log = (work / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn"),
            *(
                "-c",
                os.environ.get("BENCH_GUNICORN_CONF", "python:escbridge_webhooks.gunicorn_conf"),
            ),
            *("--bind", f"127.0.0.1:{port}"),
            *("--workers", str(args.workers), "--threads", str(args.threads)),
            *("--pythonpath", str(work)),
            app,
        ],
        env={
            **os.environ,
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            "ESCBRIDGE_LOG_LEVEL": args.log_level,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn ({name}) exited; see {work / (name + '.log')}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({name}) not ready within 60 s")
            time.sleep(0.1)
        # Every worker booted: gunicorn starts them together; give the last a moment.
        time.sleep(1.0)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master:
            pids.append(int(entry.name))
    return sorted(pids)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


# --- reporting -------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    seconds: float


def figures(result: Result, sent: int) -> Figures:
    seconds = max(1e-9, result.ended - result.started)
    return Figures(
        sent / seconds,
        quantile(result.latencies, 0.50) * 1000,
        quantile(result.latencies, 0.99) * 1000,
        seconds,
    )


def _durability(store: Store) -> str:
    """What a commit of the receiver's store waits for, as the database reports it."""
    with store.engine.connect() as connection:
        raw: Any = connection.connection.driver_connection
        if store.dialect == "sqlite":
            level = raw.execute("PRAGMA synchronous").fetchone()[0]
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            return f"synchronous={names.get(level, level)}"
        return f"synchronous_commit={raw.execute('SHOW synchronous_commit').fetchone()[0]}"


def stored(store: Store, load: Load) -> tuple[int, int]:
    keys = {
        job.dedupe_key
        for job in store.jobs(("pending", "processing", "done", "failed"), limit=None)
    }
    return len(keys & load.genuine_keys), len(keys & load.forged_keys)


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global _progress
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=4, help="connections per process")
    parser.add_argument("--store-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--phase-timeout", type=float, default=180.0)
    parser.add_argument("--no-kill", action="store_true", help="skip the worker-kill run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--log-level", default="info", help="receiver log level (info: one line per delivery)"
    )
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="escbridge-bench-") as tmp:
        work = Path(tmp)
        store_url = args.store_url or f"sqlite:///{work / 'escbridge.db'}"
        upgrade(store_url)
        (work / "matrix.yaml").write_text(
            "version: 1\nname: bench\nlevels:\n  - id: l1\n    name: L1\n"
            "    groups: {zendesk: Support}\nrules: []\n",
            encoding="utf-8",
        )
        (work / "escbridge.yaml").write_text(
            f"store: {store_url}\nmatrix: matrix.yaml\ninstances:\n  {INSTANCE}:\n"
            "    type: zendesk\n    sandbox: true\n    base_url: http://127.0.0.1:9\n"
            "    email: escbridge@bench.example\n    api_token: ${BENCH_API_TOKEN}\n"
            "    webhook_secret: ${BENCH_WEBHOOK_SECRET}\n    integration_user_id: 9001\n",
            encoding="utf-8",
        )
        (work / "bare_app.py").write_text(BARE_APP, encoding="utf-8")
        (work / "raw_insert_app.py").write_text(RAW_INSERT_APP, encoding="utf-8")
        raw_db = work / "raw-insert.db"
        with contextlib.closing(sqlite3.connect(raw_db)) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, instance TEXT NOT NULL,"
                " body BLOB NOT NULL)"
            )
            db.commit()
        env = {
            "ESCBRIDGE_CONFIG": str(work / "escbridge.yaml"),
            "BENCH_API_TOKEN": "unused-token",
            "BENCH_WEBHOOK_SECRET": SECRET,
            "BENCH_RAW_DB": str(raw_db),
        }
        config = parse_config(
            (work / "escbridge.yaml").read_text(), str(work / "escbridge.yaml"), work, env=env
        )
        connector = create_connector(config.instances[INSTANCE])
        store = Store(store_url)
        durability = _durability(store)
        print(
            f"machine: {os.cpu_count()} CPU(s); gunicorn gthread {args.workers} workers × "
            f"{args.threads} threads; load: {args.processes} processes × {args.connections} "
            f"keep-alive connections; store: {store!r} ({durability})",
            flush=True,
        )

        load = build_load(args.requests, connector, rng)
        counts = {
            k: sum(d.kind == k for d in load.deliveries) for k in ("genuine", "duplicate", "forged")
        }
        print(f"load: {len(load.deliveries)} deliveries: {counts}", flush=True)

        server_cpu: dict[str, float] = {}
        results: dict[str, Result] = {}
        endpoints = (
            ("receiver", "escbridge_webhooks.wsgi:app"),
            ("bare", "bare_app:app"),
            ("raw_insert", "raw_insert_app:app"),
        )
        for name, app in endpoints:
            with gunicorn(app, work, args, env, name) as (port, master):
                pids = [master.pid, *worker_pids(master.pid)]
                before = cpu_seconds(pids)
                results[name] = run_load(
                    port,
                    load.deliveries,
                    processes=args.processes,
                    connections=args.connections,
                    deadline=time.time() + args.phase_timeout,
                )
                server_cpu[name] = cpu_seconds(pids) - before
        n = len(load.deliveries)
        fig = {name: figures(result, n) for name, result in results.items()}
        receiver, r = results["receiver"], fig["receiver"]
        genuine_stored, forged_stored = stored(store, load)
        print()
        print(
            f"{'':26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'seconds':>10}"
            f"{'server CPU ms/req':>20}"
        )
        for name, key in (
            ("receiver (durable)", "receiver"),
            ("bare Flask 202", "bare"),
            ("raw durable insert", "raw_insert"),
        ):
            f = fig[key]
            print(
                f"{name:26}{f.rps:>10.0f}{f.p50_ms:>10.2f}{f.p99_ms:>10.2f}{f.seconds:>10.1f}"
                f"{1000 * server_cpu[key] / n:>20.2f}"
            )
        to_bare = r.rps / fig["bare"].rps
        to_raw = r.rps / fig["raw_insert"].rps
        print(f"throughput receiver/bare: {to_bare:.2f}  (target >= 0.50)")
        print(f"throughput receiver/raw-insert: {to_raw:.2f}  (target >= 1.00)")
        print(f"receiver p99: {r.p99_ms:.1f} ms  (target < 15 ms)")
        print(
            f"receiver answers: {dict(sorted(receiver.statuses.items()))}; "
            f"redeliveries {receiver.redeliveries}, gave up {receiver.lost}"
        )
        ok = genuine_stored == len(load.genuine_keys) and forged_stored == 0
        print(
            f"stored: {genuine_stored} of {len(load.genuine_keys)} unique genuine events; "
            f"forged stored: {forged_stored}, forged answered 2xx: {receiver.forged_accepted}"
            f"  -> {'OK' if ok else 'MISMATCH'}",
            flush=True,
        )
        targets = to_bare >= 0.5 and to_raw >= 1.0 and r.p99_ms < 15
        if args.no_kill:
            store.close()
            return 0 if ok else 1

        # --- the same again, while a worker is killed and restarted ---------------------------
        kill_load = build_load(args.requests, connector, rng)
        _progress = multiprocessing.get_context("fork").Value("i", 0)
        kills: list[str] = []
        with gunicorn("escbridge_webhooks.wsgi:app", work, args, env, "receiver-kill") as (
            port,
            master,
        ):
            progress = _progress

            def killer() -> None:
                for share in (0.3, 0.6):
                    while progress.value < share * len(kill_load.deliveries):
                        time.sleep(0.005)
                    pids = worker_pids(master.pid)
                    if not pids:
                        kills.append(f"at {share:.0%}: no worker found")
                        continue
                    victim = random.choice(pids)
                    os.kill(victim, signal.SIGKILL)
                    kills.append(f"SIGKILL worker {victim} at {progress.value} deliveries")

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            faulty = run_load(
                port,
                kill_load.deliveries,
                processes=args.processes,
                connections=args.connections,
                deadline=time.time() + args.phase_timeout,
            )
            thread.join(5)
            restarted = worker_pids(master.pid)
        _progress = None
        k = figures(faulty, len(kill_load.deliveries))
        genuine_k, forged_k = stored(store, kill_load)
        ok_k = (
            genuine_k == len(kill_load.genuine_keys)
            and forged_k == 0
            and faulty.lost == 0
            and faulty.forged_accepted == 0
        )
        print()
        print(f"with a worker killed: {'; '.join(kills)}; workers after: {len(restarted)}")
        print(
            f"  {k.rps:.0f} req/s, p50 {k.p50_ms:.2f} ms, p99 {k.p99_ms:.2f} ms; "
            f"connection errors {faulty.connection_errors}, redeliveries {faulty.redeliveries}, "
            f"gave up {faulty.lost}"
        )
        print(
            f"  stored: {genuine_k} of {len(kill_load.genuine_keys)} unique genuine events; "
            f"forged stored: {forged_k}, forged answered 2xx: {faulty.forged_accepted}"
            f"  -> {'OK, zero lost' if ok_k else 'MISMATCH'}",
            flush=True,
        )
        store.close()
        if not targets:
            print("note: a throughput or latency target was missed (see above)")
        return 0 if ok and ok_k else 1


if __name__ == "__main__":
    sys.exit(main())
