"""An unexpected error in a command is one line on stderr, never a traceback (issue 17):
no admin sees Python's insides from a documented command, and the line carries no input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import escbridge.cli.matrix as matrix_cli
from escbridge.cli import DEBUG_ENV, main


def _boom(args: argparse.Namespace) -> int:
    raise ValueError("password=hunter2 from the input")


def test_an_unexpected_error_is_one_line_without_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr(matrix_cli, "run_validate", _boom)
    assert main(["validate", "matrix.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("escbridge validate: unexpected error (ValueError at ")
    assert "in _boom" in lines[0] and f"{DEBUG_ENV}=1" in lines[0]
    assert "hunter2" not in err and "Traceback" not in err


def test_the_debug_switch_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    monkeypatch.setattr(matrix_cli, "run_validate", _boom)
    with pytest.raises(ValueError, match="hunter2"):
        main(["validate", "matrix.yaml"])


def test_ctrl_c_is_a_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(matrix_cli, "run_validate", interrupted)
    assert main(["validate", "matrix.yaml"]) == 130
    assert capsys.readouterr().err == "escbridge validate: interrupted\n"


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("0.0.0.0:8000", "is not an address: write --host 0.0.0.0 --port 8000"),
        ("999.1.1.1", "is not an address or a name this machine resolves"),
        ("192.0.2.1", "is not an address of this machine"),  # TEST-NET-1: never local
    ],
)
def test_a_host_serve_cannot_listen_on_is_invalid_input_not_a_bug(
    host: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", host, "--config", str(tmp_path / "never-read.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"escbridge serve: --host: {host} {says}" + err.split(says, 1)[1]
    assert len(err.strip().splitlines()) == 1 and "unexpected error" not in err
