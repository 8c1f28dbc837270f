"""The documentation stays true for a new user with a fresh clone, checked mechanically.

Over README.md and every docs/**/*.md (run one page with ``-k docs/matrix.md``):

- Every `escbridge …` command parses with the real argument parser, as `escbridge` itself
  would parse it: each line of a ``sh`` block, each ``$ `` line of an output block
  (``console``, ``text`` or untagged), a ``cron`` line, a systemd ``ExecStart=``
  (``.venv/bin/`` and other ``…/bin/`` prefixes, environment assignments, line continuations,
  pipes and redirections are handled). So do the inline code spans in prose that start with
  ``escbridge <command>``.
- Every ``make X`` names a target of the Makefile.
- Every ``pip install`` installs distributions of this checkout: a folder with a pyproject.toml
  (``pip install -e ./connectors/zendesk``) or a distribution's name (``pip install
  --find-links dist/ escbridge escbridge-zendesk``, the wheelhouse of ``make dist``), with extras
  that it declares; every ``python SCRIPT`` names a script that has the options given.
- Every repository path a page names (``examples/…``, ``deploy/…``, ``scripts/…``, …, and a
  Layout table's entries under ``src/escbridge/``) exists; ``<name>`` in a path matches
  anything; so does every file a ``--8<--`` snippet includes.
- Every YAML block whose first line is the comment ``# escbridge.yaml`` is a complete config
  that `escbridge validate` accepts (every section, each instance by its connector's model,
  routed by examples/matrix.yaml), and every one whose first line is ``# matrix.yaml`` a
  complete matrix. Fragments carry no such line and are not checked.
- Every ``json`` block is JSON, every ``toml`` block TOML, every ``python`` block compiles,
  and every dotted Python name in inline code (`escbridge.errors.Conflict`) is a module or an
  attribute of one.
- README.md's links lead somewhere (its anchors, files of the repository, a heading of a docs
  page); links between docs pages are checked by ``mkdocs build --strict`` (``make docs``).
- Each ``$ escbridge connectors`` example shows lines that `escbridge connectors` prints.

Blocks marked ``<!-- run: NAME -->`` are also executed: test_run.py.
- ``escbridge matrix --help`` and ``escbridge --help`` name every matrix format; LICENSE is the
  Apache-2.0 text that pyproject.toml declares, shipped by each distribution.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import textwrap
import tomllib
from pathlib import Path

import pytest
from docs_pages import (
    ROOT,
    Block,
    Command,
    all_blocks,
    all_commands,
    anchors,
    commands,
    distributions,
    fenced_blocks,
    generated_pages,
    layout_paths,
    make_targets,
    normalise,
    pages,
    parse_error,
    paths,
    python_names,
    snippet_includes,
    yaml_blocks,
)

from escbridge.cli import COMMANDS, build_parser, main

COMMANDS_FOUND = all_commands()
ESCBRIDGE = [c for c in COMMANDS_FOUND if c.words[0] == "escbridge"]
MAKE = [c for c in COMMANDS_FOUND if c.words[0] == "make"]
PIP = [c for c in COMMANDS_FOUND if c.words[:2] == ("pip", "install")]
SCRIPTS = [c for c in COMMANDS_FOUND if c.words[0] == "python" and c.words[1:2] != ("-m",)]
BLOCKS = all_blocks()


def test_the_docs_have_commands_of_every_kind() -> None:
    """The extraction itself works: the checks below are not vacuously green."""
    assert {p.path for p in pages()} >= {"README.md", "docs/index.md"}
    assert len(ESCBRIDGE) > 40
    assert {c.words[1] for c in ESCBRIDGE} >= {"init", "validate", "explain", "sync", "serve"}
    assert MAKE and PIP


@pytest.mark.parametrize("command", ESCBRIDGE, ids=str)
def test_every_escbridge_command_parses(command: Command) -> None:
    problem = parse_error(command.words[1:])
    if command.inline and problem and "required" in problem:
        return  # prose naming a command: "then `escbridge jobs retry`"
    assert problem is None, f"{command}\n  escbridge says: {problem}"


@pytest.mark.parametrize("command", MAKE, ids=str)
def test_every_make_target_exists(command: Command) -> None:
    targets = [w for w in command.words[1:] if not w.startswith("-") and "=" not in w]
    missing = sorted(set(targets) - make_targets())
    assert targets and not missing, f"{command}: no such Makefile target {missing}"


PIP_VALUED = {"-f", "--find-links", "-i", "--index-url", "--extra-index-url", "-c", "--constraint"}
WHEELHOUSE = {"dist", "dist/", "./dist", "./dist/"}  # where `make dist` writes the wheels


def _declared_extras(folder: Path) -> dict[str, list[str]]:
    project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    return extras


@pytest.mark.parametrize("command", PIP, ids=str)
def test_every_pip_install_is_of_this_checkout(command: Command) -> None:
    """Each requirement is a folder of the clone, or a distribution of it by name."""
    words = list(command.words[2:])
    requirements = []
    while words:
        word = words.pop(0)
        option, _, value = word.partition("=")
        if option in PIP_VALUED:
            value = value or (words.pop(0) if words else "")
            if option in {"-f", "--find-links"}:
                assert value in WHEELHOUSE, f"{command}: the wheelhouse is dist/, not {value!r}"
                assert "dist" in make_targets(), f"{command}: the Makefile has no `dist` target"
        elif not word.startswith("-"):
            requirements.append(word)
    assert requirements, command
    known = distributions()
    for requirement in requirements:
        name, _, extras = re.split(r"[<>=!~;]", requirement)[0].partition("[")
        if name.startswith("."):
            folder = ROOT / name
            assert (folder / "pyproject.toml").is_file(), f"{command}: {name} has no pyproject.toml"
        else:
            assert normalise(name) in known, f"{command}: {name!r} is no distribution of escbridge"
            folder = known[normalise(name)]
        declared = _declared_extras(folder)
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra.strip() in declared, f"{command}: {name} has no extra {extra!r}"


@pytest.mark.parametrize("command", SCRIPTS, ids=str)
def test_every_script_exists_with_its_options(command: Command) -> None:
    script = ROOT / command.words[1]
    assert script.is_file(), f"{command}: no such script"
    source = script.read_text(encoding="utf-8")
    for option in (w.split("=")[0] for w in command.words[2:] if w.startswith("--")):
        assert f'"{option}"' in source, f"{command}: {script.name} has no option {option}"


NAMED_PATHS = [
    found
    for p in pages()
    for found in paths(p.text, p.path) + layout_paths(p.text, p.path)
    + snippet_includes(p.text, p.path)
]  # fmt: skip


@pytest.mark.parametrize(("where", "path"), NAMED_PATHS, ids=lambda v: str(v))
def test_every_named_path_exists(where: str, path: str) -> None:
    """`<name>` and an upper-case placeholder (`benchmarks/NAME.py`) match anything."""
    if path.rstrip("/") in generated_pages():
        return  # docs/reference/…: written by the site build
    pattern = re.sub(r"<[^>]*>|[A-Z]{3,}(?=\.)", "*", path.rstrip("/"))
    assert list(ROOT.glob(pattern)), f"{where}: {path} does not exist"


def test_paths_are_found() -> None:
    named = {p for _, p in NAMED_PATHS}
    assert "examples/matrix.yaml" in named


@pytest.mark.parametrize(
    ("where", "name"),
    [found for p in pages() for found in python_names(p.text, p.path)],
    ids=lambda v: str(v),
)
def test_every_python_name_resolves(where: str, name: str) -> None:
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
            assert hasattr(found, attribute), f"{where}: {name} does not exist"
            found = getattr(found, attribute)
        return
    pytest.fail(f"{where}: no module of {name} exists")


CONFIGS = yaml_blocks("escbridge.yaml")
MATRICES = yaml_blocks("matrix.yaml")


def test_config_and_matrix_blocks_are_marked() -> None:
    assert CONFIGS and MATRICES


def _where(block: Block) -> str:
    return block.where


@pytest.mark.parametrize("block", CONFIGS, ids=_where)
def test_every_config_block_validates(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `escbridge validate escbridge.yaml` reads it, beside the example matrix."""
    from escbridge.cli.connectors import validate_config

    for variable in re.findall(r"\$\{(\w+)\}", block.text):
        monkeypatch.setenv(variable, "docs-check-" + "x" * 32)
    (tmp_path / "escbridge.yaml").write_text(block.text, encoding="utf-8")
    (tmp_path / "matrix.yaml").write_bytes((ROOT / "examples" / "matrix.yaml").read_bytes())
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = validate_config(tmp_path / "escbridge.yaml")
    assert code == 0, f"{block.where}: escbridge validate says\n{err.getvalue()}"


@pytest.mark.parametrize("block", MATRICES, ids=_where)
def test_every_matrix_block_validates(block: Block, tmp_path: Path) -> None:
    """As `escbridge validate matrix.yaml` reads it: no error, no warning."""
    (tmp_path / "matrix.yaml").write_text(block.text, encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["validate", str(tmp_path / "matrix.yaml")])
    assert code == 0, f"{block.where}: escbridge validate says\n{err.getvalue()}"


def _written(lang: str) -> list[Block]:
    """The blocks in ``lang`` written in the page, not included from a file (``--8<--``)."""
    return [b for b in BLOCKS if b.lang == lang and "--8<--" not in b.text]


@pytest.mark.parametrize("block", _written("json"), ids=_where)
def test_every_json_block_is_json(block: Block) -> None:
    try:
        json.loads(block.text)
    except json.JSONDecodeError as error:
        pytest.fail(f"{block.page}:{block.line + error.lineno - 1}: not JSON: {error.msg}")


@pytest.mark.parametrize("block", _written("toml"), ids=_where)
def test_every_toml_block_is_toml(block: Block) -> None:
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as error:
        pytest.fail(f"{block.where}: not TOML: {error}")


@pytest.mark.parametrize("block", _written("python"), ids=_where)
def test_every_python_block_compiles(block: Block) -> None:
    """Syntax only (an excerpt of a class may be indented); an included file (``--8<--``) is
    the real source and is tested as such."""
    try:
        compile(textwrap.dedent(block.text), block.where, "exec")
    except SyntaxError as error:
        pytest.fail(f"{block.page}:{block.line + (error.lineno or 1) - 1}: {error.msg}")


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
    for folder in distributions().values():
        toml = folder / "pyproject.toml"
        declared = tomllib.loads(toml.read_text(encoding="utf-8"))["project"].get("license")
        if declared is None:
            continue
        assert declared == "Apache-2.0", toml
        shipped = folder / "LICENSE"
        assert shipped.is_file(), f"{toml} declares {declared} but {folder} has no LICENSE"
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
            "<!-- output -->",
            '```console title="a console"',
            "$ escbridge nosuch",
            "escbridge output, not a command",
            "```",
            "See `escbridge report --sinse 7d` and examples/nothing.yaml.",
        ]
    )
    found = commands(sample, "docs/x.md")
    assert [(c.line, c.words[:2]) for c in found] == [
        (2, ("escbridge", "matrix")),
        (4, ("escbridge", "sync")),
        (4, ("tail", "-1")),
        (8, ("escbridge", "nosuch")),
        (11, ("escbridge", "report")),
    ]
    assert str(found[0]).startswith("docs/x.md:2: escbridge matrix")
    problems = [parse_error(c.words[1:]) for c in found if c.words[0] == "escbridge"]
    assert problems[0] is not None and "pdf" in problems[0]
    assert problems[1] is None
    assert problems[2] is not None and "nosuch" in problems[2]
    assert problems[3] is not None and "--sinse" in problems[3]
    assert paths(sample, "docs/x.md") == [
        ("docs/x.md:2", "examples/matrix.yaml"),
        ("docs/x.md:11", "examples/nothing.yaml"),
    ]
    headings = "# The `escbridge sync` run\n## Two { #second }\n```sh\n# a comment\n```\n"
    assert anchors(headings) == {"the-escbridge-sync-run", "second"}
    assert [(b.lang, b.marker) for b in fenced_blocks(sample)] == [
        ("sh", None),
        ("console", "output"),
    ]


def test_the_demo_matrix_is_a_copy_of_the_example() -> None:
    """The docs say so (`escbridge demo` enforces "a copy of `examples/matrix.yaml`")."""
    demo = ROOT / "src" / "escbridge" / "templates" / "demo-matrix.yaml"
    assert demo.read_bytes() == (ROOT / "examples" / "matrix.yaml").read_bytes()


def test_readme_links_lead_somewhere() -> None:
    """README.md is read on the forge, outside the site: `[text](#anchor)` names one of its
    headings, `[text](path)` a file of the repository, and `docs/x.md#anchor` a heading there."""
    readme = next((p for p in pages() if p.path == "README.md"), None)
    assert readme is not None
    for target in re.findall(r"\]\(([^)\s]+)\)", readme.text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in anchors(readme.text), f"README.md: no heading has the anchor {target}"
            continue
        assert (ROOT / path).exists(), f"README.md: {target} does not exist"
        if anchor and path.endswith(".md"):
            page = (ROOT / path).read_text(encoding="utf-8")
            assert anchor in anchors(page), f"README.md: {path} has no heading #{anchor}"


CONNECTORS_OUTPUT = [b for b in BLOCKS if b.lines and b.lines[0] == "$ escbridge connectors"]


@pytest.mark.parametrize("block", CONNECTORS_OUTPUT, ids=_where)
def test_the_connectors_output_is_what_escbridge_prints(block: Block) -> None:
    """A `$ escbridge connectors` example: its lines are those of the installed plugins."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["connectors"]) == 0
    printed = out.getvalue().splitlines()
    for line in block.lines[1:]:
        assert line in printed, f"{block.where}: `escbridge connectors` lacks {line!r}"
