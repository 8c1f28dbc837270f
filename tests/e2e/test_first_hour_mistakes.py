"""The README's commands with the mistakes of an admin's first hour: one line, exit 2, no traceback.

Each command runs as a subprocess of the console script, as a new user types it, so what is
checked is what reaches the terminal: exit code 2, one line that names the key, option or file
and the fix, no Python traceback, and no secret. Lines the logging writes (time-stamped) are
not the answer and are left aside; the port-in-use case is the only one that logs at all.

The setup is the README's Getting started: `escbridge init` writes escbridge.yaml, `escbridge
db upgrade` creates the store. The mistakes then run side by side (they share nothing but the
read-only starter files), which keeps the whole module to a few seconds.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ESCBRIDGE = Path(sys.executable).parent / "escbridge"
TOKEN = "zd-api-token-6f2b9c41e7"
SECRET = "zd-webhook-secret-90af12"
DB_PASSWORD = "pg-pass-3e7d0b55"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # --log-format text


@dataclass(frozen=True)
class Mistake:
    """One wrong command line: what the admin typed and what the answer must name."""

    what: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # every one of these is in the answer (key, option, fix)
    store: str | None = None  # escbridge.yaml's `store:` for this command, when it is the mistake
    config_text: str | None = None  # a whole escbridge.yaml of its own (bad YAML)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    code: int
    output: str  # stdout and stderr, as the terminal shows them

    @property
    def said(self) -> list[str]:
        """The command's own lines: everything but log lines."""
        return [ln for ln in self.output.splitlines() if ln.strip() and not LOG_LINE.match(ln)]


def escbridge(cwd: Path, *argv: str, env: Mapping[str, str] = {}) -> Answer:
    run_env = {**os.environ, "ZENDESK_API_TOKEN": TOKEN, "ZENDESK_WEBHOOK_SECRET": SECRET}
    run_env.pop("ESCBRIDGE_LOG_FORMAT", None)
    done = subprocess.run(
        [str(ESCBRIDGE), *argv],
        cwd=cwd,
        env={**run_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return Answer(done.returncode, done.stdout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`escbridge init` and `escbridge db upgrade`, as the README's Getting started does."""
    root = tmp_path_factory.mktemp("first-hour")
    assert escbridge(root, "init", "site").code == 0
    site = root / "site"
    config = (site / "escbridge.yaml").read_text(encoding="utf-8")
    # the starter's helpdesk is an example account; point it at a closed loopback port so no
    # command waits on the network (nothing here gets as far as calling it)
    config = config.replace(
        "    subdomain: your-subdomain", "    base_url: http://127.0.0.1:9\n    sandbox: true"
    )
    (site / "escbridge.yaml").write_text(config, encoding="utf-8")
    upgraded = escbridge(site, "db", "upgrade")
    assert upgraded.code == 0, upgraded.output
    return site


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port another process holds: bound and listening before `serve` is asked for it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def mistakes(busy: int) -> list[Mistake]:
    """The first hour's mistakes, each on a different command the README documents."""
    pg = f"postgresql+psycopg://escbridge:{DB_PASSWORD}"
    return [
        # the store in escbridge.yaml: named with its file:line and the URL to write instead
        Mistake(
            "store is a path",
            ("db", "upgrade"),
            ("escbridge.yaml:", "store", "sqlite:///escbridge.db"),
            store="escbridge.db",
        ),
        Mistake(
            "store is MySQL",
            ("sync", "--dry-run"),
            ("escbridge.yaml:", "store", '"mysql"', "postgresql+psycopg://"),
            store=f"mysql://escbridge:{DB_PASSWORD}@db.internal/escbridge",
        ),
        Mistake(
            "store port is not a number",
            ("serve",),
            ("escbridge.yaml:", "store", 'port "54x2"'),
            store=f"{pg}@db.internal:54x2/escbridge",
        ),
        # the store on the command line: named as --store, the password masked
        Mistake(
            "--store is MySQL",
            ("jobs", "--store", f"mysql://escbridge:{DB_PASSWORD}@db.internal/escbridge"),
            ("--store", '"mysql"', "sqlite:///PATH"),
        ),
        # the port another process holds
        Mistake(
            "port in use",
            ("serve", "--port", str(busy)),
            (f"port {busy} on 127.0.0.1 is in use", "--port N"),
        ),
        # the config file itself
        Mistake(
            "config missing",
            ("worker", "--config", "missing.yaml"),
            ("missing.yaml", "cannot read"),
        ),
        Mistake(
            "config not YAML",
            ("due",),
            ("escbridge.yaml:", "not valid YAML"),
            config_text="store: sqlite:///escbridge.db\ninstances:\n  support: [\n",
        ),
        # the command line
        Mistake("matrix file missing", ("validate", "matrix.yml"), ("matrix.yml", "cannot read")),
        Mistake("unknown --format", ("matrix", "--format", "xml"), ("--format", "'xml'")),
        Mistake("misspelt command", ("servr",), ("'servr'", "did you mean serve")),
        Mistake("misspelt option", ("serve", "--prot", "8001"), ("escbridge serve", "--prot")),
        Mistake(
            "unknown log format",
            ("worker",),
            ("--log-format", "ESCBRIDGE_LOG_FORMAT", "text or json"),
            env={"ESCBRIDGE_LOG_FORMAT": "xml"},
        ),
    ]


def run_mistake(workdir: Path, index: int, mistake: Mistake) -> Answer:
    """Run one mistake; a wrong escbridge.yaml gets a directory of its own, as a site would."""
    cwd = workdir
    if mistake.store is not None or mistake.config_text is not None:
        cwd = workdir / f"case-{index}"
        cwd.mkdir()
        starter = (workdir / "escbridge.yaml").read_text(encoding="utf-8")
        text = mistake.config_text or re.sub(
            r"(?m)^store: .*$", lambda _: f"store: {mistake.store}", starter
        )
        (cwd / "escbridge.yaml").write_text(text, encoding="utf-8")
        (cwd / "matrix.yaml").write_bytes((workdir / "matrix.yaml").read_bytes())
    return escbridge(cwd, *mistake.argv, env=mistake.env)


def test_each_mistake_is_one_line_naming_the_key_and_exit_2(workdir: Path, busy_port: int) -> None:
    cases = mistakes(busy_port)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda c: run_mistake(workdir, *c), enumerate(cases)))
    wrong = []
    for mistake, answer in zip(cases, answers, strict=True):
        said = answer.said
        line = said[0] if said else ""
        problems = [
            f"exit {answer.code}" if answer.code != 2 else "",
            "a traceback" if "Traceback" in answer.output else "",
            f"{len(said)} lines" if len(said) != 1 else "",
            "a secret" if any(s in answer.output for s in (TOKEN, SECRET, DB_PASSWORD)) else "",
            *(f"no {name!r}" for name in mistake.names if name not in line),
        ]
        if any(problems):
            found = ", ".join(p for p in problems if p)
            wrong.append(f"{mistake.what} ({' '.join(mistake.argv)}): {found}\n{answer.output}")
    assert not wrong, "\n\n".join(wrong)
