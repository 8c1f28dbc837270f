"""A sync processor whose whole world runs on simulated time, for tests against the emulators."""

from __future__ import annotations

from escbridge.config import Config
from escbridge.processing import Processor
from escbridge.sandbox.driver import SimClock
from escbridge.sync import CallCounter, build_sync_processor
from escbridge.testing.clock import FakeClock

__all__ = ["simulated_processor"]


def simulated_processor(
    config: Config, clock: SimClock, fake: FakeClock
) -> tuple[Processor, CallCounter]:
    """Processor and API-call counter for ``config``: the engine and store read ``clock`` (the
    emulators' simulated day), the connectors' HTTP layer waits on ``fake`` (no real sleeps)."""
    counter = CallCounter()
    processor = build_sync_processor(
        config,
        counter,
        overrides={
            "utcnow": clock.now,
            "wallclock": clock.wall,
            "clock": fake.monotonic,
            "sleep": fake.sleep,
        },
    )
    processor.clock = clock.now
    return processor, counter
