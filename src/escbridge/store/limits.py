"""The longest values the store keeps, so that callers can refuse what does not fit up front.

An event whose ticket id or dedupe key is longer than its inbox column is the sender's error
(the receiver answers 400), not a database error at insert time.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from escbridge.store.schema import inbox

#: Characters the inbox keeps of each TicketEvent field it stores, by field name.
INBOX_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        name: int(length)
        for name in ("ticket_id", "dedupe_key", "kind", "actor")
        if (length := getattr(inbox.c[name].type, "length", None))
    }
)

__all__ = ["INBOX_LIMITS"]
