"""Team and department names -> ids, cached: the matrix names groups, Desk wants ids.

A matrix group for Zoho Desk is written as one of:

- ``"Team"`` — a team; its department comes with it (the ticket moves department if needed);
- ``"Department/Team"`` — the same, for a team name used in several departments;
- ``"Department"`` — a department, no team (the ticket's team is cleared).

Names compare case-insensitively. The lists are read once and again after ``ttl`` seconds, or
at once when a name is not found (a team created a minute ago), at most every ``min_reload``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from escbridge_zohodesk.errors import UnknownGroup


@dataclass(frozen=True)
class Route:
    """Where a group name sends a ticket."""

    name: str
    department_id: str
    team_id: str | None


@dataclass(frozen=True)
class _Entry:
    id: str
    name: str
    department_id: str | None


class Directory:
    """Teams and departments of one portal."""

    def __init__(
        self,
        load_teams: Callable[[], list[dict[str, Any]]],
        load_departments: Callable[[], list[dict[str, Any]]],
        *,
        ttl: float = 600.0,
        min_reload: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load_teams = load_teams
        self._load_departments = load_departments
        self._ttl = ttl
        self._min_reload = min_reload
        self._clock = clock
        self._lock = threading.Lock()
        self._teams: list[_Entry] = []
        self._departments: list[_Entry] = []
        self._loaded_at: float | None = None

    # -- lookups -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def team_names(self) -> dict[str, str]:
        return {t.id: t.name for t in self._teams}

    def department_names(self) -> dict[str, str]:
        return {d.id: d.name for d in self._departments}

    def resolve(self, name: str) -> Route:
        """The route for a group name; UnknownGroup (naming what exists) when there is none."""
        self._ensure()
        try:
            return self._resolve(name)
        except UnknownGroup:
            if not self._reload_allowed():
                raise
        self._ensure(force=True)
        return self._resolve(name)

    def try_resolve(self, name: str) -> Route | str:
        """The route, or the reason there is none (for `escbridge check`)."""
        try:
            return self.resolve(name)
        except UnknownGroup as exc:
            return str(exc)

    # -- internals -----------------------------------------------------------------------------

    def _resolve(self, name: str) -> Route:
        wanted = name.strip()
        if "/" in wanted:
            dept_name, _, team_name = wanted.partition("/")
            dept = self._one(self._departments, dept_name, "department")
            teams = [
                t
                for t in self._teams
                if t.name.lower() == team_name.strip().lower() and t.department_id == dept.id
            ]
            if not teams:
                raise UnknownGroup(
                    f'no team "{team_name.strip()}" in department "{dept.name}"'
                    f"{self._known(self._teams_in(dept.id), 'teams there')}"
                )
            return Route(wanted, dept.id, teams[0].id)
        teams = [t for t in self._teams if t.name.lower() == wanted.lower()]
        if len(teams) > 1:
            dept_names = self.department_names()
            where = ", ".join(sorted(dept_names.get(t.department_id or "", "?") for t in teams))
            raise UnknownGroup(
                f'team "{wanted}" exists in several departments ({where}); '
                f'write "Department/{wanted}"'
            )
        if teams:
            team = teams[0]
            if not team.department_id:
                raise UnknownGroup(f'team "{wanted}" has no department in Desk\'s answer')
            return Route(wanted, team.department_id, team.id)
        depts = [d for d in self._departments if d.name.lower() == wanted.lower()]
        if depts:
            return Route(wanted, depts[0].id, None)
        names = sorted({t.name for t in self._teams} | {d.name for d in self._departments})
        raise UnknownGroup(
            f'"{wanted}" is no team or department of this Zoho Desk portal'
            f"{self._known(names, 'known')}"
        )

    def _teams_in(self, department_id: str) -> list[str]:
        return sorted(t.name for t in self._teams if t.department_id == department_id)

    @staticmethod
    def _known(names: list[str], label: str) -> str:
        if not names:
            return ""
        shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
        return f" ({label}: {shown})"

    def _one(self, entries: list[_Entry], name: str, kind: str) -> _Entry:
        for entry in entries:
            if entry.name.lower() == name.strip().lower():
                return entry
        raise UnknownGroup(
            f'no {kind} "{name.strip()}"{self._known(sorted(e.name for e in entries), "known")}'
        )

    def _reload_allowed(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self._min_reload

    def _ensure(self, *, force: bool = False) -> None:
        with self._lock:
            now = self._clock()
            if not force and self._loaded_at is not None and now - self._loaded_at < self._ttl:
                return
            teams = [
                _Entry(str(t["id"]), str(t.get("name") or ""), _opt(t.get("departmentId")))
                for t in self._load_teams()
                if t.get("id") is not None
            ]
            departments = [
                _Entry(str(d["id"]), str(d.get("name") or ""), str(d["id"]))
                for d in self._load_departments()
                if d.get("id") is not None
            ]
            self._teams, self._departments = teams, departments
            self._loaded_at = now

    def refresh(self) -> None:
        self._ensure(force=True)


def _opt(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
