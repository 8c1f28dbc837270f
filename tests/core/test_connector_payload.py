"""escbridge.connector.payload.load_json: the one strict JSON reader of webhook bodies.

It reads what json.loads reads, and refuses — naming the JSON path and the problem, never the
value — what no store can keep or no parser should meet.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escbridge.connector.payload import DEFAULT_LIMITS, JsonLimits, load_json, text_problem
from escbridge.errors import PayloadNotJsonError, WebhookPayloadError

SECRET = "s3cr3t-customer-text"

# JSON documents as helpdesks send them: any text but NUL and lone surrogates.
text = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(text, max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(text, max_size=12), inner),
    max_leaves=30,
)


@given(document=documents, ascii_only=st.booleans())
def test_what_helpdesks_send_reads_as_json_loads_reads_it(document: Any, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert load_json(body) == json.loads(body)


def test_a_byte_order_mark_is_accepted() -> None:
    assert load_json(b'\xef\xbb\xbf{"ticket_id": "7"}') == {"ticket_id": "7"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": "' + SECRET.encode() + b'\\u0000"}', "$.a holds a NUL character"),
        (b'{"a": {"b": ["x", "\\ud800' + SECRET.encode() + b'"]}}', "$.a.b[1] holds a lone"),
        (b'["\\udc00\\ud800"]', "$[0] holds a lone UTF-16 surrogate"),
        (b'{"' + SECRET.encode() + b'\\u0000": 1}', "$.<key #1> (a key) holds a NUL"),
        (b'{"ok": 1, "' + SECRET.encode() * 20 + b'": 1}', "$.<key #2> (a key) is longer than"),
        (b'{"a": 1, "a": 2}', "$.<key #2> repeats a key of its object"),
        (b'{"n": ' + b"9" * 65 + b"}", "$.n is a number longer than 64 characters"),
        (b'{"n": 1e999}', "$.n is a number too large for a float"),
        (b'{"n": [NaN]}', "$.n[0] is NaN or Infinity"),
        (b'{"n": -Infinity}', "$.n is NaN or Infinity"),
        (b"[" * 33 + b"]" * 33, "nests deeper than 32 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "$ nests deeper than 32 levels"),
        (b'"' + SECRET.encode() + b'\xff"', "body is not UTF-8 (invalid byte at offset 21)"),
        (b'"\xed\xa0\x80"', "body is not UTF-8"),  # a surrogate encoded raw (CESU-8)
    ],
)
def test_a_refusal_names_where_and_what_never_the_value(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError) as refused:
        load_json(body)
    assert message in str(refused.value)
    assert SECRET not in str(refused.value)
    assert not isinstance(refused.value, PayloadNotJsonError)  # not for salvaging


def test_a_string_over_the_limit_is_refused_and_one_at_it_is_not() -> None:
    limits = JsonLimits(max_string=10)
    assert load_json(b'{"s": "0123456789"}', limits) == {"s": "0123456789"}
    with pytest.raises(WebhookPayloadError, match=r"^\$\.s is longer than 10 characters$"):
        load_json(b'{"s": "0123456789!"}', limits)


def test_nesting_at_the_limit_is_read() -> None:
    depth = DEFAULT_LIMITS.max_depth
    assert load_json(b"[" * depth + b"]" * depth) is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Expecting value at line 1 column 1"),
        (b'{"a": "\\q' + SECRET.encode() + b'"}', "Invalid \\escape at line 1 column 8"),
        (b'{"a": "tab\there"}', "Invalid control character at line 1"),
        (b'{"a": "' + SECRET.encode() + b'\x00"}', "Invalid control character"),  # NUL raw
        (b'{"a": 1} {"b": 2}', "Extra data at line 1 column 10"),
    ],
)
def test_a_syntax_error_is_not_json_by_line_and_column(body: bytes, message: str) -> None:
    with pytest.raises(PayloadNotJsonError) as refused:
        load_json(body)
    assert str(refused.value).startswith(f"body is not JSON: {message}")
    assert SECRET not in str(refused.value)


def test_a_deep_path_is_cut_short_in_the_middle() -> None:
    body = b'{"abcdefghij": ' * 30 + b'"\\u0000"' + b"}" * 30
    with pytest.raises(WebhookPayloadError) as refused:
        load_json(body)
    message = str(refused.value)
    assert message.startswith("$.abcdefghij.abcdefghij") and "…" in message
    assert message.endswith(".abcdefghij holds a NUL character (\\u0000)")
    assert len(message) < 200


@pytest.mark.parametrize(
    ("value", "limit", "problem"),
    [
        ("fine é 😀", 10, None),
        ("a\x00b", None, "holds a NUL character (\\u0000)"),
        ("a\ud800", None, "holds a lone UTF-16 surrogate (\\ud800-\\udfff)"),
        ("x" * 11, 10, "is longer than 10 characters"),
    ],
)
def test_text_problem_says_what_makes_a_value_unfit_to_keep(
    value: str, limit: int | None, problem: str | None
) -> None:
    assert text_problem(value, limit) == problem
