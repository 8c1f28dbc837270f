"""What the documentation says, read mechanically: pages, fenced blocks, commands, paths, markers.

The pages are README.md and every docs/**/*.md (the reference pages are generated at build time
by scripts/docs_reference.py and are not on disk). Every finding carries ``page:line`` so a
failure names the line to fix. The checks themselves are in test_snippets.py (each snippet
parses or validates) and test_run.py (the blocks marked ``<!-- run: NAME -->`` are executed).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

from escbridge.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]

SHELL_LANGS = {"", "sh", "bash", "shell", "console", "text", "cron", "ini"}
PROMPT_ONLY = {"", "console", "text"}  # output: only its `$ ` lines are commands
COMMAND_NAMES = {name for name, *_ in COMMANDS}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", ">|"}
SEPARATORS = {"&&", "||", "|", ";", "&"}
PATH_ROOTS = (
    "examples",
    "webhooks",
    "scripts",
    "benchmarks",
    "tests",
    "connectors",
    "src",
    "deploy",
    "docs",
)
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)(?:\s+[^`]*)?\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUBSHELL = re.compile(r"\$\([^()]*\)")
_PATH = re.compile(
    r"(?<![\w/.\-~$@:])((?:" + "|".join(PATH_ROOTS) + r")/[^\s`'\"()|,;]*)"
)  # a path of the repository, not a URL path (`/webhooks/<instance>`) nor a module's
_INLINE = re.compile(r"`(escbridge [^`]+)`")
_SNIPPET = re.compile(r"^\s*-+8<-+\s+\"(?P<path>[^\"]+)\"")  # pymdownx.snippets: --8<-- "file"


@cache
def reference_module() -> ModuleType:
    """scripts/docs_reference.py, the mkdocs hook that writes docs/reference/ at build time."""
    path = ROOT / "scripts" / "docs_reference.py"
    spec = importlib.util.spec_from_file_location("docs_reference", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def generated_pages() -> set[str]:
    """The reference pages as repository paths (docs/reference/cli.md …): not on disk."""
    return {f"docs/{name}" for name in reference_module().PAGES}


@dataclass(frozen=True)
class Page:
    """One Markdown file of the documentation, by its repository path."""

    path: str
    text: str

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def page_paths() -> list[str]:
    """README.md, then every docs page in path order."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return ["README.md", *docs] if (ROOT / "README.md").is_file() else docs


@cache
def pages() -> tuple[Page, ...]:
    return tuple(Page(p, (ROOT / p).read_text(encoding="utf-8")) for p in page_paths())


@dataclass(frozen=True)
class Block:
    """One fenced block: its page, language tag, the line of its first content line, its text,
    and the HTML comment just above its fence (``run: getting-started``, ``output``), if any."""

    page: str
    lang: str
    line: int
    lines: tuple[str, ...]
    marker: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Command:
    """One simple command (pipes and `&&` split) from a page, and where it is written."""

    page: str
    line: int
    words: tuple[str, ...]
    inline: bool = False  # a `code span` in prose, which may name a command without its arguments

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.words)}"


def _marker_above(lines: list[str], fence: int) -> str | None:
    """The ``<!-- … -->`` comment on the nearest non-blank line above the fence, if it is one."""
    i = fence - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    found = _MARKER.match(lines[i]) if i >= 0 else None
    return found["body"] if found else None


def fenced_blocks(text: str, page: str = "README.md") -> list[Block]:
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
        marker = _marker_above(lines, i)
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = tuple(line[indent:] if line[:indent].isspace() else line for line in lines[start:i])
        blocks.append(Block(page, opening["lang"], start + 1, body, marker))
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in fenced_blocks(p.text, p.path)]


def logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(page line, line) with backslash continuations joined; a command's line is its first."""
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


def _simple_commands(page: str, line: int, shell: str) -> Iterator[Command]:
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
            yield from _one(page, line, words)
            words = []
        elif token in REDIRECTS:
            i += 1  # and its target
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in REDIRECTS:
            pass  # the `2` of `2>&1`
        else:
            words.append(token)
        i += 1
    yield from _one(page, line, words)


def _one(page: str, line: int, words: list[str]) -> Iterator[Command]:
    while words and _ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return
    words = [words[0].rsplit("/bin/", 1)[-1], *words[1:]]
    if words[0] == "python3":
        words[0] = "python"
    if words[:3] == ["python", "-m", "pip"]:
        words = ["pip", *words[3:]]
    yield Command(page, line, tuple(words))


def commands(text: str, page: str = "README.md") -> list[Command]:
    """Every simple command of a page's shell blocks, then its inline `escbridge …` spans."""
    found: list[Command] = []
    blocks = fenced_blocks(text, page)
    for block in blocks:
        if block.lang not in SHELL_LANGS:
            continue
        for first, logical in logical_lines(block):
            shell = _command_text(block.lang, logical)
            if shell and shell.strip():
                found.extend(_simple_commands(page, first, shell))
    inside = {b.line + i for b in blocks for i in range(-1, len(b.lines) + 1)}
    for number, prose in enumerate(text.splitlines(), start=1):
        if number in inside:
            continue
        for span in _INLINE.findall(prose):
            words = tuple(span.split())
            if len(words) > 2 and words[1] in COMMAND_NAMES:  # not a family: `escbridge db`
                found.append(Command(page, number, words, inline=True))
    return found


def all_commands() -> list[Command]:
    return [c for p in pages() for c in commands(p.text, p.path)]


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


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, flags=re.M))


def distributions() -> dict[str, Path]:
    """Every distribution of this checkout by its normalised name: escbridge-zendesk → folder."""
    folders = [ROOT, *ROOT.glob("connectors/*"), ROOT / "webhooks", *ROOT.glob("examples/*")]
    found = {}
    for folder in folders:
        project = folder / "pyproject.toml"
        if project.is_file():
            name = tomllib.loads(project.read_text(encoding="utf-8"))["project"]["name"]
            found[normalise(name)] = folder
    return found


def normalise(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def paths(text: str, page: str = "README.md") -> list[tuple[str, str]]:
    """(page:line, path) of every repository path a page names, trailing punctuation and a
    line or section (``file.py:3:9``, ``file.py:config``) off."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for path in _PATH.findall(line):
            path = re.split(r"[:#]", path)[0].rstrip(".")  # `file.py:10` a line, `x.md#a` an anchor
            if "…" not in path and "*" not in path:
                found.append((f"{page}:{number}", path))
    return found


def layout_paths(text: str, page: str = "README.md") -> list[tuple[str, str]]:
    """A Layout table's first column (the table headed `src/escbridge/`), under src/escbridge/."""
    found = []
    rows = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("| `src/escbridge/` |"):
            rows = True
        elif rows and line.startswith("| `"):
            found.append((f"{page}:{number}", "src/escbridge/" + line.split("`")[1]))
        elif rows and not line.startswith("|"):
            rows = False
    return found


def snippet_includes(text: str, page: str) -> list[tuple[str, str]]:
    """(page:line, file) of every ``--8<-- "file"`` include, the file without its section."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        include = _SNIPPET.match(line)
        if include:
            found.append((f"{page}:{number}", re.sub(r":[\w-]+(:\d+)?$", "", include["path"])))
    return found


_DOTTED = re.compile(r"`(escbridge\w*(?:\.\w+)+)(?![\w.-])")  # not `escbridge.db.writer-lock`
#: file names spelt like a dotted name: `escbridge.yaml`, `escbridge.env`, `escbridge-serve.service`
FILE_SUFFIX = re.compile(r"\.(yaml|yml|db|env|conf|service|timer|toml|json|log|html|csv|example)$")


def python_names(text: str, page: str = "README.md") -> list[tuple[str, str]]:
    """(page:line, name) of every dotted Python name in inline code: `escbridge.errors.Conflict`."""
    return [
        (f"{page}:{number}", name)
        for number, line in enumerate(text.splitlines(), start=1)
        for name in _DOTTED.findall(line)
        if not FILE_SUFFIX.search(name)
    ]


def yaml_blocks(marker: str) -> list[Block]:
    """The complete files: YAML blocks whose first line is ``# escbridge.yaml`` (the marker)."""
    return [
        b
        for b in all_blocks()
        if b.lang in {"yaml", "yml"} and b.lines and b.lines[0].strip() == f"# {marker}"
    ]


def slug(heading: str) -> str:
    """The anchor of a heading, GitHub's and mkdocs' alike for plain words: lower case,
    punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


_EXPLICIT_ID = re.compile(r"\{\s*#([\w-]+)\s*\}\s*$")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (an explicit ``{ #id }`` wins), outside fenced blocks."""
    inside = {b.line + i for b in fenced_blocks(text) for i in range(len(b.lines))}
    found = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#") and number not in inside:
            heading = line.lstrip("#")
            explicit = _EXPLICIT_ID.search(heading)
            found.add(explicit[1] if explicit else slug(heading))
    return found


# --- blocks the suite runs: <!-- run: NAME [exit=N] --> and their <!-- output --> -----------

_RUN = re.compile(r"^run:\s*(?P<name>[\w.-]+)(?:\s+exit=(?P<exit>\d+))?$")


@dataclass(frozen=True)
class Step:
    """One script of a run sequence: its shell text, the status and output it must give."""

    where: str
    script: str
    exit: int = 0
    expected: tuple[str, ...] | None = None  # None: only the exit status is checked


@dataclass(frozen=True)
class RunSequence:
    """The blocks marked ``<!-- run: NAME -->`` of one page, in order."""

    name: str
    page: str
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return f"{self.page}: run {self.name}"


def run_marker(block: Block) -> tuple[str, int] | None:
    """(name, expected exit status) of a block marked to run; a malformed marker is an error."""
    if block.marker is None or not block.marker.startswith("run"):
        return None
    found = _RUN.match(block.marker)
    if not found:
        raise ValueError(f"{block.where}: write <!-- run: NAME --> or <!-- run: NAME exit=1 -->")
    return found["name"], int(found["exit"] or 0)


def _console_steps(block: Block, status: int) -> list[Step]:
    """Each `$ ` line of a console block, with the lines under it as its output."""
    steps: list[Step] = []
    script: list[str] = []
    output: list[str] = []
    line = block.line
    for offset, raw in enumerate(block.lines):
        if raw.startswith("$ "):
            if script:
                steps.append(Step(f"{block.page}:{line}", "\n".join(script), 0, tuple(output)))
            script, output, line = [raw[2:]], [], block.line + offset
        elif script and script[-1].endswith("\\") and not output:
            script.append(raw)  # a continuation of the command
        elif script:
            output.append(raw)
        else:
            raise ValueError(f"{block.where}: a run console block starts with a `$ ` line")
    if script:
        steps.append(Step(f"{block.page}:{line}", "\n".join(script), status, tuple(output)))
    return steps


def run_sequences(source: Iterable[Page] | None = None) -> list[RunSequence]:
    """Every run sequence of the docs (or of ``source``); a misplaced marker is a ValueError
    naming its line."""
    found: dict[str, list[Step]] = {}
    pages_of: dict[str, str] = {}
    for page in pages() if source is None else source:
        blocks = fenced_blocks(page.text, page.path)
        for index, block in enumerate(blocks):
            if block.marker == "output":
                previous = blocks[index - 1] if index else None
                if previous is None or run_marker(previous) is None:
                    raise ValueError(f"{block.where}: <!-- output --> follows no run block")
                if previous.lang == "console":
                    raise ValueError(f"{block.where}: a run console block holds its own output")
                continue
            marked = run_marker(block)
            if marked is None:
                continue
            name, status = marked
            if pages_of.setdefault(name, page.path) != page.path:
                raise ValueError(f"{block.where}: run {name} is already on {pages_of[name]}")
            steps = found.setdefault(name, [])
            if block.lang == "console":
                steps.extend(_console_steps(block, status))
                continue
            if block.lang not in {"sh", "bash", "shell"}:
                raise ValueError(f"{block.where}: only sh and console blocks run")
            after = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = after.lines if after and after.marker == "output" else None
            steps.append(Step(block.where, block.text, status, expected))
    return [RunSequence(name, pages_of[name], tuple(steps)) for name, steps in found.items()]


def output_matches(expected: tuple[str, ...], actual: str) -> bool:
    """Whether the printed text is the expected one, where a line that is only `…` stands for
    any lines (none included) and `…` in a line for any text; trailing spaces and trailing
    blank lines do not count."""
    want = _trimmed(expected)
    got = _trimmed(tuple(actual.splitlines()))
    patterns = [
        None if line.strip() == "…" else re.compile(".*".join(map(re.escape, line.split("…"))))
        for line in want
    ]

    @cache
    def match(i: int, j: int) -> bool:  # patterns[i:] against got[j:]
        if i == len(patterns):
            return j == len(got)
        pattern = patterns[i]
        if pattern is None:
            return any(match(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and pattern.fullmatch(got[j]) is not None and match(i + 1, j + 1)

    return match(0, 0)


def _trimmed(lines: tuple[str, ...]) -> tuple[str, ...]:
    stripped = [line.rstrip() for line in lines]
    while stripped and not stripped[-1]:
        stripped.pop()
    return tuple(stripped)
