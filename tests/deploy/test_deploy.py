"""The files in deploy/ work as shipped: an admin copies them, replaces the placeholders, and
systemd, gunicorn, escbridge and Prometheus accept them.

- every unit passes `systemd-analyze verify` (with the venv's escbridge and gunicorn standing in
  for /opt/escbridge/bin, since verify needs the binaries to exist);
- every ExecStart (commented alternatives too) parses with the real parser of its program;
- the units, the environment file, the nginx recipe and the Prometheus job agree on paths and
  addresses, and the environment file holds placeholders, never a secret;
- the receiver started as escbridge-serve.service starts it, with the environment file's
  settings, answers the Prometheus job's scrape, and refuses one without its token; every
  metric the alerting rules read is in that scrape.

`nginx -t` on deploy/nginx.conf, and nginx running it in front of gunicorn, are in
tests/webhooks/test_slow_clients.py.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import io
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gunicorn.config import Config as GunicornConfig
from polling import wait_for

from escbridge.cli import build_parser
from escbridge.store import upgrade

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted([*DEPLOY.glob("*.service"), *DEPLOY.glob("*.timer")])
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
ENV_EXAMPLE = DEPLOY / "escbridge.env.example"
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "prometheus-alerts.yml"
NGINX = DEPLOY / "nginx.conf"
INSTALLED_BIN = "/opt/escbridge/bin/"
BIN = Path(sys.executable).parent  # this venv's bin: escbridge and gunicorn, as installed
GUARD = 30.0  # seconds: a bound on a hang, not a guess at how long anything takes
_EXEC_START = re.compile(r"^#?\s*ExecStart=(?P<command>.+)$")


def unit_settings(unit: Path) -> list[tuple[str, str]]:
    """The ``Key=value`` lines of a unit file, in order (comments and sections left out)."""
    found = []
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def setting(unit: Path, key: str) -> list[str]:
    return [value for k, value in unit_settings(unit) if k == key]


def unit_environment(unit: Path) -> dict[str, str]:
    """The unit's ``Environment=NAME=value`` defaults."""
    return dict(value.split("=", 1) for value in setting(unit, "Environment"))


def exec_starts(unit: Path) -> list[str]:
    """Every ExecStart of a unit, the commented alternatives an admin may switch to included."""
    return [
        match["command"]
        for line in unit.read_text(encoding="utf-8").splitlines()
        if (match := _EXEC_START.match(line.strip()))
    ]


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """An environment file's ``NAME=value`` lines (the shipped example by default)."""
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"not NAME=value: {raw!r}"
            values[name] = value
    return values


def prometheus_job() -> dict[str, Any]:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "escbridge"]
    assert isinstance(job, dict)
    return job


def escbridge_parse_error(argv: list[str]) -> str | None:
    """What escbridge's own parser says about ``argv``, chosen as `escbridge.cli.main` does."""
    selected = next((word for word in argv if not word.startswith("-")), None)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser(selected).parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return stderr.getvalue().strip() or f"exit {exc.code}"
    return None


def test_the_deployment_files_are_there() -> None:
    """The checks below are not vacuously green."""
    assert {unit.name for unit in UNITS} == {
        "escbridge-db-upgrade.service",
        "escbridge-serve.service",
        "escbridge-worker.service",
        "escbridge-sync.service",
        "escbridge-sync.timer",
    }
    assert all(exec_starts(service) for service in SERVICES)
    assert all(path.is_file() for path in (ENV_EXAMPLE, PROMETHEUS, ALERTS, NGINX))


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here: the units are not verified",
)
def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    for program in ("escbridge", "gunicorn"):
        assert (BIN / program).is_file(), f"{program} is not installed beside {sys.executable}"
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_BIN, f"{BIN}/"))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=GUARD
    )
    # verify exits 0 on an unknown key or a value it ignores, but says so on stderr.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize(
    "command", [c for unit in SERVICES for c in exec_starts(unit)], ids=lambda c: c[:60]
)
def test_every_exec_start_parses(command: str) -> None:
    program, *argv = shlex.split(command)
    assert program.startswith(INSTALLED_BIN), f"{program} is not in the venv of the docs"
    name = program.removeprefix(INSTALLED_BIN)
    if name == "escbridge":
        assert escbridge_parse_error(argv) is None, escbridge_parse_error(argv)
        assert argv[argv.index("--config") + 1] == "/etc/escbridge/escbridge.yaml"
    elif name == "gunicorn":
        parsed = GunicornConfig().parser().parse_args(argv)
        settings, app = parsed.config.removeprefix("python:"), parsed.args
        assert importlib.util.find_spec(settings) is not None, settings
        assert app == ["escbridge_webhooks.wsgi:app"]
        assert importlib.util.find_spec("escbridge_webhooks.wsgi") is not None
    else:
        pytest.fail(f"ExecStart runs {program}, which nothing checks")


def test_the_units_read_one_config_and_one_environment_file() -> None:
    """Every service reads the environment file the example says to install, and the config."""
    header = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# /etc/escbridge/escbridge.env:")
    for service in SERVICES:
        assert setting(service, "EnvironmentFile") == ["/etc/escbridge/escbridge.env"], service
        assert setting(service, "User") == ["escbridge"], service
    serve = DEPLOY / "escbridge-serve.service"
    assert unit_environment(serve)["ESCBRIDGE_CONFIG"] == "/etc/escbridge/escbridge.yaml"
    timer = DEPLOY / "escbridge-sync.timer"
    assert setting(timer, "WantedBy") == ["timers.target"]


def test_nginx_proxies_to_the_address_the_receiver_unit_binds() -> None:
    bind = unit_environment(DEPLOY / "escbridge-serve.service")["ESCBRIDGE_BIND"]
    upstream = re.findall(r"^\s*server\s+(\S+);", NGINX.read_text(encoding="utf-8"), re.M)
    assert upstream == [bind]


def test_the_environment_file_holds_placeholders_not_secrets() -> None:
    values = env_example()
    for name, value in values.items():
        if re.search(r"TOKEN|SECRET|PASSWORD", name):
            assert re.fullmatch(r"<[^<>]+>", value), f"{name} must be a <placeholder>"
    # What `escbridge init` writes and the docs' PostgreSQL store read from the environment.
    assert {"ZENDESK_API_TOKEN", "ZENDESK_WEBHOOK_SECRET", "ESCBRIDGE_DB_PASSWORD"} <= set(values)


def filled_in(work: Path) -> Path:
    """The environment file as an admin fills it in: each <placeholder> replaced by a value."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    path = work / "escbridge.env"
    path.write_text(re.sub(r"<[^<>]+>", lambda _: secrets.token_hex(16), text), encoding="utf-8")
    return path


def test_a_command_run_by_hand_sees_what_the_units_see(tmp_path: Path) -> None:
    """deployment.md runs escbridge by hand through `sh -c 'set -a && . escbridge.env && …'`:
    sh reads the file as systemd does, and escbridge runs with it."""
    env_file = filled_in(tmp_path)
    systemd_view = env_example(env_file)
    shown = subprocess.run(
        ["sh", "-c", f"set -a && . {env_file} && env"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "")},
        timeout=GUARD,
        check=True,
    ).stdout
    sh_view = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert {name: sh_view.get(name) for name in systemd_view} == systemd_view
    store = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(store)
    script = f"set -a && . {env_file} && exec {BIN / 'escbridge'} status --store {store}"
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=GUARD, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "(current)" in result.stdout


def test_the_prometheus_job_scrapes_the_metrics_listener_of_the_environment_file() -> None:
    job = prometheus_job()
    (targets,) = [group["targets"] for group in job["static_configs"]]
    assert targets == [env_example()["ESCBRIDGE_METRICS_BIND"]]
    assert job["authorization"]["type"] == "Bearer"
    assert job["scheme"] == "http"


# --- the receiver as escbridge-serve.service runs it, scraped by the Prometheus job ----------


def free_addresses(count: int) -> list[str]:
    """``count`` distinct free loopback addresses (held together, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]


def get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=GUARD)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def post(address: str, path: str, body: bytes) -> int:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=GUARD)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def answers(address: str) -> bool:
    with contextlib.suppress(OSError):
        return get(address, "/healthz")[0] == 200
    return False


@contextlib.contextmanager
def receiver_unit(work: Path, overrides: dict[str, str]) -> Iterator[None]:
    """escbridge-serve.service's ExecStart, in its environment: the unit's defaults, then the
    environment file (which wins, as with systemd), then the test's ``overrides``."""
    serve = DEPLOY / "escbridge-serve.service"
    (command,) = setting(serve, "ExecStart")
    argv = shlex.split(command.replace(INSTALLED_BIN, f"{BIN}/"))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work)}
    env |= unit_environment(serve) | env_example() | overrides
    log_path = work / "receiver.log"
    log = log_path.open("wb")
    process = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"the receiver exited {process.returncode}:\n" + log_path.read_text()
            )
        return answers(overrides["ESCBRIDGE_BIND"])

    try:
        wait_for(up, timeout=GUARD, what="the receiver to answer /healthz")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(GUARD)
        log.close()


def test_the_prometheus_job_scrapes_the_receiver_the_unit_starts(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'escbridge.db'}"
    upgrade(store)
    (tmp_path / "matrix.yaml").write_text(
        "version: 1\nname: deploy test\nlevels:\n"
        "  - {id: l1, name: Frontline, groups: {zendesk: Support}}\n"
        "  - {id: l2, name: Senior, groups: {zendesk: Tier 2}}\n"
        "rules:\n  - {id: vip, name: VIP, kind: hierarchical, when: {tags: [vip]}, to: l2}\n",
        encoding="utf-8",
    )
    config = tmp_path / "escbridge.yaml"
    config.write_text(
        f"store: {store}\nmatrix: matrix.yaml\ninstances:\n  eu:\n    type: zendesk\n"
        "    base_url: http://127.0.0.1:9\n    sandbox: true\n    integration_user_id: 9001\n"
        "    email: escbridge@example.com\n    api_token: ${ZENDESK_API_TOKEN}\n"
        "    webhook_secret: ${ZENDESK_WEBHOOK_SECRET}\n",
        encoding="utf-8",
    )
    token = secrets.token_hex(32)
    job = prometheus_job()
    credentials = Path(job["authorization"]["credentials_file"])
    (tmp_path / credentials.name).write_text(token + "\n", encoding="utf-8")
    public, metrics = free_addresses(2)
    overrides = {
        "ESCBRIDGE_CONFIG": str(config),
        "ESCBRIDGE_BIND": public,
        "ESCBRIDGE_METRICS_BIND": metrics,
        "ESCBRIDGE_METRICS_TOKEN": token,
        "ZENDESK_API_TOKEN": "zendesk-api-token-for-the-test",
        "ZENDESK_WEBHOOK_SECRET": "zendesk-signing-secret-for-the-test",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "ESCBRIDGE_WEB_WORKERS": "1",
    }
    (tmp_path / "metrics").mkdir()
    # Prometheus reads the credentials file and sends "<type> <credentials>".
    scrape = {
        "Authorization": f"{job['authorization']['type']} "
        f"{(tmp_path / credentials.name).read_text(encoding='utf-8').strip()}"
    }
    with receiver_unit(tmp_path, overrides):
        assert post(public, "/webhooks/eu", b"{}") == 401  # a forged delivery, counted
        status, body = get(metrics, job["metrics_path"], scrape)
        assert status == 200, body
        assert "escbridge_store_up 1.0" in body
        assert 'escbridge_webhooks_rejected_total{instance="eu",reason="unauthorized"} 1.0' in body
        assert get(metrics, job["metrics_path"])[0] == 401  # no token
        assert get(public, job["metrics_path"], scrape)[0] == 404  # not on the public listener
    exposed = set(re.findall(r"^# TYPE (\w+) ", body, re.M))
    exposed |= {f"{name}_total" for name in exposed}  # a counter's samples end in _total
    for rule in alert_rules():
        named = set(re.findall(r"\b(escbridge_\w+)", rule["expr"]))
        assert named <= exposed, f"{rule['alert']} reads {named - exposed}, which nobody serves"


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    (group,) = rules["groups"]
    found: list[dict[str, Any]] = group["rules"]
    return found


def test_every_alert_has_an_expression_a_duration_and_a_summary() -> None:
    rules = alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "annotations"}, rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["annotations"]["summary"]
        # Prometheus renames escbridge's own `instance` label: grouping by it would group
        # by the scraped receiver instead.
        assert "by (instance)" not in rule["expr"], rule["alert"]
