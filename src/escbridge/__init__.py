"""escbridge: one escalation matrix, enforced on the helpdesks you already run."""

from escbridge.model import (
    Actions,
    Channel,
    Decision,
    Destination,
    EscalationRecord,
    Priority,
    RuleOutcome,
    Status,
    Ticket,
)

__version__ = "0.2.0"

__all__ = [
    "Actions",
    "Channel",
    "Decision",
    "Destination",
    "EscalationRecord",
    "Priority",
    "RuleOutcome",
    "Status",
    "Ticket",
    "__version__",
]
