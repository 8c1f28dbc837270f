"""The five distributions as a user gets them: built into a wheelhouse (scripts/dist.py, as
`make dist` does), installed into a fresh virtual environment with pip (no editable install, no
source tree on the path), and run from an empty folder: --version, connectors, init, validate,
explain, completion and the demo.

The dependencies come from the package index: if it cannot be reached the test fails and says
so (it does not skip: CI reaches the index, and a skipped install test proves nothing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Protocol

import pytest

import escbridge

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VERSION = escbridge.__version__
# distribution, its folder, its import package, the extras the demo needs
SHIPPED = (
    ("escbridge", ".", "escbridge", "[sandbox]"),
    ("escbridge-zendesk", "connectors/zendesk", "escbridge_zendesk", "[sandbox]"),
    ("escbridge-freshdesk", "connectors/freshdesk", "escbridge_freshdesk", "[sandbox]"),
    ("escbridge-zohodesk", "connectors/zohodesk", "escbridge_zohodesk", "[sandbox]"),
    ("escbridge-webhooks", "webhooks", "escbridge_webhooks", ""),
)


def _wheel(wheelhouse: Path, name: str) -> Path:
    return wheelhouse / f"{name.replace('-', '_')}-{VERSION}-py3-none-any.whl"


def _sdist(wheelhouse: Path, name: str) -> Path:
    return wheelhouse / f"{name.replace('-', '_')}-{VERSION}.tar.gz"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dist.py"), str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # each build fetches setuptools from the package index
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        pytest.fail(f"scripts/dist.py failed (is the package index reachable?):\n{tail}", False)
    return out


@pytest.fixture(scope="module")
def user_env(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh venv with the five installed from the wheelhouse; the environment to run it in."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        COLUMNS="100",
    )
    wanted = [f"{name}{extras}=={VERSION}" for name, _, _, extras in SHIPPED]
    # bounded waits (pip.conf may allow 180 s a try): an unreachable index fails within minutes
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--retries", "2"]
    command += ["--timeout", "60", "--find-links", str(wheelhouse), *wanted]
    pip = subprocess.run(command, capture_output=True, text=True, env=env)
    if pip.returncode != 0:
        tail = "\n".join((pip.stdout + pip.stderr).splitlines()[-25:])
        pytest.fail(
            "pip could not install the wheelhouse into a fresh venv. The dependencies come from "
            "the package index: is it reachable from here? (This test needs it and does not "
            f"skip.)\n$ pip install --find-links {wheelhouse} {' '.join(wanted)}\n{tail}",
            pytrace=False,
        )
    return env


class Run(Protocol):
    def __call__(self, *words: str, expect: int = 0) -> str: ...


@pytest.fixture
def run(user_env: dict[str, str], tmp_path: Path) -> Run:
    """Run a command of the venv in an empty folder, as a user at a prompt would."""

    def run(*words: str, expect: int = 0) -> str:
        done = subprocess.run(
            list(words), cwd=tmp_path, env=user_env, capture_output=True, text=True
        )
        out = done.stdout + done.stderr
        assert done.returncode == expect, f"$ {' '.join(words)} → {done.returncode}\n{out}"
        return out

    return run


def test_each_distribution_has_a_wheel_and_an_sdist_with_its_license(wheelhouse: Path) -> None:
    for name, _, _, _ in SHIPPED:
        with zipfile.ZipFile(_wheel(wheelhouse, name)) as wheel:
            dist_info = f"{name.replace('-', '_')}-{VERSION}.dist-info"
            assert f"{dist_info}/licenses/LICENSE" in wheel.namelist(), name
        with tarfile.open(_sdist(wheelhouse, name)) as sdist:
            top = f"{name.replace('-', '_')}-{VERSION}"
            assert f"{top}/LICENSE" in sdist.getnames(), name
            if name == "escbridge":
                assert f"{top}/README.md" in sdist.getnames()
    built = {p.name for p in wheelhouse.iterdir()}
    assert len(built) == 2 * len(SHIPPED), sorted(built)


def test_each_wheel_holds_every_file_of_its_package(wheelhouse: Path) -> None:
    """Templates, migrations, py.typed: what the source folder has, the wheel (built from the
    sdist) has too, so nothing the program reads at run time is left behind."""
    for name, folder, package, _ in SHIPPED:
        source = ROOT / folder / "src" / package
        files = {
            f"{package}/{p.relative_to(source).as_posix()}"
            for p in source.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
        with zipfile.ZipFile(_wheel(wheelhouse, name)) as wheel:
            missing = files - set(wheel.namelist())
        assert not missing, f"{name}: not in the wheel: {sorted(missing)}"


def test_installed_program_runs_from_the_venv_alone(run: Run, user_env: dict[str, str]) -> None:
    venv = Path(user_env["VIRTUAL_ENV"])
    where = run("python", "-c", "import escbridge, escbridge_webhooks; print(escbridge.__file__)")
    assert Path(where.strip()).is_relative_to(venv), where

    assert run("escbridge", "--version").strip() == (
        f"escbridge {VERSION} (freshdesk {VERSION}, zendesk {VERSION}, zohodesk {VERSION}, "
        f"webhooks {VERSION})"
    )
    listed = run("escbridge", "connectors")
    for name, _, _, _ in SHIPPED[1:4]:
        assert f"({name} {VERSION})" in listed, listed
    assert "complete -o bashdefault -F _shtab_escbridge escbridge" in run(
        "escbridge", "completion", "bash"
    )


def test_init_validate_and_explain(run: Run, tmp_path: Path) -> None:
    assert "wrote matrix.yaml" in run("escbridge", "init")
    assert "matrix.yaml: ok" in run("escbridge", "validate", "matrix.yaml")
    # the starter config validates through the installed Zendesk plugin: its placeholders are
    # what is left to write
    config = run("escbridge", "validate", expect=1)
    assert "instances.support.subdomain: 'your-subdomain' is the starter's placeholder" in config
    shutil.copy(ROOT / "examples" / "tickets" / "1001.json", tmp_path / "ticket.json")
    explained = run("escbridge", "explain", "ticket.json", "--helpdesk", "zendesk", "--brief")
    assert "ESCALATE l1 → l2" in explained and "by rule supervisor-requested" in explained


def test_the_demo_runs(run: Run) -> None:
    out = run("escbridge", "demo")
    assert "nothing is left running" in out, out
