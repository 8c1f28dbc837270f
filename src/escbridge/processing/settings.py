"""The `processing:` section of escbridge.yaml, the clock and who a worker is."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from escbridge.errors import ConfigError

if TYPE_CHECKING:
    from escbridge.config import Config

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    """host:pid — unique among live workers, readable in `escbridge jobs`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ProcessingConfig(BaseModel):
    """How workers retry and share work. Every key is optional::

    processing:
      max_attempts: 8          # tries per event before it is dead-lettered
      backoff_seconds: 2       # first retry delay; doubles each attempt, with jitter
      max_backoff_seconds: 900 # cap on one retry delay (15 minutes)
      lease_seconds: 300       # a worker silent this long is presumed dead; its events return
      batch_size: 10           # events one worker claims at a time
      poll_seconds: 1          # how often an idle worker looks for new events
      concurrency: 1           # worker threads per `escbridge worker` (--concurrency wins)
      due_queue: true          # workers act on time limits at their deadline (the shadow's
                               # due-queue); false: only events (and sync runs) are processed
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=8, ge=1, le=1000)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=900.0, gt=0)
    lease_seconds: float = Field(default=300.0, gt=0)
    batch_size: int = Field(default=10, ge=1, le=1000)
    poll_seconds: float = Field(default=1.0, gt=0)
    concurrency: int = Field(default=1, ge=1, le=256)
    due_queue: bool = True

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @classmethod
    def from_config(cls, config: Config) -> ProcessingConfig:
        """The section of a loaded escbridge.yaml; errors point at its file:line."""
        try:
            return cls.model_validate(config.processing)
        except PydanticValidationError as error:
            from escbridge.yamlfile import YamlDocument, problems_from_validation

            doc = config.source or YamlDocument(str(config.path), None, {})
            raise ConfigError(
                problems_from_validation(doc, error, prefix=("processing",))
            ) from None
