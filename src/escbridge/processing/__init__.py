"""The one place where an event or a ticket becomes an escalation, exactly once in effect.

Processing runs in three phases, each in its own module:

- :mod:`~escbridge.processing.plan` — lock, fetch, recover, decide, write the intent;
- :mod:`~escbridge.processing.apply` — the only connector write (``apply_many`` when several
  plans are ready);
- :mod:`~escbridge.processing.record` — the escalation recorded, the lock released, the job done.

:mod:`~escbridge.processing.worker` runs them for each inbox event; ``escbridge sync`` runs
them a page of tickets at a time, with the store work done once per page.
"""

from escbridge.errors import ApplyFailedError, ProcessingError, UnknownInstanceError
from escbridge.processing.apply import apply_plan, apply_plans, check
from escbridge.processing.plan import (
    DecisionEngine,
    Plan,
    Planner,
    Step,
    landed,
    partly_landed,
)
from escbridge.processing.record import Outcome, OutcomeStatus, Recorder
from escbridge.processing.settings import (
    Clock,
    ProcessingConfig,
    default_worker_id,
    utcnow,
)
from escbridge.processing.worker import (
    Failure,
    Processor,
    RunReport,
    backoff_delay,
    build_processor,
    classify,
)

__all__ = [
    "ApplyFailedError",
    "Clock",
    "DecisionEngine",
    "Failure",
    "Outcome",
    "OutcomeStatus",
    "Plan",
    "Planner",
    "ProcessingConfig",
    "ProcessingError",
    "Processor",
    "Recorder",
    "RunReport",
    "Step",
    "UnknownInstanceError",
    "apply_plan",
    "apply_plans",
    "backoff_delay",
    "build_processor",
    "check",
    "classify",
    "default_worker_id",
    "landed",
    "partly_landed",
    "utcnow",
]
