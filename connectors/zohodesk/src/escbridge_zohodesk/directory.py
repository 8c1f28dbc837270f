"""Team and department names -> ids: the matrix names groups, Desk wants ids.

A matrix group for Zoho Desk is written as one of:

- ``"Team"`` — a team; its department comes with it (the ticket moves department if needed);
- ``"Department/Team"`` — the same, for a team name used in several departments;
- ``"Department"`` — a department, no team (the ticket's team is cleared).

Names compare case-insensitively. Caching (read again after ``ttl`` seconds, or at once when a
name is not found, at most every ``min_reload``) is ``escbridge.connector.GroupDirectory``'s;
what is Zoho's is only how a name becomes a route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from escbridge.connector import Group, GroupDirectory
from escbridge.errors import AmbiguousGroupError, UnknownGroupError

TEAM, DEPARTMENT = "team", "department"


@dataclass(frozen=True)
class Route:
    """Where a group name sends a ticket."""

    name: str
    department_id: str
    team_id: str | None


class Directory:
    """Teams and departments of one portal."""

    def __init__(
        self,
        load_teams: Callable[[], list[dict[str, Any]]],
        load_departments: Callable[[], list[dict[str, Any]]],
        *,
        instance: str = "",
        ttl: float = 600.0,
        min_reload: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        def load() -> list[Group[str]]:
            teams = [
                Group(str(t["id"]), str(t.get("name") or ""), TEAM, _opt(t.get("departmentId")))
                for t in load_teams()
                if t.get("id") is not None
            ]
            departments = [
                Group(str(d["id"]), str(d.get("name") or ""), DEPARTMENT)
                for d in load_departments()
                if d.get("id") is not None
            ]
            return teams + departments

        self.instance = instance
        self.groups: GroupDirectory[str] = GroupDirectory(
            load, instance=instance, ttl=ttl, min_reload=min_reload, clock=clock
        )

    @property
    def loaded(self) -> bool:
        return self.groups.loaded

    def refresh(self) -> None:
        self.groups.refresh()

    def team_names(self) -> dict[str, str]:
        return self.groups.names(TEAM)

    def department_names(self) -> dict[str, str]:
        return self.groups.names(DEPARTMENT)

    def resolve(self, name: str) -> Route:
        """The route for a group name; UnknownGroupError (naming what exists) when there is none."""
        return self.groups.resolve(name, lambda entries: self._route(name, entries))

    def try_resolve(self, name: str) -> Route | str:
        """The route, or the reason there is none (for `escbridge check`)."""
        try:
            return self.resolve(name)
        except UnknownGroupError as exc:
            return str(exc)

    def _route(self, name: str, entries: Sequence[Group[str]]) -> Route:
        wanted = name.strip()
        teams = [g for g in entries if g.kind == TEAM]
        departments = [g for g in entries if g.kind == DEPARTMENT]
        if "/" in wanted:
            dept_name, _, team_name = wanted.partition("/")
            dept = _one(departments, dept_name)
            in_dept = [t for t in teams if t.parent == (dept.id if dept else None)]
            team = _one(in_dept, team_name)
            if dept is None or team is None:
                known = _names(in_dept) if dept else _names(departments)
                raise UnknownGroupError(wanted, self.instance, known)
            return Route(wanted, dept.id, team.id)
        same = [t for t in teams if t.name.casefold() == wanted.casefold()]
        if len(same) > 1:
            by_id = {d.id: d.name for d in departments}
            where = ", ".join(sorted(by_id.get(t.parent or "", "?") for t in same))
            raise AmbiguousGroupError(
                wanted,
                self.instance,
                hint=f'team "{wanted}" exists in several departments ({where}); '
                f'write "Department/{wanted}"',
            )
        if same:
            if not same[0].parent:
                raise UnknownGroupError(wanted, self.instance)  # a team Desk lists without one
            return Route(wanted, same[0].parent, same[0].id)
        department = _one(departments, wanted)
        if department is not None:
            return Route(wanted, department.id, None)
        raise UnknownGroupError(wanted, self.instance, _names(entries))


def _one(entries: Iterable[Group[str]], name: str) -> Group[str] | None:
    key = name.strip().casefold()
    return next((e for e in entries if e.name.casefold() == key), None)


def _names(entries: Iterable[Group[str]]) -> list[str]:
    return sorted({e.name for e in entries})


def _opt(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
