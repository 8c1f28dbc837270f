"""A Freshdesk account behind ``responses``: recorded-shaped answers that remember writes.

Unit tests need more than canned replies to check "no missing note, no double note": the
account keeps tickets and conversations, so a second ``apply`` sees what the first one wrote.
``fail`` makes the next matching call fail, before or after it takes effect.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import responses
from freshdesk_payloads import AGENT_ME, BASE, GROUPS, NOTE, TICKET_FIELDS

Reply = tuple[int, dict[str, str], str]


@dataclass
class Failure:
    method: str
    path: str
    status: int
    body: Any = None
    after: bool = False  # the call takes effect, only the answer is lost
    headers: dict[str, str] = field(default_factory=dict)


class Account:
    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.tickets: dict[int, dict[str, Any]] = {}
        self.conversations: dict[int, list[dict[str, Any]]] = {}
        self.failures: list[Failure] = []
        self.log: list[tuple[str, str, Any]] = []
        self.tags_mode = "replace"
        self.bulk_mode = "sync"  # sync: succeeded/failed; job: job_id/href; odd: neither
        self.job_status_sequence = ["IN_PROGRESS", "SUCCESS"]
        self.job_data: list[dict[str, Any]] | None = None
        self.refuse_in_bulk: set[int] = set()
        self._jobs: dict[str, list[str]] = {}
        self._clock = 0
        url = re.compile(re.escape(BASE) + r"/.*")
        for method in ("GET", "PUT", "POST"):
            rsps.add_callback(method, url, callback=self._handle)

    def add(self, raw: dict[str, Any]) -> None:
        self.tickets[int(raw["id"])] = copy.deepcopy(raw)
        self.conversations.setdefault(int(raw["id"]), [])

    def fail(self, method: str, path: str, status: int, body: Any = None, **kw: Any) -> None:
        self.failures.append(Failure(method, path, status, body, **kw))

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.log if method is None or m == method]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [b for m, p, b in self.log if m == method and re.fullmatch(path, p)]

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        return [c for c in self.conversations[ticket_id] if c["private"]]

    # ------------------------------------------------------------------ routing

    def _handle(self, request: Any) -> Reply:
        path = request.path_url.split("?")[0].removeprefix("/api/v2")
        body = json.loads(request.body) if request.body else None
        self.log.append((request.method, path, body))
        failure = next(
            (f for f in self.failures if f.method == request.method and re.fullmatch(f.path, path)),
            None,
        )
        if failure is not None:
            self.failures.remove(failure)
            if failure.after:
                self._route(request.method, path, body, request)
            text = "" if failure.body is None else json.dumps(failure.body)
            return failure.status, failure.headers, text
        return self._route(request.method, path, body, request)

    def _route(self, method: str, path: str, body: Any, request: Any) -> Reply:
        if (method, path) == ("GET", "/agents/me"):
            return _json(AGENT_ME)
        if (method, path) == ("GET", "/groups"):
            return _json(GROUPS)
        if (method, path) == ("GET", "/ticket_fields"):
            return _json(TICKET_FIELDS)
        if (method, path) == ("POST", "/tickets/bulk_update"):
            return self._bulk(body)
        job = re.fullmatch(r"/jobs/(\w+)", path)
        if job and method == "GET":
            states = self._jobs[job.group(1)]
            status = states.pop(0) if len(states) > 1 else states[0]
            data = self.job_data if status != "IN_PROGRESS" else []
            return _json({"id": job.group(1), "status": status, "data": data or []})
        match = re.fullmatch(r"/tickets/(\d+)(/notes|/reply|/conversations)?", path)
        if match is None:
            return 404, {}, ""
        tid = int(match.group(1))
        if tid not in self.tickets:
            return 404, {}, ""
        sub = match.group(2)
        if sub is None and method == "GET":
            return _json(self.tickets[tid])
        if sub is None and method == "PUT":
            return _json(self._update(tid, body))
        if sub == "/conversations":
            return _json(self.conversations[tid])
        if sub in ("/notes", "/reply") and method == "POST":
            return self._converse(tid, body, private=sub == "/notes")
        return 405, {}, ""

    def _stamp(self) -> str:
        self._clock += 1
        return f"2026-03-11T10:{self._clock // 60:02d}:{self._clock % 60:02d}Z"

    def _update(self, tid: int, body: dict[str, Any]) -> dict[str, Any]:
        ticket = self.tickets[tid]
        for key, value in body.items():
            if key == "tags" and self.tags_mode == "append":
                ticket["tags"] = ticket["tags"] + [t for t in value if t not in ticket["tags"]]
            elif key == "custom_fields":
                ticket["custom_fields"] = {**ticket.get("custom_fields", {}), **value}
            else:
                ticket[key] = value
        ticket["updated_at"] = self._stamp()
        return ticket

    def _bulk(self, body: dict[str, Any]) -> Reply:
        action = body["bulk_action"]
        succeeded, failed = [], []
        for tid in action["ids"]:
            if tid in self.refuse_in_bulk:
                error = {"field": "group_id", "message": "no access", "code": "invalid_value"}
                failed.append({"id": tid, "errors": [error]})
                continue
            self._update(tid, action["properties"])
            succeeded.append(tid)
        if self.bulk_mode == "sync":
            return (
                202,
                {"Content-Type": "application/json"},
                json.dumps({"succeeded": succeeded, "failed": failed}),
            )
        if self.bulk_mode == "job":
            job_id = f"e4d18654f60b5204513155b26c6c{len(self._jobs)}"
            self._jobs[job_id] = list(self.job_status_sequence)
            href = f"https://acme.freshdesk.com/api/v2/jobs/{job_id}"
            return (
                202,
                {"Content-Type": "application/json"},
                json.dumps({"job_id": job_id, "href": href}),
            )
        return 202, {}, ""

    def _converse(self, tid: int, body: dict[str, Any], *, private: bool) -> Reply:
        note = copy.deepcopy(NOTE)
        text = re.sub(r"<[^>]+>", " ", body["body"])
        note.update(
            {
                "id": 100 + sum(len(c) for c in self.conversations.values()),
                "body": body["body"],
                "body_text": " ".join(text.split()),
                "private": bool(body.get("private")) if private else False,
                "ticket_id": tid,
                "user_id": AGENT_ME["id"],
                "source": 2 if private else 0,
            }
        )
        self.conversations[tid].append(note)
        self.tickets[tid]["updated_at"] = self._stamp()
        return (
            201,
            {"Content-Type": "application/json", "Location": f"{BASE}/conversations/1"},
            json.dumps(note),
        )


def _json(data: Any) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps(data)
