"""The blocks the docs mark ``<!-- run: NAME -->`` are executed, as a user would type them.

Each sequence runs in its own fresh directory holding a copy of examples/ and a link .venv to
the environment running the suite (so `escbridge …`, `.venv/bin/escbridge …` and
`examples/matrix.yaml` work as in a fresh clone), with the real `escbridge` console script
first on PATH, SQLite, and no network but loopback: an HTTP request to anywhere else goes to a
closed loopback port and fails at once. A block must exit with the status its marker says (0
unless ``exit=N``) and, when an ``<!-- output -->`` block follows it, print what that block
holds (a ``…`` line matches any lines, ``…`` in a line any text). docs_pages.run_sequences
reads the markers.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from docs_pages import ROOT, Page, RunSequence, Step, output_matches, run_sequences
from polling import wait_for

VENV = Path(sys.prefix)  # the environment running the suite, where escbridge is installed
STEP_TIMEOUT = 300  # a guard against a block that never ends (serve, --loop), not a measure
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused

try:
    SEQUENCES = run_sequences()
    MARKER_PROBLEM = ""
except ValueError as problem:
    SEQUENCES, MARKER_PROBLEM = [], str(problem)


def test_run_markers_are_well_formed() -> None:
    assert not MARKER_PROBLEM, MARKER_PROBLEM


def workspace(base: Path) -> tuple[Path, dict[str, str]]:
    """A directory laid out like a fresh clone, and the environment a block runs with."""
    work = base / "work"
    work.mkdir()
    shutil.copytree(
        ROOT / "examples",
        work / "examples",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    (work / ".venv").symlink_to(VENV, target_is_directory=True)
    assert (VENV / "bin" / "escbridge").is_file(), f"no escbridge console script in {VENV}/bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCBRIDGE_")}
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        HOME=str(work),
        TZ="UTC",
        COLUMNS="80",
        LC_ALL="C.UTF-8",
        PYTHONDONTWRITEBYTECODE="1",
        NO_PROXY="127.0.0.1,localhost,::1",
        no_proxy="127.0.0.1,localhost,::1",
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[proxy] = CLOSED_PORT
    return work, env


def run_step(step: Step, sequence: str, work: Path, env: dict[str, str]) -> str | None:
    """What is wrong with one step when it runs, in words that name its line; None if right.

    The block runs in a session of its own and writes to a file, not a pipe: whatever it left
    running in the background (a sandbox) cannot hold the step open, and is stopped with it."""
    printed_to = work.parent / "printed.txt"
    with printed_to.open("wb") as printed:
        process = subprocess.Popen(
            ["bash", "-eo", "pipefail", "-c", step.script],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=printed,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status: int | None = process.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the block's group: it and its children
            process.wait()
    output = printed_to.read_text(encoding="utf-8", errors="replace")
    if status is None:
        return (
            f"{step.where}: run {sequence}: still running after {STEP_TIMEOUT} s; a run block "
            f"must end by itself (no serve, no --loop)\n--- the block ---\n{step.script}"
            f"--- what it printed ---\n{output}"
        )
    shown = f"--- the block ---\n{step.script.rstrip()}\n--- what it printed ---\n{output}"
    if status != step.exit:
        return (
            f"{step.where}: run {sequence}: exited {status}, the page expects "
            f"{step.exit}{' (mark it exit=N if meant)' if step.exit == 0 else ''}\n{shown}"
        )
    if step.expected is not None and not output_matches(step.expected, output):
        diff = "\n".join(
            difflib.unified_diff(
                list(step.expected),
                output.splitlines(),
                "the page's output block",
                "what it printed",
                lineterm="",
            )
        )
        return f"{step.where}: run {sequence}: the output differs (… matches anything)\n{diff}"
    return None


@pytest.mark.parametrize("sequence", SEQUENCES, ids=str)
def test_every_run_sequence_runs_as_written(sequence: RunSequence, tmp_path: Path) -> None:
    work, env = workspace(tmp_path)
    for step in sequence.steps:
        problem = run_step(step, sequence.name, work, env)
        assert problem is None, problem


SAMPLE = """\
<!-- run: sample -->
```sh
escbridge validate examples/matrix.yaml > /dev/null
echo one; echo "two words"; echo three
```

<!-- output -->
```text
one
…
three
```

<!-- run: sample exit=2 -->
```console
$ echo made > made.txt && cat made.txt
made
$ escbridge validate nosuch.yaml
…nosuch.yaml…
```
"""


def test_the_runner_runs_a_sample_and_says_what_is_wrong(tmp_path: Path) -> None:
    """The runner itself: a passing sequence passes; a wrong status or output names its line."""
    (sequence,) = run_sequences([Page("docs/sample.md", SAMPLE)])
    assert [(s.where, s.exit) for s in sequence.steps] == [
        ("docs/sample.md:3", 0),
        ("docs/sample.md:16", 0),
        ("docs/sample.md:18", 2),
    ]
    work, env = workspace(tmp_path)
    assert [run_step(s, "sample", work, env) for s in sequence.steps] == [None, None, None]

    wrong_output = Step("docs/x.md:5", "echo four", 0, ("five",))
    said = run_step(wrong_output, "sample", work, env)
    assert said is not None and said.startswith("docs/x.md:5: run sample: the output differs")
    assert "-five" in said and "+four" in said
    wrong_status = Step("docs/x.md:9", "escbridge validate nosuch.yaml", 0, None)
    said = run_step(wrong_status, "sample", work, env)
    assert said is not None and said.startswith("docs/x.md:9: run sample: exited 2")
    assert "nosuch.yaml" in said  # what escbridge printed is shown


def test_what_a_block_leaves_running_is_stopped_with_it(tmp_path: Path) -> None:
    """A background process does not hold the step open (the step ends with its script)."""
    work, env = workspace(tmp_path)
    step = Step("docs/x.md:1", "sleep 600 &\necho $! > sleeper.pid\necho started", 0, ("started",))
    assert run_step(step, "background", work, env) is None
    status = Path(f"/proc/{(work / 'sleeper.pid').read_text(encoding='utf-8').strip()}/status")

    def stopped() -> bool:  # gone, or dead and not yet reaped
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            return "State:\tZ" in status.read_text(encoding="utf-8")
        return True

    wait_for(stopped, timeout=30, what="the background sleep to be killed with its block")


def test_misplaced_markers_are_named() -> None:
    for page, problem in [
        ("<!-- output -->\n```text\nx\n```\n", "docs/m.md:3: <!-- output --> follows no run"),
        ("<!-- run: x y -->\n```sh\ntrue\n```\n", "docs/m.md:3: write <!-- run: NAME -->"),
        ("<!-- run: x -->\n```yaml\na: 1\n```\n", "docs/m.md:3: only sh and console blocks"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            run_sequences([Page("docs/m.md", page)])


def test_no_network_but_loopback(tmp_path: Path) -> None:
    """A block that reaches outside fails at once instead of hanging or depending on the net."""
    work, env = workspace(tmp_path)
    script = "python -c \"import requests; requests.get('https://example.com', timeout=30)\""
    said = run_step(Step("docs/x.md:1", script, 0, None), "net", work, env)
    assert said is not None and "ProxyError" in said


@pytest.mark.parametrize(
    ("expected", "printed", "matches"),
    [
        (("a", "b"), "a\nb\n", True),
        (("a", "b  ", ""), "a\nb\n\n", True),
        (("a", "…"), "a\n", True),
        (("a", "…", "z"), "a\nb\nc\nz\n", True),
        (("valid: … rules",), "valid: 12 rules\n", True),
        (("a", "b"), "a\nc\n", False),
        (("a",), "a\nb\n", False),
        (("… rules",), "12 levels\n", False),
        (("a.b",), "axb\n", False),  # no regular expression is read into the page's text
    ],
)
def test_output_comparison(expected: tuple[str, ...], printed: str, matches: bool) -> None:
    assert output_matches(expected, printed) is matches
