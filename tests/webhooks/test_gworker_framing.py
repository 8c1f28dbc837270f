"""Where a request ends, as BufferingThreadWorker's event loop decides it (gworker.Framing).

A request called complete must be one gunicorn's parser reads without waiting for more bytes;
whatever gunicorn refuses from the headers alone is handed over at once, to be refused there.
"""

from __future__ import annotations

import pytest
from escbridge_webhooks.gworker import Framing, Verdict, body_timeout_from_env

HEAD = b"POST /webhooks/eu HTTP/1.1\r\nHost: receiver\r\n"


def feed_bytewise(framing: Framing, data: bytes) -> list[Verdict]:
    return [framing.feed(data[i : i + 1]) for i in range(len(data))]


def test_a_content_length_body_is_complete_with_its_last_byte() -> None:
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    framing = Framing(100)
    verdicts = feed_bytewise(framing, request)
    assert verdicts[-1] is Verdict.READY and set(verdicts[:-1]) == {Verdict.MORE}
    assert framing.data == request and not framing.close_after


def test_a_chunked_body_is_complete_after_its_last_chunk_and_trailers() -> None:
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"
    verdicts = feed_bytewise(Framing(100), request)
    assert verdicts[-1] is Verdict.READY and set(verdicts[:-1]) == {Verdict.MORE}


def test_a_request_without_a_body_is_complete_with_its_headers() -> None:
    assert Framing(100).feed(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n") is Verdict.READY


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
    ],
)
def test_framing_gunicorn_refuses_is_handed_over_without_waiting_for_a_body(
    headers: bytes,
) -> None:
    assert Framing(100).feed(HEAD + headers + b"\r\n") is Verdict.READY


def test_a_declared_body_over_the_limit_is_handed_over_at_once_and_closed_after() -> None:
    framing = Framing(100)
    assert framing.feed(HEAD + b"Content-Length: 101\r\n\r\n") is Verdict.READY
    assert framing.close_after


def test_a_chunked_body_over_the_limit_is_handed_over_once_past_it() -> None:
    framing = Framing(10)
    assert framing.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n100\r\n") is Verdict.MORE
    assert framing.feed(b"x" * 10) is Verdict.MORE
    assert framing.feed(b"x") is Verdict.READY and framing.close_after


def test_expect_continue_is_answered_once_and_not_passed_on() -> None:
    framing = Framing(100)
    assert framing.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n") is (
        Verdict.MORE
    )
    assert framing.continue_due() and not framing.continue_due()
    assert framing.feed(b"{}") is Verdict.READY
    assert b"Expect" not in framing.data and framing.data.endswith(b"\r\n\r\n{}")


def test_expect_continue_is_not_answered_for_a_body_over_the_limit() -> None:
    framing = Framing(100)
    request = HEAD + b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n"
    assert framing.feed(request) is Verdict.READY
    assert not framing.continue_due() and b"Expect" not in framing.data


def test_oversized_headers_and_chunk_lines_are_refused_from_the_event_loop() -> None:
    framing = Framing(100)
    assert framing.feed(HEAD + b"X-Pad: " + b"a" * 70_000) is Verdict.REFUSE
    assert framing.refusal[0] == 431

    framing = Framing(100)
    framing.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
    assert framing.feed(b"1" * 5000) is Verdict.REFUSE
    assert framing.refusal[0] == 400


def test_pipelined_bytes_stay_with_the_request_for_gunicorn() -> None:
    framing = Framing(100)
    assert framing.feed(b"GET / HTTP/1.1\r\n\r\nGET /next") is Verdict.READY
    assert framing.data == b"GET / HTTP/1.1\r\n\r\nGET /next"


def test_the_deadline_comes_from_the_environment() -> None:
    assert body_timeout_from_env({}) == 10.0
    assert body_timeout_from_env({"ESCBRIDGE_WEBHOOK_BODY_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="ESCBRIDGE_WEBHOOK_BODY_TIMEOUT"):
            body_timeout_from_env({"ESCBRIDGE_WEBHOOK_BODY_TIMEOUT": bad})
