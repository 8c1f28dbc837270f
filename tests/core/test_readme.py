"""The README stays true for a new user with a fresh clone, checked mechanically.

- Every `escbridge …` command parses with the real argument parser, as `escbridge` itself
  would parse it: each line of a ``sh`` block, each ``$ `` line of an output block
  (``console``, ``text`` or untagged), a ``cron`` line, a systemd ``ExecStart=``
  (``.venv/bin/`` and other ``…/bin/`` prefixes, environment assignments, line continuations,
  pipes and redirections are handled). So do the inline code spans in prose that start with
  ``escbridge <command>``.
- Every ``make X`` names a target of the Makefile.
- Every ``pip install`` installs distributions of this checkout (none is on a package index),
  each a folder with a pyproject.toml, with extras that it declares; every ``python SCRIPT``
  names a script that has the options given.
- Every repository path the README names (``examples/…``, ``webhooks/deploy/…``,
  ``scripts/…``, ``benchmarks/…``, ``tests/…``, ``connectors/…``, ``src/…``, and the Layout
  table's entries under ``src/escbridge/``) exists; ``<name>`` in a path matches anything.
- Every YAML block whose first line is the comment ``# escbridge.yaml`` is a complete config
  that `escbridge validate` accepts (every section, each instance by its connector's model,
  routed by examples/matrix.yaml), and every one whose first line is ``# matrix.yaml`` a
  complete matrix. Fragments carry no such line and are not checked.
- Every ``json`` block is JSON, and every dotted Python name in inline code
  (`escbridge.errors.Conflict`) is a module or an attribute of one.
- ``escbridge matrix --help`` and ``escbridge --help`` name every matrix format.
- LICENSE is the Apache-2.0 text that pyproject.toml declares, and each distribution of the
  repository that declares a licence ships the same file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from escbridge.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")

SHELL_LANGS = {"", "sh", "bash", "shell", "console", "text", "cron", "ini"}
PROMPT_ONLY = {"", "console", "text"}  # output: only its `$ ` lines are commands
COMMAND_NAMES = {name for name, *_ in COMMANDS}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", ">|"}
SEPARATORS = {"&&", "||", "|", ";", "&"}
PATH_ROOTS = ("examples", "webhooks", "scripts", "benchmarks", "tests", "connectors", "src")
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUBSHELL = re.compile(r"\$\([^()]*\)")
_PATH = re.compile(
    r"(?<![\w/.\-~$@:])((?:" + "|".join(PATH_ROOTS) + r")/[^\s`'\"()|,;]*)"
)  # a path of the repository, not a URL path (`/webhooks/<instance>`) nor a module's
_INLINE = re.compile(r"`(escbridge [^`]+)`")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag, the README line of its first content line, text."""

    lang: str
    line: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class Command:
    """One simple command (pipes and `&&` split) from the README, and where it is written."""

    line: int
    words: tuple[str, ...]
    inline: bool = False  # a `code span` in prose, which may name a command without its arguments

    def __str__(self) -> str:
        return f"README.md:{self.line}: {' '.join(self.words)}"


def fenced_blocks(text: str = TEXT) -> list[Block]:
    """Every fenced block; the fence's indentation (inside a list item) is taken off its lines."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(opening["indent"])
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = tuple(line[indent:] if line[:indent].isspace() else line for line in lines[start:i])
        blocks.append(Block(opening["lang"], start + 1, body))
        i += 1
    return blocks


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(README line, line) with backslash continuations joined; a command's line is its first."""
    pending: list[str] = []
    first = 0
    for offset, raw in enumerate(block.lines):
        if not pending:
            first = block.line + offset
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        yield first, " ".join(pending)
        pending = []
    if pending:
        yield first, " ".join(pending)


def _command_text(lang: str, line: str) -> str | None:
    """The shell text of one logical line of a block in ``lang``, or None when it is output."""
    if line.startswith("$ "):
        return line[2:]
    if lang in PROMPT_ONLY or not line or line[0].isspace():
        return None  # output, or an indented line of a multi-line argument
    if lang == "cron":
        fields = line.split(None, 5)
        return fields[5] if len(fields) == 6 and not line.startswith("#") else None
    if lang == "ini":
        return line.removeprefix("ExecStart=") if line.startswith("ExecStart=") else None
    return line


def _simple_commands(line: int, shell: str) -> Iterator[Command]:
    """Split a shell line into simple commands, without redirections and assignments."""
    lexer = shlex.shlex(_SUBSHELL.sub("X", shell), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError:  # a quote left open: a multi-line argument (curl -d '{…}'), or output
        tokens = shell.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in SEPARATORS:
            yield from _one(line, words)
            words = []
        elif token in REDIRECTS:
            i += 1  # and its target
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in REDIRECTS:
            pass  # the `2` of `2>&1`
        else:
            words.append(token)
        i += 1
    yield from _one(line, words)


def _one(line: int, words: list[str]) -> Iterator[Command]:
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words:
        yield Command(line, (words[0].rsplit("/bin/", 1)[-1], *words[1:]))


def readme_commands(text: str = TEXT) -> list[Command]:
    """Every simple command of the README's shell blocks, then its inline `escbridge …` spans."""
    found: list[Command] = []
    for block in fenced_blocks(text):
        if block.lang not in SHELL_LANGS:
            continue
        for first, logical in _logical_lines(block):
            shell = _command_text(block.lang, logical)
            if shell and shell.strip():
                found.extend(_simple_commands(first, shell))
    inside = {b.line + i for b in fenced_blocks(text) for i in range(-1, len(b.lines) + 1)}
    for number, prose in enumerate(text.splitlines(), start=1):
        if number in inside or prose.startswith(("    ", "\t")):
            continue
        for span in _INLINE.findall(prose):
            words = tuple(span.split())
            if len(words) > 2 and words[1] in COMMAND_NAMES:  # not a family: `escbridge db`
                found.append(Command(number, words, inline=True))
    return found


COMMANDS_FOUND = readme_commands()
ESCBRIDGE = [c for c in COMMANDS_FOUND if c.words[0] == "escbridge"]
MAKE = [c for c in COMMANDS_FOUND if c.words[0] == "make"]
PIP = [c for c in COMMANDS_FOUND if c.words[:2] == ("pip", "install")]
SCRIPTS = [c for c in COMMANDS_FOUND if c.words[0] == "python" and c.words[1:2] != ("-m",)]


def parse_error(words: tuple[str, ...]) -> str | None:
    """What argparse says about these arguments, chosen as `escbridge.cli.main` chooses."""
    args = list(words)
    selected = next((w for w in args if not w.startswith("-")), None)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser(selected).parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_the_readme_has_commands_of_every_kind() -> None:
    """The extraction itself works: the checks below are not vacuously green."""
    assert len(ESCBRIDGE) > 40
    assert {c.words[1] for c in ESCBRIDGE} >= {"init", "validate", "explain", "sync", "serve"}
    assert MAKE and PIP and SCRIPTS


@pytest.mark.parametrize("command", ESCBRIDGE, ids=str)
def test_every_escbridge_command_parses(command: Command) -> None:
    problem = parse_error(command.words[1:])
    if command.inline and problem and "required" in problem:
        return  # prose naming a command: "then `escbridge jobs retry`"
    assert problem is None, f"{command}\n  escbridge says: {problem}"


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, flags=re.M))


@pytest.mark.parametrize("command", MAKE, ids=str)
def test_every_make_target_exists(command: Command) -> None:
    targets = [w for w in command.words[1:] if not w.startswith("-") and "=" not in w]
    missing = sorted(set(targets) - _make_targets())
    assert targets and not missing, f"{command}: no such Makefile target {missing}"


@pytest.mark.parametrize("command", PIP, ids=str)
def test_every_pip_install_is_of_this_checkout(command: Command) -> None:
    """Nothing of escbridge is on a package index: each requirement is a folder of the clone."""
    requirements = [w for w in command.words[2:] if not w.startswith("-")]
    assert requirements, command
    for requirement in requirements:
        folder, _, extras = requirement.partition("[")
        assert folder.startswith("."), f"{command}: {requirement!r} is not on any package index"
        project = ROOT / folder / "pyproject.toml"
        assert project.is_file(), f"{command}: {folder} has no pyproject.toml"
        declared = tomllib.loads(project.read_text(encoding="utf-8"))["project"].get(
            "optional-dependencies", {}
        )
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in declared, f"{command}: {folder} has no extra {extra!r}"


@pytest.mark.parametrize("command", SCRIPTS, ids=str)
def test_every_script_exists_with_its_options(command: Command) -> None:
    script = ROOT / command.words[1]
    assert script.is_file(), f"{command}: no such script"
    source = script.read_text(encoding="utf-8")
    for option in (w.split("=")[0] for w in command.words[2:] if w.startswith("--")):
        assert f'"{option}"' in source, f"{command}: {script.name} has no option {option}"


def readme_paths(text: str = TEXT) -> list[tuple[int, str]]:
    """(line, path) of every repository path the README names, trailing punctuation off."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for path in _PATH.findall(line):
            path = path.rstrip(".:")
            if "…" not in path and "*" not in path:
                found.append((number, path))
    return found


def layout_paths(text: str = TEXT) -> list[tuple[int, str]]:
    """The Layout table's first column, relative to src/escbridge/."""
    found = []
    rows = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("| `src/escbridge/` |"):
            rows = True
        elif rows and line.startswith("| `"):
            found.append((number, "src/escbridge/" + line.split("`")[1]))
        elif rows and not line.startswith("|"):
            break
    return found


@pytest.mark.parametrize(("line", "path"), readme_paths() + layout_paths(), ids=lambda v: str(v))
def test_every_named_path_exists(line: int, path: str) -> None:
    """`<name>` and an upper-case placeholder (`benchmarks/NAME.py`) match anything."""
    pattern = re.sub(r"<[^>]*>|[A-Z]{3,}(?=\.)", "*", path.rstrip("/"))
    assert list(ROOT.glob(pattern)), f"README.md:{line}: {path} does not exist"


def test_paths_are_found() -> None:
    named = {p for _, p in readme_paths()}
    assert {"examples/matrix.yaml", "webhooks/deploy/nginx.conf"} <= named
    assert len(layout_paths()) >= 10


_DOTTED = re.compile(r"`(escbridge\w*(?:\.\w+)+)(?![\w.-])")  # not `escbridge.db.writer-lock`
NOT_PYTHON = {"escbridge.yaml", "escbridge.db"}  # file names in the same spelling


def readme_python_names(text: str = TEXT) -> list[tuple[int, str]]:
    """(line, name) of every dotted Python name in inline code: `escbridge.errors.Conflict`."""
    return [
        (number, name)
        for number, line in enumerate(text.splitlines(), start=1)
        for name in _DOTTED.findall(line)
        if name not in NOT_PYTHON
    ]


@pytest.mark.parametrize(("line", "name"), readme_python_names(), ids=lambda v: str(v))
def test_every_python_name_resolves(line: int, name: str) -> None:
    """A module, or an attribute of one; `escbridge.connectors` is the entry-point group."""
    from escbridge.connector.registry import ENTRY_POINT_GROUP

    if name == ENTRY_POINT_GROUP:
        return
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(found, attribute), f"README.md:{line}: {name} does not exist"
            found = getattr(found, attribute)
        return
    pytest.fail(f"README.md:{line}: no module of {name} exists")


def yaml_blocks(marker: str) -> list[Block]:
    return [
        b
        for b in fenced_blocks()
        if b.lang in {"yaml", "yml"} and b.lines and b.lines[0].strip() == f"# {marker}"
    ]


CONFIGS = yaml_blocks("escbridge.yaml")
MATRICES = yaml_blocks("matrix.yaml")


def test_config_and_matrix_blocks_are_marked() -> None:
    assert len(CONFIGS) >= 3 and MATRICES


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: f"README.md:{b.line}")
def test_every_config_block_validates(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `escbridge validate escbridge.yaml` reads it, beside the example matrix."""
    from escbridge.cli.connectors import validate_config

    for variable in re.findall(r"\$\{(\w+)\}", block.text):
        monkeypatch.setenv(variable, "readme-check-" + "x" * 32)
    (tmp_path / "escbridge.yaml").write_text(block.text, encoding="utf-8")
    (tmp_path / "matrix.yaml").write_bytes((ROOT / "examples" / "matrix.yaml").read_bytes())
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = validate_config(tmp_path / "escbridge.yaml")
    assert code == 0, f"README.md:{block.line}: escbridge validate says\n{err.getvalue()}"


@pytest.mark.parametrize("block", MATRICES, ids=lambda b: f"README.md:{b.line}")
def test_every_matrix_block_validates(block: Block, tmp_path: Path) -> None:
    """As `escbridge validate matrix.yaml` reads it: no error, no warning."""
    (tmp_path / "matrix.yaml").write_text(block.text, encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["validate", str(tmp_path / "matrix.yaml")])
    assert code == 0, f"README.md:{block.line}: escbridge validate says\n{err.getvalue()}"


@pytest.mark.parametrize(
    "block", [b for b in fenced_blocks() if b.lang == "json"], ids=lambda b: f"README.md:{b.line}"
)
def test_every_json_block_is_json(block: Block) -> None:
    json.loads(block.text)


def test_matrix_help_names_every_format() -> None:
    """`escbridge --help` and the words of `escbridge matrix --help` name every format there is."""
    from escbridge.cli.matrix import MATRIX_FORMATS

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser("matrix").parse_args(["matrix", "--help"])
    prose = re.sub(r"\{[^}]*\}", "", out.getvalue())  # not the generated {a,b,…} choices
    summary = next(help_text for name, help_text, *_ in COMMANDS if name == "matrix")
    for name in MATRIX_FORMATS:
        assert re.search(rf"\b{name}\b", prose, flags=re.I), f"matrix --help omits {name}"
        assert re.search(rf"\b{name}\b", summary, flags=re.I), f"escbridge --help omits {name}"


def test_license_is_apache_2_everywhere_one_is_declared() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for project in [ROOT, *ROOT.glob("connectors/*"), ROOT / "webhooks", *ROOT.glob("examples/*")]:
        toml = project / "pyproject.toml"
        if not toml.is_file():
            continue
        declared = tomllib.loads(toml.read_text(encoding="utf-8"))["project"].get("license")
        if declared is None:
            continue
        assert declared == "Apache-2.0", toml
        shipped = project / "LICENSE"
        assert shipped.is_file(), f"{toml} declares {declared} but {project} has no LICENSE"
        assert shipped.read_text(encoding="utf-8") == text, f"{shipped} differs from LICENSE"


def test_the_checks_catch_mistakes() -> None:
    """The checker itself: a wrong flag, a continuation, a prompt, a pipe, a missing path."""
    sample = "\n".join(
        [
            "```sh",
            ".venv/bin/escbridge matrix examples/matrix.yaml \\",
            "    --format pdf                 # not a format",
            "ESCBRIDGE_CONFIG=x escbridge sync --loop --interval 5m | tail -1",
            "```",
            "```console",
            "$ escbridge nosuch",
            "escbridge output, not a command",
            "```",
            "See `escbridge report --sinse 7d` and examples/nothing.yaml.",
        ]
    )
    commands = readme_commands(sample)
    assert [(c.line, c.words[:2]) for c in commands] == [
        (2, ("escbridge", "matrix")),
        (4, ("escbridge", "sync")),
        (4, ("tail", "-1")),
        (7, ("escbridge", "nosuch")),
        (10, ("escbridge", "report")),
    ]
    problems = [parse_error(c.words[1:]) for c in commands if c.words[0] == "escbridge"]
    assert problems[0] is not None and "pdf" in problems[0]
    assert problems[1] is None
    assert problems[2] is not None and "nosuch" in problems[2]
    assert problems[3] is not None and "--sinse" in problems[3]
    assert readme_paths(sample) == [(2, "examples/matrix.yaml"), (10, "examples/nothing.yaml")]


def test_the_demo_matrix_is_a_copy_of_the_example() -> None:
    """The README says so twice (the demo section, the Layout table)."""
    assert "a copy of `examples/matrix.yaml`" in TEXT
    demo = ROOT / "src" / "escbridge" / "templates" / "demo-matrix.yaml"
    assert demo.read_bytes() == (ROOT / "examples" / "matrix.yaml").read_bytes()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_link_leads_somewhere() -> None:
    """`[text](#anchor)` names a heading; `[text](path)` a file of the repository."""
    outside = {b.line + i for b in fenced_blocks() for i in range(len(b.lines))}
    headings = [
        line.lstrip("#")
        for number, line in enumerate(TEXT.splitlines(), start=1)
        if line.startswith("#") and number not in outside
    ]
    anchors = {_slug(h) for h in headings}
    for target in re.findall(r"\]\(([^)\s]+)\)", TEXT):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"no heading has the anchor {target}"
        else:
            assert (ROOT / target.split("#")[0]).exists(), f"{target} does not exist"


def test_the_connectors_output_is_what_escbridge_prints() -> None:
    """The `$ escbridge connectors` example: its lines are the installed Zendesk plugin's."""
    block = next(b for b in fenced_blocks() if b.lines and b.lines[0] == "$ escbridge connectors")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["connectors"]) == 0
    printed = out.getvalue().splitlines()
    for line in block.lines[1:]:
        assert line in printed, f"README.md:{block.line}: `escbridge connectors` lacks {line!r}"
