"""Property: whatever arrives — any body, any headers, signed or not — the answer is a 2xx or a
4xx, never a 5xx or an unhandled exception, and a 2xx that says "queued" means it is stored.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from escbridge_webhooks import ReceiverSettings, create_app
from escbridge_zendesk.webhook import INVOCATION_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from webhook_support import event_body, load, signed, write_config

from escbridge.processing import Processor, build_processor

MAX_BODY = 2048


@pytest.fixture(scope="module")
def fuzz_rig(
    _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FlaskClient, Processor]]:
    directory = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(_sqlite_template, directory / "escbridge.db")
    config = load(write_config(directory, f"sqlite:///{directory / 'escbridge.db'}"))
    processor = build_processor(config)
    app = create_app(
        config, processor=processor, settings=ReceiverSettings(max_body_bytes=MAX_BODY)
    )
    yield app.test_client(), processor
    processor.store.close()


# Header values as an HTTP client can send them: latin-1, no line breaks.
header_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=80
)
header_names = st.sampled_from(
    [
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        INVOCATION_HEADER,
        "Content-Type",
        "X-Request-Id",
        "Authorization",
        "X-ZDesk-JWT",
        "Transfer-Encoding",
        "X-Zendesk-Webhook-Id",
    ]
) | st.from_regex(r"\AX-[A-Za-z][A-Za-z0-9-]{0,20}\Z")

# What a signed body can carry that no store keeps or no parser should meet: NUL and lone
# surrogates (json.dumps writes them as \u escapes), numbers past any id, NaN and Infinity.
hostile_values = (
    st.text(st.sampled_from(["\x00", "\ud800", "\udfff", "a", "7"]), min_size=1, max_size=6)
    | st.integers(min_value=10**70, max_value=10**90)
    | st.sampled_from([float("nan"), float("inf"), float("-inf")])
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | hostile_values,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def zendesk_like(draw: st.DrawFn) -> bytes:
    """Real payload shapes with fields replaced by anything: reaches deep into the parser."""
    data = json.loads(event_body(draw(st.integers(min_value=1, max_value=10**6))))
    form = draw(st.sampled_from(["as is", "fields", "detail", "trigger"]))
    if form == "fields":
        for key in draw(st.lists(st.sampled_from(sorted(data)), min_size=1, max_size=3)):
            data[key] = draw(json_values)
    elif form == "detail":
        data["detail"] = draw(st.dictionaries(st.sampled_from(["id", "actor_id"]), json_values))
    elif form == "trigger":
        ticket = st.integers(min_value=-1, max_value=10**12).map(str) | json_values
        data = {"ticket_id": draw(ticket), "actor_id": draw(st.sampled_from(["9001", "9003"]))}
    return json.dumps(data).encode()


bodies = (
    st.binary(max_size=200)
    | st.integers(min_value=33, max_value=2000).map(lambda n: b"[" * n + b"]" * n)
    | st.binary(min_size=MAX_BODY - 8, max_size=MAX_BODY + 8)
    | st.text(max_size=300).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | zendesk_like()
    | zendesk_like()
    | zendesk_like()
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    body=bodies,
    headers=st.dictionaries(header_names, header_text, max_size=5),
    sign=st.booleans(),
    instance=st.just("eu") | st.just("eu") | st.just("eu") | st.text(min_size=1, max_size=20),
)
def test_any_delivery_gets_a_2xx_or_a_4xx(
    fuzz_rig: tuple[FlaskClient, Processor],
    body: bytes,
    headers: dict[str, str],
    sign: bool,
    instance: str,
) -> None:
    client, processor = fuzz_rig
    if sign:  # genuine: the verifier passes and the parser meets the body
        headers = {**headers, **signed(body)}
    response = client.post(f"/webhooks/{quote(instance, safe='')}", data=body, headers=headers)
    event(f"HTTP {response.status_code} signed={sign}")
    assert 200 <= response.status_code < 500, (response.status_code, response.data)
    data: Any = response.get_json()
    assert isinstance(data, dict)
    if response.status_code == 202:
        job = processor.store.job(data["event_id"])
        assert job is not None and job.instance == "eu"
    if response.status_code < 300:
        assert sign and instance == "eu"  # nothing unsigned gets past the verifier
