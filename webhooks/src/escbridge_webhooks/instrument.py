"""Counting helpdesk API errors for /metrics, around the connectors of an embedded worker.

The connectors raise typed errors (``escbridge.http.ApiError`` and its subclasses) once their
own retries are spent, and report a refused apply as an ``ApplyResult`` that is not ok. A thin
wrapper counts both, by helpdesk and error type, and otherwise gets out of the way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from escbridge.errors import ApiError

if TYPE_CHECKING:
    from prometheus_client import Counter

    from escbridge.connector import (
        ApplyResult,
        CheckReport,
        ConflictHandler,
        Connector,
        TicketPage,
    )
    from escbridge.model import Actions, Ticket
    from escbridge.processing import Processor

__all__ = ["CountingConnector", "count_api_errors"]


class CountingConnector:
    """Delegates every call to ``inner``; counts the API errors of the calls that reach the API."""

    def __init__(self, inner: Connector, counter: Counter, helpdesk: str) -> None:
        self._inner = inner
        self._counter = counter
        self._helpdesk = helpdesk
        self.instance = inner.instance

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def info(self) -> Any:
        return self._inner.info

    def _count(self, error: str) -> None:
        self._counter.labels(self._helpdesk, self.instance, error).inc()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as error:
            self._count(type(error).__name__)
            raise

    def _results(self, results: Sequence[ApplyResult]) -> None:
        for result in results:
            if not result.ok:
                self._count("ApplyFailed")

    def check(self, groups: Collection[str]) -> CheckReport:
        report: CheckReport = self._call(self._inner.check, groups)
        return report

    def fetch_ticket(self, ticket_id: str) -> Ticket:
        ticket: Ticket = self._call(self._inner.fetch_ticket, ticket_id)
        return ticket

    def iter_tickets(self, since: datetime | None, cursor: str | None) -> Iterator[TicketPage]:
        pages = self._inner.iter_tickets(since, cursor)
        while True:
            try:
                page = self._call(next, pages)
            except StopIteration:
                return
            yield page

    def apply(
        self, ticket: Ticket, actions: Actions, *, on_conflict: ConflictHandler | None = None
    ) -> ApplyResult:
        result: ApplyResult = self._call(
            self._inner.apply, ticket, actions, on_conflict=on_conflict
        )
        self._results([result])
        return result

    def apply_many(
        self,
        items: Sequence[tuple[Ticket, Actions]],
        *,
        on_conflict: ConflictHandler | None = None,
    ) -> list[ApplyResult]:
        results: list[ApplyResult] = self._call(
            self._inner.apply_many, items, on_conflict=on_conflict
        )
        self._results(results)
        return results


def count_api_errors(processor: Processor, counter: Counter, helpdesks: dict[str, str]) -> None:
    """Wrap the processor's connectors so their API errors are counted in ``counter``."""
    for name, connector in list(processor.connectors.items()):
        if isinstance(connector, CountingConnector):
            continue
        wrapped = CountingConnector(connector, counter, helpdesks.get(name, connector.info.name))
        processor.connectors[name] = cast("Connector", wrapped)
