"""What `escbridge report` reads from the store: the escalation history of two periods.

It reads the columns the migrations create (revision 0003 added the ticket's channel, the
helpdesk type, the group the ticket left, and ``ticket_state.resolved_at``); escalations
recorded before that leave those facts None, and the report says what it could not show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from escbridge.reports.figures import FACTS, EscalationRow
from escbridge.store.reads import reading
from escbridge.store.schema import escalations, ticket_state
from escbridge.store.store import Store


@dataclass(frozen=True)
class History:
    """Escalation rows read from the store, the facts it records, and every instance it knows."""

    rows: tuple[EscalationRow, ...]
    recorded: frozenset[str]
    instances: frozenset[str]


_HISTORY_COLUMNS = (
    escalations.c.instance,
    escalations.c.ticket_id,
    escalations.c.from_level,
    escalations.c.to_level,
    escalations.c.rule_id,
    escalations.c.kind,
    escalations.c.decided_at,
    escalations.c.reasons,
    escalations.c.ticket_created_at,
    escalations.c.to_group,
    escalations.c.channel,
    escalations.c.helpdesk,
    escalations.c.from_group,
    ticket_state.c.resolved_at,
)


def load_history(
    store: Store,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    helpdesks: Mapping[str, str] | None = None,
) -> History:
    """Escalations decided in ``[start, end)`` (oldest first), for some instances or all.

    ``helpdesks`` maps instance names to connector types (from escbridge.yaml), for escalations
    recorded before the store kept the type. The caller checks the schema (``check_schema``).
    """
    query = (
        sa.select(*_HISTORY_COLUMNS)
        .select_from(
            escalations.outerjoin(
                ticket_state,
                sa.and_(
                    ticket_state.c.instance == escalations.c.instance,
                    ticket_state.c.ticket_id == escalations.c.ticket_id,
                ),
            )
        )
        .where(escalations.c.decided_at >= start, escalations.c.decided_at < end)
        .order_by(escalations.c.decided_at, escalations.c.id)
    )
    if instances:
        query = query.where(escalations.c.instance.in_(list(instances)))
    known = sa.union(
        sa.select(escalations.c.instance), sa.select(ticket_state.c.instance)
    ).subquery()
    types = dict(helpdesks or {})
    with reading(store) as connection:
        rows = tuple(_row(r, types) for r in connection.execute(query).mappings())
        seen = frozenset(str(i) for i in connection.execute(sa.select(known.c[0])).scalars())
    return History(rows, FACTS, seen)


def _row(r: sa.RowMapping, types: Mapping[str, str]) -> EscalationRow:
    reasons = r["reasons"] if isinstance(r["reasons"], list) else []
    return EscalationRow(
        instance=r["instance"],
        ticket_id=r["ticket_id"],
        from_level=r["from_level"],
        to_level=r["to_level"],
        rule_id=r["rule_id"],
        kind=r["kind"],
        decided_at=r["decided_at"],
        reasons=tuple(str(x) for x in reasons),
        ticket_created_at=r["ticket_created_at"],
        helpdesk=r["helpdesk"] or types.get(r["instance"]),
        channel=r["channel"],
        source_group=r["from_group"],
        resolved_at=r["resolved_at"],
        to_group=r["to_group"],
    )


def read_history(
    url: str,
    start: datetime,
    end: datetime,
    *,
    instances: Sequence[str] = (),
    helpdesks: Mapping[str, str] | None = None,
) -> History:
    """:func:`load_history` from the store at ``url``, opened for this read and closed after.

    Raises ValueError for a URL that names no usable database, StoreUnavailableError (or its
    StoreSchemaError) when the database cannot answer or is at another schema version.
    """
    try:
        store = Store(url)
    except sa.exc.ArgumentError as error:  # SQLAlchemy cannot parse the URL at all
        raise ValueError(str(error)) from error
    with store:
        store.check_schema()
        return load_history(store, start, end, instances=instances, helpdesks=helpdesks)


__all__ = ["History", "load_history", "read_history"]
