"""The one strict JSON reader for webhook bodies, shared by every connector.

A body that passes the signature check comes from the helpdesk's account, not necessarily from
well-behaved software: placeholders render whatever a customer typed, and a leaked secret lets
anyone sign. ``json.loads`` accepts things no store can keep or no parser should meet — a NUL
(``\\u0000``, refused by PostgreSQL text), a lone surrogate (``\\ud800``, refused by every UTF-8
encoder), ``NaN``/``Infinity``, numbers of thousands of digits, nesting a thousand levels deep,
duplicate keys (which one wins is up to the reader). :func:`load_json` refuses all of them with a
:class:`~escbridge.errors.WebhookPayloadError` that names where (a JSON path) and what, never the
value: its message goes back to the sender and into the log, and a log must not carry what a
stranger wrote. Keys in the path are shown only when they look like identifiers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from escbridge.errors import PayloadNotJsonError, WebhookPayloadError

__all__ = ["DEFAULT_LIMITS", "JsonLimits", "load_json", "text_problem"]


@dataclass(frozen=True)
class JsonLimits:
    """How much a webhook body may hold. Real payloads stay far below every one of them.

    ``max_string`` is generous: a Zoho Desk event carries the ticket's description, which can be
    a long HTML e-mail; the receiver's body-size limit bounds the total anyway.
    """

    max_depth: int = 32  # containers inside containers; real payloads nest 6 at most
    max_string: int = 256 * 1024  # characters in one string value
    max_key: int = 256  # characters in one object key
    max_digits: int = 64  # characters in one number (ids have 19 digits)


DEFAULT_LIMITS = JsonLimits()

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


def text_problem(value: str, limit: int | None = None) -> str | None:
    """What makes ``value`` unfit to keep (NUL, lone surrogate, over ``limit``), or None.

    Shared with the receiver, which asks it of every event field before the store sees it.
    """
    if limit is not None and len(value) > limit:
        return f"is longer than {limit} characters"
    if "\x00" in value:
        return "holds a NUL character (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # only surrogates fail a strict UTF-8 encode
            return "holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
    return None


class _Refused:
    """Left in the parsed tree by a parse hook, so the walk can say where the problem was."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class _DuplicateKeys(dict[str, Any]):
    """An object in which a key occurred twice; ``index`` is the second occurrence's position."""

    index: int = 0


def _decoder(limits: JsonLimits) -> json.JSONDecoder:
    """A decoder whose hooks leave a marker where a refused value was, for the walk to name.

    One per call: hooks written in Python let another thread in mid-scan, and a scanner keeps
    state (its key memo) while it runs.
    """

    def parse_int(text: str) -> Any:
        if len(text) > limits.max_digits:
            return _Refused(f"is a number longer than {limits.max_digits} characters")
        return int(text)

    def parse_float(text: str) -> Any:
        if len(text) > limits.max_digits:
            return _Refused(f"is a number longer than {limits.max_digits} characters")
        value = float(text)
        if not math.isfinite(value):
            return _Refused("is a number too large for a float")
        return value

    def parse_constant(_name: str) -> Any:
        return _Refused("is NaN or Infinity, which JSON does not allow")

    def object_pairs(pairs: list[tuple[str, Any]]) -> Any:
        found = dict(pairs)
        if len(found) == len(pairs):
            return found
        seen: set[str] = set()
        for index, (key, _) in enumerate(pairs):
            if key in seen:
                duplicate = _DuplicateKeys(found)
                duplicate.index = index
                return duplicate
            seen.add(key)
        raise AssertionError("unreachable: a shorter dict has a repeated key")

    return json.JSONDecoder(
        parse_int=parse_int,
        parse_float=parse_float,
        parse_constant=parse_constant,
        object_pairs_hook=object_pairs,
    )


def _key_name(key: str, index: int) -> str:
    """A path step for ``key``: itself when it looks like an identifier, else its position."""
    return f".{key}" if _IDENTIFIER.fullmatch(key) else f".<key #{index + 1}>"


def _refuse(path: str, problem: str) -> WebhookPayloadError:
    if len(path) > 120:  # a deep path: its start and its end say enough
        path = f"{path[:60]}…{path[-50:]}"
    return WebhookPayloadError(f"{path} {problem}")


def load_json(body: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """``body`` parsed as strict JSON (UTF-8, an optional BOM), or WebhookPayloadError.

    A syntax error raises the subclass :class:`~escbridge.errors.PayloadNotJsonError` (line and
    column only); every other refusal names the JSON path (``$.detail.id``) and the problem.
    """
    # The BOM is stripped by hand: the "utf-8-sig" codec is imported lazily, on first use, which
    # fails in a process that can no longer read its own installation (dropped privileges).
    offset = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = body[offset:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise WebhookPayloadError(
            f"body is not UTF-8 (invalid byte at offset {error.start + offset})"
        ) from None
    try:
        data = _decoder(limits).decode(text)
    except json.JSONDecodeError as error:
        # "Invalid \\escape: 'x'" would quote the body; "… at" is followed by the position
        what = error.msg.split(":")[0].removesuffix(" at")
        raise PayloadNotJsonError(
            f"body is not JSON: {what} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise _refuse("$", f"nests deeper than {limits.max_depth} levels") from None
    # A NUL or a surrogate can only come from a \u escape (strict UTF-8 and strict JSON refuse
    # them raw), so most bodies skip those checks; the slow walk runs only to name a problem.
    if not _fits(data, limits, escapes="\\u" in text):
        _check(data, limits)
    return data


def _fits(data: Any, limits: JsonLimits, *, escapes: bool) -> bool:
    """The fast pass, level by level and without paths: True when there is nothing to refuse."""
    level = [data]
    for depth in range(limits.max_depth + 1):
        below: list[Any] = []
        for value in level:
            kind = type(value)
            if kind is str:
                if len(value) > limits.max_string or (escapes and text_problem(value)):
                    return False
            elif kind is dict or kind is list:
                if depth >= limits.max_depth:
                    return False
                if kind is list:
                    below.extend(value)
                    continue
                for key in value:
                    if len(key) > limits.max_key or (escapes and text_problem(key)):
                        return False
                below.extend(value.values())
            elif kind is _Refused or kind is _DuplicateKeys:
                return False
        if not below:
            return True
        level = below
    return False


def _check(data: Any, limits: JsonLimits) -> None:
    """Walk the parsed tree (iteratively: depth is what is being checked) for what to refuse."""
    stack: list[tuple[Any, str, int]] = [(data, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value, limits.max_string)
            if problem is not None:
                raise _refuse(path, problem)
        elif isinstance(value, _Refused):
            raise _refuse(path, value.problem)
        elif isinstance(value, dict | list):
            if depth >= limits.max_depth:
                raise _refuse(path, f"nests deeper than {limits.max_depth} levels")
            if isinstance(value, list):
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
                continue
            if isinstance(value, _DuplicateKeys):
                raise _refuse(f"{path}.<key #{value.index + 1}>", "repeats a key of its object")
            for index, (key, item) in enumerate(value.items()):
                step = _key_name(key, index)
                problem = text_problem(key, limits.max_key)
                if problem is not None:
                    raise _refuse(f"{path}{step}", f"(a key) {problem}")
                stack.append((item, f"{path}{step}", depth + 1))
