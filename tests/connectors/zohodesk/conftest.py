from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from escbridge_zohodesk import ZohoDeskConnector
from zohodesk_support import Clock, make_connector


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def connector(clock: Clock) -> ZohoDeskConnector:
    return make_connector(clock)
