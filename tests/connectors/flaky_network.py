"""A network between escbridge and a helpdesk emulator that loses answers and delivers late.

Mounted on the connector's ``requests.Session`` (as a transport adapter), so the connector,
its ``ApiClient`` and the emulator are all real; only the wire misbehaves, as scripted:

- ``lose(method, path, how)``: the request reaches the helpdesk and is carried out, the answer
  is lost — a read timeout, a connection reset, or a 504 from a gateway;
- ``late(method, path)``: the client gives up (read timeout) before the helpdesk has the
  request; it is carried out later — when ``deliver()`` runs (the test's sleep hook calls it,
  i.e. while escbridge waits), or right after the next request matching ``deliver_on``;
- ``drop(method, path)``: the request never arrives, yet the client sees a read timeout.

Each fault applies once, to the next matching request (``skip=n``: to the one after the next
``n``). ``arrived`` lists every request the
helpdesk carried out, in order: what "posted once" is counted on.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    kind: str  # timeout | reset | 504 | late | drop
    deliver_on: tuple[str, re.Pattern[str]] | None = None
    skip: int = 0


class FlakyNetwork(HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self._faults: list[_Fault] = []
        self._pending: list[tuple[_Fault, requests.PreparedRequest, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.arrived: list[tuple[str, str]] = []

    # -- scripting --------------------------------------------------------------------------

    def lose(self, method: str, path: str, how: str = "timeout", *, skip: int = 0) -> None:
        assert how in ("timeout", "reset", "504")
        self._faults.append(_Fault(method, re.compile(path), how, skip=skip))

    def late(
        self,
        method: str,
        path: str,
        *,
        deliver_on: tuple[str, str] | None = None,
        skip: int = 0,
    ) -> None:
        on = (deliver_on[0], re.compile(deliver_on[1])) if deliver_on else None
        self._faults.append(_Fault(method, re.compile(path), "late", on, skip))

    def fault(self, method: str, path: str, how: str, *, skip: int = 0) -> None:
        """``late`` for "late", else ``lose(how)``."""
        if how == "late":
            self.late(method, path, skip=skip)
        else:
            self.lose(method, path, how, skip=skip)

    def drop(self, method: str, path: str) -> None:
        self._faults.append(_Fault(method, re.compile(path), "drop"))

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self)
        return session

    def assert_played(self) -> None:
        """Every scripted fault happened and every late request was delivered: a test whose
        fault never fired would pass for the wrong reason."""
        assert not self._faults, f"faults that never fired: {self._faults}"
        assert not self._pending, f"late requests never delivered: {self._pending}"

    def count(self, method: str, path: str) -> int:
        """How many requests matching ``method`` and the ``path`` pattern were carried out."""
        return sum(1 for m, p in self.arrived if m == method and re.fullmatch(path, p))

    def deliver(self) -> None:
        """Carry out the requests held back (the late completions)."""
        with self._lock:
            held = [(r, kw) for f, r, kw in self._pending if f.deliver_on is None]
            self._pending = [p for p in self._pending if p[0].deliver_on is not None]
        for request, kwargs in held:
            self._forward(request, kwargs)

    # -- the wire ---------------------------------------------------------------------------

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        method, path = request.method or "", urlsplit(request.url or "").path
        with self._lock:
            fault = next(
                (f for f in self._faults if f.method == method and f.path.fullmatch(path)), None
            )
            if fault is not None and fault.skip:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                self._faults.remove(fault)
        if fault is None:
            response = self._forward(request, kwargs)
            self._deliver_after(method, path)
            return response
        if fault.kind == "drop":
            raise requests.ReadTimeout(f"{method} {path}: no answer (never arrived)")
        if fault.kind == "late":
            with self._lock:
                self._pending.append((fault, request.copy(), kwargs))
            raise requests.ReadTimeout(f"{method} {path}: no answer yet")
        answer = self._forward(request, kwargs)
        if fault.kind == "504":
            lost = requests.Response()
            lost.status_code = 504
            lost._content = b'{"error": "GatewayTimeout", "description": "upstream timed out"}'
            lost.headers["Content-Type"] = "application/json"
            lost.url = request.url or ""
            lost.request = request
            return lost
        answer.close()
        if fault.kind == "reset":
            raise requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
        raise requests.ReadTimeout(f"{method} {path}: read timed out")

    def _deliver_after(self, method: str, path: str) -> None:
        with self._lock:
            due = [
                p
                for p in self._pending
                if p[0].deliver_on is not None
                and p[0].deliver_on[0] == method
                and p[0].deliver_on[1].fullmatch(path)
            ]
            self._pending = [p for p in self._pending if p not in due]
        for _, request, kwargs in due:
            self._forward(request, kwargs)

    def _forward(self, request: requests.PreparedRequest, kwargs: dict[str, Any]) -> Any:
        response = super().send(request, **kwargs)
        response.content  # noqa: B018 - read it now: the connection goes back to the pool
        with self._lock:
            self.arrived.append((request.method or "", urlsplit(request.url or "").path))
        return response
