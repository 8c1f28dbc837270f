"""YAML with line numbers, so every error in a file an admin wrote points at file:line and key path.

One loader for the matrix and the config: parse once into plain data plus a map from key path to
line, then turn pydantic's ValidationError locations back into ``file:line path: message``.

A message shows the offending value only when that is safe: never for a secret field (by the
model's ``SecretStr`` fields, or by name: ``*token*``, ``*secret*``, ``*password*``, ``*key``),
never a whole list or mapping, and what is shown passes the Redactor (a password inside a URL,
token-shaped strings).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from escbridge.errors import Problem
from escbridge.secrets import redact

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """Plain data from one YAML file, with the line (1-based) of every key and item."""

    source: str
    data: Any
    lines: dict[PathKey, int]

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of ``path`` (pydantic locations can go deeper)."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(self.source, self.line_of(path), format_path(path), message)


def format_path(path: Iterable[str | int]) -> str:
    """``("rules", 2, "when", "any", 0)`` -> ``rules[2].when.any[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse YAML text; syntax errors become a Problem with the line where YAML gave up."""
    from escbridge.errors import InvalidInputError

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError([Problem(source, line, "", f"not valid YAML: {reason}")]) from None
    if node is None:
        return YamlDocument(source, None, {(): 1})
    lines: dict[PathKey, int] = {}
    _index(node, (), lines)
    return YamlDocument(source, data, lines)


def _index(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines)


#: Setting names whose values are credentials whatever the model says (a plugin may use str).
_SECRET_NAME = re.compile(
    r"(?i)(secret|token|passw(or)?d|api_?key|private_?key|credential)(?!.*(_url|_file|_cache)$)"
)


def is_secret_key(name: str) -> bool:
    """Whether a setting called ``name`` holds a credential by its name alone."""
    return bool(_SECRET_NAME.search(name))


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` typed ``SecretStr``/``SecretBytes`` (also inside Optional, lists)."""

    def secret(annotation: Any) -> bool:
        if annotation in (SecretStr, SecretBytes):
            return True
        return any(secret(arg) for arg in typing.get_args(annotation))

    return frozenset(name for name, f in model.model_fields.items() if secret(f.annotation))


def problems_from_validation(
    doc: YamlDocument,
    error: ValidationError,
    prefix: Sequence[str | int] = (),
    *,
    secrets: Collection[str] = (),
) -> list[Problem]:
    """Turn pydantic's errors into Problems with the admin's line numbers and key paths.

    ``secrets`` names fields whose input is never shown (``secret_fields(model)``); fields whose
    name says they hold a credential are hidden as well.
    """
    problems = []
    for item in error.errors(include_url=False):
        loc = [p for p in item["loc"] if not _is_union_tag(p)]
        hidden = any(isinstance(p, str) and (p in secrets or is_secret_key(p)) for p in loc)
        message = _message(item, hidden=hidden)
        problems.append(doc.problem([*prefix, *loc], message))
    return problems


def _is_union_tag(part: object) -> bool:
    # pydantic inserts the chosen union member / validator name into loc; admins never wrote it.
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def _message(item: Any, *, hidden: bool = False) -> str:
    kind = item.get("type", "")
    msg: str = item.get("msg", "")
    value = item.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known key here (check the spelling)"
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        shown = "this secret value" if hidden else _show(value)
        return f"{shown} is not valid: {msg[0].lower() + msg[1:] if msg else kind}"
    return msg


def _show(value: object) -> str:
    """The value an admin wrote, unless it is a collection (its items may be anything)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    if isinstance(value, str):
        return f'"{redact(value)}"'
    return redact(repr(value))


def with_suggestions(
    problems: Sequence[Problem], error: ValidationError, model: type[BaseModel]
) -> list[Problem]:
    """``problems`` (one per error of ``error``, as ``problems_from_validation`` makes them),
    where an unknown key close to a known one there says which: "did you mean poll_seconds?"."""
    out = []
    for problem, item in zip(problems, error.errors(include_url=False), strict=True):
        loc = item["loc"]
        if item.get("type") == "extra_forbidden" and loc:
            known = _keys_at(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            if close:
                message = f"is not a known key here — did you mean {close[0]}?"
                problem = replace(problem, message=message)
        out.append(problem)
    return out


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the model takes at ``loc`` (field names and aliases); [] when unknown."""
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    found = _model_in(annotation)
    if found is None:
        return []
    return [f.alias or name for name, f in found.model_fields.items()]


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one step down ``loc``: a model's field, a dict's value, a list's item."""
    found = _model_in(annotation)
    if found is not None:
        spec = found.model_fields.get(part) if isinstance(part, str) else None
        return spec.annotation if spec is not None else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    if origin in (list, tuple, set, frozenset, Sequence) and args:
        return args[0]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation stands for, through ``Optional``/unions/``Annotated``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
