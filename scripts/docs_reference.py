"""The reference pages of the documentation site, written from the code at every build.

An mkdocs hook (``hooks:`` in mkdocs.yml): ``on_files`` adds docs/reference/cli.md (from
``escbridge.cli.build_parser()``: every command, subcommand and option with its help),
docs/reference/config.md (escbridge.yaml: the file's model, ``processing:`` and each bundled
connector's instance settings, from their pydantic models' JSON schema) and
docs/reference/matrix.md (``escbridge.matrix.spec.MatrixSpec``'s JSON schema), and
docs/changelog.md (the root CHANGELOG.md, included). Nothing is copied
by hand, so nothing can go stale; tests/docs/test_reference.py checks that the CLI page names
every command and option. The pages exist only in the built site, never on disk.
"""

from __future__ import annotations

import argparse
import html
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from escbridge.calendar import WrittenDuration, read_duration
from escbridge.model import Priority

ROOT = Path(__file__).resolve().parents[1]
GENERATED_NOTE = (
    "_Generated from the code by `scripts/docs_reference.py` at every build of the site: "
    "it cannot drift from what escbridge accepts._\n"
)


# --- the command line -----------------------------------------------------------------------


def command_parsers() -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """(full command, its parser, its one-line help) for `escbridge` and every (sub)command,
    depth first in --help order; each command's module is imported to wire its options."""
    from escbridge.cli import COMMANDS, build_parser

    yield "escbridge", build_parser(), ""
    for name, help_text, *_ in COMMANDS:
        parser = _subparsers(build_parser(name))[name]
        yield from _walk(f"escbridge {name}", parser, help_text)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommand_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _walk(
    full: str, parser: argparse.ArgumentParser, help_text: str
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    yield full, parser, help_text
    helps = _subcommand_help(parser)
    for name, sub in _subparsers(parser).items():
        yield from _walk(f"{full} {name}", sub, helps.get(name, ""))


def _argument(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    """How the argument is written: ``--store PATH``, ``-n, --dry-run``, ``TICKET``."""
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    value = formatter._format_args(action, action.dest.upper())
    return ", ".join(f"{option} {value}" for option in action.option_strings)


#: A Markdown code span: a run of backticks, its text, the same run again.
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", flags=re.S)


def _plain(text: str) -> str:
    """Help and docstring text made safe as Markdown: ``<`` ``>`` ``&`` outside code spans
    escaped, since the HTML would otherwise swallow ``POST /webhooks/<instance>`` as a tag."""
    out, end = [], 0
    for span in _CODE_SPAN.finditer(text):
        out.append(html.escape(text[end : span.start()], quote=False))
        out.append(span.group(0))
        end = span.end()
    out.append(html.escape(text[end:], quote=False))
    return "".join(out)


def _cell(text: str) -> str:
    return _plain(" ".join(text.split())).replace("|", "\\|")


def cli_page() -> str:
    """Every command with its usage, description and a table of its arguments."""
    out = ["# Command line\n", GENERATED_NOTE]
    out.append("Every `escbridge` command, as `escbridge COMMAND --help` prints it.\n")
    for full, parser, help_text in command_parsers():
        depth = full.count(" ")
        out.append(f"{'#' * min(depth + 2, 4)} `{full}`\n")
        if help_text:
            out.append(f"{_plain(_sentence(help_text))}\n")
        out.append(f"```text\n{_usage(parser)}\n```\n")
        if parser.description:
            out.append(f"{_plain(parser.description.strip())}\n")
        formatter = parser._get_formatter()
        for group in parser._action_groups:
            rows = []
            for action in group._group_actions:
                if action.help == argparse.SUPPRESS or isinstance(
                    action, argparse._SubParsersAction | argparse._HelpAction
                ):
                    continue
                described = formatter._expand_help(action) if action.help else ""
                if action.choices and not isinstance(action.choices, range):
                    listed = ", ".join(f"`{choice}`" for choice in action.choices)
                    described = f"{described}; one of {listed}" if described else f"one of {listed}"
                rows.append(f"| `{_argument(action, formatter)}` | {_cell(described)} |")
            if rows:
                title = group.title or "arguments"
                out.append(f"**{title}**\n\n| argument | meaning |\n|---|---|\n" + "\n".join(rows))
                out.append("")
        subcommands = _subcommand_help(parser)
        if subcommands and depth > 0:
            listed = "\n".join(
                f"| `{full} {name}` | {_cell(text)} |" for name, text in subcommands.items()
            )
            out.append(f"| subcommand | does |\n|---|---|\n{listed}\n")
    return "\n".join(out)


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage without its ``usage: `` prefix, continuation lines moved left to match."""
    prefix = "usage: "
    lines = parser.format_usage().strip().splitlines()
    return "\n".join(
        line.removeprefix(prefix if i == 0 else " " * len(prefix)) for i, line in enumerate(lines)
    )


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# --- files: escbridge.yaml and the matrix --------------------------------------------------


class _Schema(GenerateJsonSchema):
    """Pydantic's JSON schema, with what an admin writes rather than what it is read into: a
    matrix duration (``30m``, ``4h``, ``1d 2h``) as a string, not "anything", and a priority
    by its name (``urgent``), not by its number."""

    def function_plain_schema(self, schema: core_schema.PlainValidatorFunctionSchema) -> Any:
        if schema["function"].get("function") is read_duration:
            return {"type": "string", "format": "duration", "examples": ["30m", "4h", "1d 2h"]}
        return super().function_plain_schema(schema)

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> Any:
        if schema["function"].get("function") == Priority.parse:
            return {"type": "string", "enum": [p.label for p in Priority]}
        return super().function_before_schema(schema)

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, WrittenDuration):
            return dft.text
        return super().encode_default(dft)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(schema_generator=_Schema)
    return schema


class Tables:
    """One schema rendered as a table per model; anchors carry ``prefix`` so that several
    schemas (each connector's) can share a page."""

    def __init__(self, schema: Mapping[str, Any], prefix: str = "") -> None:
        self.schema = schema
        self.defs: dict[str, Any] = dict(schema.get("$defs", {}))
        self.prefix = prefix

    def anchor(self, name: str) -> str:
        return self.prefix + _title(name).lower()

    def type_of(self, schema: Mapping[str, Any]) -> str:
        """A field's type as a reader says it: ``string``, ``list of string``, ``map of Level``."""
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            target = self.defs.get(name, {})
            if "enum" in target:
                return self.type_of(target)
            return f"[{_title(name)}](#{self.anchor(name)})"
        if "anyOf" in schema:
            kinds = [self.type_of(s) for s in schema["anyOf"] if s.get("type") != "null"]
            optional = any(s.get("type") == "null" for s in schema["anyOf"])
            return " or ".join(kinds) + (" or null" if optional else "")
        if "enum" in schema:
            return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        if "const" in schema:
            return f"`{json.dumps(schema['const'])}`"
        kind = schema.get("type")
        if kind == "array":
            return f"list of {self.type_of(schema.get('items', {}))}"
        if kind == "object":
            values = schema.get("additionalProperties")
            if isinstance(values, dict) and values:
                return f"map of {self.type_of(values)}"
            return "mapping"
        named = {"duration": "duration", "date": "date", "password": "secret string"}
        if kind == "string" and schema.get("format") in named:
            return named[schema["format"]]
        return str(kind) if kind else "any"

    def render(self, title: str, anchor: str, heading: str = "##", intro: str = "") -> str:
        """The root model under ``title`` (``intro`` first), then every model it refers to, one
        heading lower."""
        models = [(title, anchor, self.schema)] + [
            (_title(name), self.anchor(name), model)
            for name, model in self.defs.items()
            if model.get("type") == "object"
        ]
        out = []
        for index, (name, slug, model) in enumerate(models):
            level = heading if index == 0 else heading + "#"
            out.append(f"{level} {name} {{ #{slug} }}\n")
            if index == 0 and intro:
                out.append(f"{_plain(intro)}\n")
            if model.get("description"):
                out.append(_prose(model["description"]))
            required = set(model.get("required", []))
            rows = []
            for key, field in model.get("properties", {}).items():
                if key in required:
                    default = "**required**"
                elif "default" in field:
                    default = f"`{json.dumps(field['default'])}`"
                else:
                    default = "empty"
                notes = "; ".join(p for p in (field.get("description", ""), _limits(field)) if p)
                rows.append(f"| `{key}` | {self.type_of(field)} | {default} | {_cell(notes)} |")
            if rows:
                out.append(
                    "| key | type | default | notes |\n|---|---|---|---|\n" + "\n".join(rows)
                )
            if model.get("additionalProperties") is False:
                out.append("\nAny other key is an error; escbridge suggests the closest known one.")
            out.append("")
        return "\n".join(out)


def _limits(schema: Mapping[str, Any]) -> str:
    """A field's constraints in words: ``≥ 1; ≤ 20``, ``matches `^[a-z]+$```."""
    words = []
    if schema.get("minLength") == 1:
        words.append("not empty")
    elif "minLength" in schema:
        words.append(f"at least {schema['minLength']} characters")
    for key, say in (
        ("minimum", "≥ {}"),
        ("exclusiveMinimum", "> {}"),
        ("maximum", "≤ {}"),
        ("maxLength", "at most {} characters"),
        ("minItems", "at least {} items"),
        ("pattern", "matches `{}`"),
    ):
        if key in schema:
            words.append(say.format(schema[key]))
    for alternative in schema.get("anyOf", []):
        words.extend(c for c in [_limits(alternative)] if c)
    if schema.get("format") == "duration":
        words.append("e.g. `30m`, `4h`, `1d 2h`")
    return "; ".join(words)


def _title(name: str) -> str:
    """A model's name for a reader: ``LevelSpec`` → Level, ``ZendeskConfig`` → Zendesk."""
    bare = name.lstrip("_")
    for suffix in ("Spec", "Config"):
        if bare.endswith(suffix) and bare != suffix:
            return bare.removesuffix(suffix)
    return bare


def _prose(docstring: str) -> str:
    """A model's docstring as Markdown: a paragraph after one ending ``::`` is a code block."""
    out = []
    literal = False
    for paragraph in docstring.strip().split("\n\n"):
        if literal:
            out.append(f"```text\n{paragraph}\n```")
        else:
            text = paragraph.removesuffix("::") + (":" if paragraph.endswith("::") else "")
            out.append(_plain(text))
        literal = paragraph.endswith("::")
    return "\n\n".join(out) + "\n"


def _schema_block(schema: Mapping[str, Any], title: str) -> str:
    """The JSON schema itself, folded: for an editor's YAML language server or a linter."""
    body = json.dumps(schema, indent=2, ensure_ascii=False)
    indented = "\n".join(f"    {line}" for line in body.splitlines())
    return f'??? note "{title}"\n\n    ```json\n{indented}\n    ```\n'


def bundled_connectors() -> list[str]:
    """The connectors of this repository, by plugin name (a folder of connectors/)."""
    return sorted(
        p.name for p in (ROOT / "connectors").iterdir() if (p / "pyproject.toml").exists()
    )


def config_page() -> str:
    from escbridge.config import _ConfigSpec
    from escbridge.connector.registry import Registry
    from escbridge.errors import PluginLoadError
    from escbridge.processing.settings import ProcessingConfig

    out = [
        "# escbridge.yaml\n",
        GENERATED_NOTE,
        "The settings file of every command that talks to a helpdesk or the store (`--config`, "
        "default `escbridge.yaml`). `${VAR}` in a value is read from the environment, so no "
        "secret is written in the file; an unset one is named with its file:line. "
        "`escbridge validate escbridge.yaml` checks the whole file, each instance by its "
        "connector's model below.\n",
        Tables(json_schema(_ConfigSpec)).render("The file", "config"),
        Tables(json_schema(ProcessingConfig)).render("processing:", "processing-section"),
        "## Instances, by connector { #instances-by-connector }\n",
        "Under `instances:`, each key is an instance name (lower-case letters, digits, `-`, `_`; "
        "it becomes part of the webhook URL) and `type:` names the connector; the other keys "
        "are that connector's, below.\n",
    ]
    registry = Registry()
    for name in bundled_connectors():
        try:
            plugin = registry.load(name)
        except PluginLoadError as error:
            raise RuntimeError(
                f"docs/reference/config.md shows every connector's settings, so the site needs "
                f"connectors/{name} installed (`make venv` installs it): {error}"
            ) from None
        model = plugin.info.config_model
        if model is None:
            continue
        schema = json_schema(model)
        tables = Tables(schema, prefix=f"{name}-")
        intro = f"{plugin.info.display_name}, from the distribution `{plugin.distribution}`."
        out.append(tables.render(f"type: {name}", f"type-{name}", "###", intro))
        out.append(_schema_block(schema, f"JSON schema of a {name} instance"))
    out.append(_schema_block(json_schema(_ConfigSpec), "JSON schema of escbridge.yaml"))
    return "\n".join(out)


def matrix_page() -> str:
    from escbridge.matrix.spec import MatrixSpec

    schema = json_schema(MatrixSpec)
    return "\n".join(
        [
            "# matrix.yaml\n",
            GENERATED_NOTE,
            "The structure of a matrix file. `escbridge validate matrix.yaml` checks it, then "
            "what a structure cannot say: ids that must exist, ranks, templates, conditions. "
            "What the conditions and actions mean is in [the matrix](../matrix.md).\n",
            Tables(schema).render("The file", "matrix"),
            _schema_block(schema, "JSON schema of matrix.yaml"),
        ]
    )


def changelog_page() -> str:
    """The root CHANGELOG.md, included (pymdownx.snippets) so it is written in one place."""
    return '--8<-- "CHANGELOG.md"\n'


#: Page (relative to docs/) → its writer.
PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "reference/matrix.md": matrix_page,
    "changelog.md": changelog_page,
}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages to the site's files."""
    from mkdocs.structure.files import File

    for name, write in PAGES.items():
        files.append(File.generated(config, name, content=write()))
    return files
