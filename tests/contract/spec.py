"""The published API contracts kept in ``schemas/<helpdesk>/`` and the checks made against them.

Each helpdesk's folder holds OpenAPI 3.1 documents (``paths`` + ``components``): for Zoho Desk,
parts extracted from Zoho's official files (zoho/zohodesk-oas); for Zendesk and Freshdesk,
schemas written from their documentation and recorded traffic (see ``schemas/README.md``).

A :class:`Contract` loads one folder, inlines every ``$ref`` (across files) and merges ``allOf``
branches into one schema. The merge is needed because Zoho's generated files put
``additionalProperties: false`` on each ``allOf`` branch while meaning "the union of the
branches is closed"; validated literally, no ticket could ever pass. Zoho's regular expressions
use Java classes (``\\P{InBasicLatin}``, ``\\p{L}``, a mid-pattern ``(?i)``) that Python's ``re``
does not know; :func:`python_pattern` rewrites them to close equivalents.

``Contract.check_request`` validates method, path, query parameters (unknown ones too: Zoho
answers them with 422) and JSON body; ``Contract.check_response`` validates a status and body
against the operation's documented responses (an undocumented error status against the
helpdesk's error schema).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).parent / "schemas"
HELPDESKS = ("zohodesk", "zendesk", "freshdesk")


@dataclass(frozen=True)
class Settings:
    """How one helpdesk's API differs in shape: prefix, array style, where orgId may go."""

    prefix: str
    #: query parameters the helpdesk also takes as a header (Zoho's ``orgId``)
    header_params: frozenset[str] = frozenset()
    #: arrays in the query as ``a,b`` (Zoho) and/or repeated keys
    comma_arrays: bool = True
    #: trailing ``.json`` on paths is optional (Zendesk)
    json_suffix: bool = False
    #: the schema every error body follows, as ``file#/pointer``
    error_schema: str = ""


SETTINGS = {
    "zohodesk": Settings(
        prefix="/api/v1",
        header_params=frozenset({"orgId"}),
        error_schema="Common.json#/components/schemas/errorJson",
    ),
    "zendesk": Settings(
        prefix="/api/v2",
        json_suffix=True,
        error_schema="Zendesk.json#/components/schemas/error",
    ),
    "freshdesk": Settings(
        prefix="/api/v2",
        comma_arrays=True,
        error_schema="Freshdesk.json#/components/schemas/error",
    ),
}


@dataclass(frozen=True)
class Violation:
    """One way a request or response differs from the contract."""

    helpdesk: str
    direction: str  # "request" or "response"
    operation: str  # operationId, e.g. "updateTicket"
    where: str  # "query:limit", "body/teamId", "status"
    keyword: str  # the JSON-schema keyword that failed, or "unknown", "status", "json"
    message: str

    def __str__(self) -> str:
        return (
            f"{self.helpdesk} {self.direction} {self.operation} {self.where}"
            f" [{self.keyword}]: {self.message}"
        )


@dataclass
class Operation:
    """One method + path of the contract, resolved and ready to validate."""

    helpdesk: str
    method: str
    template: str
    operation_id: str
    regex: re.Pattern[str]
    parameters: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    #: status -> schema of the JSON body, or None for "no content"
    responses: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


def python_pattern(pattern: str) -> str:
    """A Zoho (Java) regular expression in Python's dialect.

    ``\\P{InBasicLatin}`` (always inside a class) becomes ``\\u0080-\\uffff``; ``\\p{L}``,
    ``\\p{M}``, ``\\p{N}`` become ``\\w`` (a little looser: it also allows ``_`` and digits);
    a ``(?i)`` in mid-pattern becomes a scoped ``(?i:…)`` group.
    """
    out = pattern.replace("\\P{InBasicLatin}", "\\u0080-\\uffff")
    for letter in "LMN":
        out = out.replace(f"\\p{{{letter}}}", "\\w")
    out = re.sub(r"\(\?i\)\(([^()]*)\)", r"(?i:\1)", out)
    return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two schemas that must both hold, as one (properties united, a closed side closes)."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key in ("properties", "patternProperties"):
            merged = dict(out[key])
            for name, schema in value.items():
                merged[name] = _merge(merged[name], schema) if name in merged else schema
            out[key] = merged
        elif key == "required":
            out[key] = sorted(set(out[key]) | set(value))
        elif key == "additionalProperties":
            out[key] = False if (out[key] is False or value is False) else out[key]
        elif key == "type":
            both = [t for t in _types(out) if t in _types(b)]
            out[key] = both or _types(out)
        elif key == "items" and isinstance(value, Mapping):
            out[key] = _merge(out[key], value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out.setdefault("allOf", [])
            out["allOf"] = [*out["allOf"], {key: value}]
        elif key in ("minProperties", "maxProperties"):
            out.pop(key, None)  # counted per branch in the source; meaningless once merged
    return out


class Contract:
    """One helpdesk's kept contract: its operations, resolved schemas and checks."""

    def __init__(self, helpdesk: str, folder: Path | None = None) -> None:
        self.helpdesk = helpdesk
        self.settings = SETTINGS[helpdesk]
        folder = folder or SCHEMAS / helpdesk
        self.documents: dict[str, dict[str, Any]] = {
            path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))
        }
        self.operations: list[Operation] = []
        for name, document in self.documents.items():
            for template, item in (document.get("paths") or {}).items():
                for method, raw in item.items():
                    self.operations.append(self._operation(name, template, method, raw))
        self._validators: dict[int, Draft202012Validator] = {}
        error_file = self.settings.error_schema.partition("#")[0]
        self.error_schema = (
            self.inline({"$ref": self.settings.error_schema}, "")
            if error_file in self.documents
            else None
        )

    # -- resolving -----------------------------------------------------------------------------

    def _target(self, ref: str, base: str) -> tuple[Any, str]:
        file_part, _, pointer = ref.partition("#")
        name = Path(file_part).name if file_part else base
        node: Any = self.documents[name]
        for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, name

    def inline(self, node: Any, base: str) -> Any:
        """``node`` with every ``$ref`` replaced by its target and ``allOf`` merged."""
        if isinstance(node, list):
            return [self.inline(item, base) for item in node]
        if not isinstance(node, Mapping):
            return node
        if "$ref" in node:
            target, target_base = self._target(str(node["$ref"]), base)
            resolved = self.inline(target, target_base)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _merge(resolved, self.inline(rest, base)) if rest else resolved
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("allOf", "examples", "example", "description"):
                continue
            if key == "pattern" and isinstance(value, str):
                out[key] = python_pattern(value)
            elif key == "patternProperties":
                out[key] = {python_pattern(k): self.inline(v, base) for k, v in value.items()}
            elif key == "properties":
                out[key] = {k: self.inline(v, base) for k, v in value.items()}
            elif key in ("enum", "required", "default", "const"):
                out[key] = value
            else:
                out[key] = self.inline(value, base)
        for part in node.get("allOf") or []:
            out = _merge(out, self.inline(part, base))
        return out

    def _operation(
        self, name: str, template: str, method: str, raw: Mapping[str, Any]
    ) -> Operation:
        regex = re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template))
        names = re.findall(r"\{([^}]+)\}", template)
        regex = regex.replace("([^/]+)", "(?P<%s>[^/]+)", len(names)) % tuple(names)
        op = Operation(
            helpdesk=self.helpdesk,
            method=method.upper(),
            template=template,
            operation_id=str(raw.get("operationId") or f"{method.upper()} {template}"),
            regex=re.compile(f"^{regex}$"),
        )
        for param in raw.get("parameters") or []:
            param = self.inline(param, name)
            op.parameters[(param["in"], param["name"])] = param
        if raw.get("requestBody"):
            body = self.inline(raw["requestBody"], name)
            op.body = (body.get("content") or {}).get("application/json", {}).get("schema", {})
        for status, response in (raw.get("responses") or {}).items():
            response = self.inline(response, name)
            content = (response.get("content") or {}).get("application/json")
            op.responses[str(status)] = content.get("schema", {}) if content else None
        return op

    # -- matching ------------------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation for ``method path`` and its path parameters, or None."""
        if self.settings.json_suffix and path.endswith(".json"):
            path = path.removesuffix(".json")
        found: list[tuple[Operation, dict[str, str]]] = []
        for op in self.operations:
            if op.method != method.upper():
                continue
            m = op.regex.match(path)
            if m:
                found.append((op, m.groupdict()))
        if not found:
            return None
        # a literal segment beats a parameter: /tickets/search before /tickets/{ticketId}
        return min(found, key=lambda item: len(item[1]))

    def in_scope(self, path: str) -> bool:
        return path.startswith(self.settings.prefix + "/")

    # -- checks --------------------------------------------------------------------------------

    def check_request(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> tuple[Operation | None, list[Violation]]:
        """Violations of one request; ``(None, [])`` when the path is not in the contract."""
        matched = self.match(method, path)
        if matched is None:
            return None, []
        op, path_params = matched
        out: list[Violation] = []

        def bad(where: str, keyword: str, message: str) -> None:
            out.append(
                Violation(self.helpdesk, "request", op.operation_id, where, keyword, message)
            )

        values: dict[str, list[str]] = {}
        for key, value in query:
            values.setdefault(key, []).append(value)
        lower_headers = {k.lower(): v for k, v in headers.items()}
        for key in values:
            if ("query", key) not in op.parameters:
                bad(f"query:{key}", "unknown", f"query parameter {key!r} is not in the contract")
        for (where, name), param in op.parameters.items():
            schema = param.get("schema") or {}
            if where == "path":
                raw_values = [path_params[name]] if name in path_params else []
            elif where == "query":
                raw_values = values.get(name, [])
                if not raw_values and name in self.settings.header_params:
                    header = lower_headers.get(name.lower())
                    raw_values = [header] if header is not None else []
            else:
                continue
            if not raw_values:
                if param.get("required"):
                    bad(f"{where}:{name}", "required", f"required {where} parameter is missing")
                continue
            value = self._coerce(raw_values, schema)
            for error in self._validator(schema).iter_errors(value):
                bad(f"{where}:{name}", str(error.validator), _short(error.message))
        if op.body is not None and body:
            try:
                document = json.loads(body)
            except ValueError:
                bad("body", "json", "the body is not JSON")
            else:
                for error in self._validator(op.body).iter_errors(document):
                    bad(
                        _pointer("body", error.absolute_path),
                        str(error.validator),
                        _short(error.message),
                    )
        elif op.body is None and body and body.strip():
            bad("body", "unknown", "the operation takes no body")
        return op, out

    def check_response(self, op: Operation, status: int, body: bytes) -> list[Violation]:
        """Violations of one response to ``op``."""
        out: list[Violation] = []

        def bad(where: str, keyword: str, message: str) -> None:
            out.append(
                Violation(self.helpdesk, "response", op.operation_id, where, keyword, message)
            )

        key = str(status)
        if key in op.responses:
            schema = op.responses[key]
        elif status >= 400:
            schema = self.error_schema
        else:
            documented = ", ".join(sorted(op.responses)) or "none"
            bad("status", "status", f"status {status} is not documented (documented: {documented})")
            return out
        text = body.strip()
        if schema is None:
            if text:
                bad("body", "empty", f"status {status} has no content in the contract, got a body")
            return out
        if not text:
            if status < 400:
                bad("body", "json", f"status {status} has a JSON body in the contract, got none")
            return out
        try:
            document = json.loads(text)
        except ValueError:
            if status < 400:
                bad("body", "json", "the body is not JSON")
            return out
        for error in self._validator(schema).iter_errors(document):
            bad(_pointer("body", error.absolute_path), str(error.validator), _short(error.message))
        return out

    def _validator(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        """One validator per resolved schema (they live as long as the contract)."""
        found = self._validators.get(id(schema))
        if found is None:
            found = self._validators[id(schema)] = Draft202012Validator(schema)
        return found

    def _coerce(self, raw: Sequence[str], schema: Mapping[str, Any]) -> Any:
        """Query text as the JSON value the schema describes (``"5"`` -> 5, ``a,b`` -> list)."""
        if "array" in _types(schema):
            parts: list[str] = []
            for text in raw:
                parts.extend(text.split(",") if self.settings.comma_arrays else [text])
            return [_scalar(part, schema.get("items") or {}) for part in parts]
        return _scalar(raw[-1], schema) if len(raw) == 1 else [_scalar(t, schema) for t in raw]


def _scalar(text: str, schema: Mapping[str, Any]) -> Any:
    types = _types(schema)
    if "integer" in types and re.fullmatch(r"-?\d+", text):
        return int(text)
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    return text


def _pointer(prefix: str, path: Iterable[Any]) -> str:
    return "/".join([prefix, *(str(p) for p in path)])


def _short(message: str, limit: int = 240) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def parse_query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


@cache
def contract(helpdesk: str) -> Contract:
    """The (cached) contract of one helpdesk."""
    return Contract(helpdesk)
