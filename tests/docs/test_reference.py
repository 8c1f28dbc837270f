"""The generated reference pages cannot silently lose a command, an option or a key.

scripts/docs_reference.py writes them at every site build; here they are written the same way
and compared with what the code accepts, found independently of the writer: the argparse tree
of ``escbridge.cli.build_parser`` and the pydantic models' fields.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest
from docs_pages import reference_module
from pydantic import BaseModel

from escbridge.cli import COMMANDS, build_parser


def _commands(full: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, list[str]]]:
    """(full command, its option strings and positional names), subcommands included."""
    names: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _commands(f"{full} {sub}", subparser)
        elif not isinstance(action, argparse._HelpAction) and action.help != argparse.SUPPRESS:
            names.extend(action.option_strings or [str(action.metavar or action.dest)])
    yield full, names


def every_command() -> list[tuple[str, list[str]]]:
    found = list(_commands("escbridge", build_parser()))[-1:]  # the top level's own options
    for name, *_ in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        found.extend(_commands(f"escbridge {name}", sub.choices[name]))
    return found


CLI_PAGE = reference_module().cli_page()


def _section(page: str, heading: str) -> str:
    """The text under one heading, up to the next heading of any level."""
    start = page.index(heading)
    following = re.search(r"^#{1,6} ", page[start + len(heading) :], flags=re.M)
    end = start + len(heading) + following.start() if following else len(page)
    return page[start:end]


@pytest.mark.parametrize(("command", "arguments"), every_command(), ids=lambda v: str(v))
def test_the_cli_page_names_every_command_and_option(command: str, arguments: list[str]) -> None:
    heading = f" `{command}`\n"
    assert heading in CLI_PAGE, f"docs/reference/cli.md has no heading for {command}"
    section = _section(CLI_PAGE, heading)
    for argument in arguments:
        assert f"`{argument}" in section or f", {argument}" in section, (
            f"docs/reference/cli.md: {command} lacks {argument}"
        )


def test_every_command_is_found() -> None:
    """The walk above is not vacuous: subcommands and options of every kind are in it."""
    found = dict(every_command())
    assert {f"escbridge {name}" for name, *_ in COMMANDS} <= set(found)
    assert "escbridge db upgrade" in found and "escbridge jobs retry" in found
    assert "--version" in found["escbridge"] and "--format" in found["escbridge matrix"]


def _models() -> list[tuple[str, type[BaseModel]]]:
    from escbridge.config import _ConfigSpec
    from escbridge.connector.registry import Registry
    from escbridge.matrix import spec
    from escbridge.processing.settings import ProcessingConfig

    models: list[tuple[str, type[BaseModel]]] = [
        ("config.md", _ConfigSpec),
        ("config.md", ProcessingConfig),
    ]
    registry = Registry()
    for name in reference_module().bundled_connectors():
        model = registry.load(name).info.config_model
        assert model is not None, name
        models.append(("config.md", model))
    models.extend(
        ("matrix.md", model)
        for model in vars(spec).values()
        if isinstance(model, type) and issubclass(model, BaseModel) and model.__name__ != "_Spec"
    )
    return models


@pytest.mark.parametrize(("page", "model"), _models(), ids=lambda v: getattr(v, "__name__", v))
def test_the_file_pages_name_every_key(page: str, model: type[BaseModel]) -> None:
    text = reference_module().PAGES[f"reference/{page}"]()
    for key in model.model_fields:
        assert f"| `{key}` |" in text, f"docs/reference/{page} lacks {model.__name__}.{key}"


def test_every_bundled_connector_has_its_settings() -> None:
    text = reference_module().config_page()
    for name in ("zendesk", "freshdesk", "zohodesk"):
        assert f"## type: {name} {{ #type-{name} }}" in text
    assert "| `api_token` | secret string or null |" in text  # Zendesk's, shown as a secret
    assert '| `cooldown` | duration | `"30m"` |' in reference_module().matrix_page()


def _html(page: str) -> str:
    """The page as the site shows it (Markdown with tables, as mkdocs renders it)."""
    import markdown

    return markdown.markdown(page, extensions=["tables", "attr_list", "fenced_code"])


def test_angle_brackets_in_help_and_notes_are_shown_not_swallowed() -> None:
    """``<instance>`` outside a code span would be read as an HTML tag and vanish from the page;
    inside one it must not be escaped twice."""
    cli = _html(CLI_PAGE)
    serve = _section(CLI_PAGE, " `escbridge serve`\n")
    assert "POST /webhooks/&lt;instance&gt;" in serve  # the command's description
    assert cli.count("/webhooks/&lt;instance&gt;") >= 2  # ... and sandbox --webhook-url's help
    assert "<instance>" not in cli
    config = _html(reference_module().config_page())
    assert "the tag escbridge_&lt;level&gt;" in config
    assert "<code>https://&lt;subdomain&gt;.zendesk.com</code>" in config
    assert "&amp;lt;" not in cli + config
