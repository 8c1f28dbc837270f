"""`escbridge completion bash|zsh`: the script completes what a user types, in a real shell.

bash sources the script and its completion function is driven the way bash drives it on Tab
(COMP_WORDS, COMP_CWORD); the answer is what the user would see offered.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from escbridge.cli import COMMANDS, main
from escbridge.cli.completion import completion_script

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")

# offer WORDS...: complete the last word of `WORDS` as bash would on Tab, print one offer a line
DRIVER = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
COMPREPLY=()
_shtab_escbridge escbridge "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "escbridge.bash"
    path.write_text(completion_script("bash"), encoding="utf-8")
    return path


def offers(script: Path, line: str, cwd: Path) -> list[str]:
    """What bash offers for the last word of ``line`` (``""`` at the end: a new word)."""
    if BASH is None:
        pytest.skip("bash is not installed")
    words = line.split(" ")
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", DRIVER, "offer", str(script), *words],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return [w for w in done.stdout.splitlines() if w]


def test_commands_and_options_complete(bash_script: Path, tmp_path: Path) -> None:
    assert offers(bash_script, "escbridge sy", tmp_path) == ["sync"]
    assert offers(bash_script, "escbridge sync --dr", tmp_path) == ["--dry-run"]
    assert set(offers(bash_script, "escbridge ", tmp_path)) == {c[0] for c in COMMANDS}
    assert offers(bash_script, "escbridge db ", tmp_path) == ["upgrade", "status"]
    assert offers(bash_script, "escbridge completion ", tmp_path) == ["bash", "zsh"]


def test_choices_complete(bash_script: Path, tmp_path: Path) -> None:
    assert set(offers(bash_script, "escbridge report --format ", tmp_path)) == {
        "text",
        "json",
        "csv",
        "html",
    }


def test_log_levels_complete_in_the_case_help_shows(bash_script: Path, tmp_path: Path) -> None:
    assert offers(bash_script, "escbridge worker --log-level ", tmp_path) == [
        "debug",
        "info",
        "warning",
        "error",
    ]
    assert offers(bash_script, "escbridge sync --log-level w", tmp_path) == ["warning"]


def test_file_options_complete_files_and_init_folders(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text("", encoding="utf-8")
    (tmp_path / "maildir").mkdir()
    assert offers(bash_script, "escbridge validate --matrix matr", tmp_path) == ["matrix.yaml"]
    assert offers(bash_script, "escbridge explain --config matr", tmp_path) == ["matrix.yaml"]
    assert offers(bash_script, "escbridge explain matr", tmp_path) == ["matrix.yaml"]
    assert offers(bash_script, "escbridge init ma", tmp_path) == ["maildir"]  # folders only


def test_the_command_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert out == completion_script("bash")
    assert "complete -o bashdefault -F _shtab_escbridge escbridge" in out
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef escbridge")


def test_an_unknown_shell_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["completion", "fish"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fish'" in capsys.readouterr().err


@pytest.mark.skipif(
    ZSH is None, reason="zsh is not installed here, so its script cannot be parsed with zsh -n"
)
def test_the_zsh_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "_escbridge"
    script.write_text(completion_script("zsh"), encoding="utf-8")
    assert ZSH is not None
    done = subprocess.run([ZSH, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
