"""Lifecycle events.

Two kinds travel on the topic exchange ``shepherd.events``:

* ``status.<state>`` - a *report* from the gateway or a sheep that something happened to a job.
  Only the notifier consumes these (queue ``shepherd.status``).
* ``job.<state>`` - a CloudEvents 1.0 *notification* the notifier publishes once it has applied
  a report. Subscribers bind to these: they see every transition once, in lifecycle order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.job import ModelRef
from schemas.names import JobId, PathSegment
from schemas.status import ErrorInfo, JobState, JobStatus, Progress

CLOUDEVENT_TYPE_PREFIX = "io.shepherd.job."
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


def utcnow() -> datetime:
    return datetime.now(UTC)


class StatusReport(BaseModel):
    """A producer's report of a transition (routing key ``status.<state>``).

    ``state`` is absent for progress-only reports; the notifier orders reports by
    ``(attempt, state rank)`` and never lets a stale one overwrite a newer or terminal state.
    """

    model_config = ConfigDict(extra="forbid")

    job_id: JobId
    state: JobState | None = None
    model: ModelRef
    attempt: int = Field(default=1, ge=1)
    sheep_id: PathSegment | None = None
    time: datetime = Field(default_factory=utcnow)
    error: ErrorInfo | None = None
    progress: Progress | None = None

    @property
    def routing_key(self) -> str:
        return f"status.{self.state.value if self.state else 'progress'}"


class JobEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode notification (routing key ``job.<state>``)."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    subject: JobId
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: Literal["application/json"] = "application/json"
    data: JobStatus

    @classmethod
    def of(cls, status: JobStatus, source: str, kind: str | None = None) -> JobEvent:
        """``kind`` is the state, or ``progress`` for progress updates of a running job."""
        kind = kind or status.state.value
        return cls(
            source=source, type=CLOUDEVENT_TYPE_PREFIX + kind, subject=status.job_id, data=status
        )

    @property
    def routing_key(self) -> str:
        return "job." + self.type.removeprefix(CLOUDEVENT_TYPE_PREFIX)


class SheepState(BaseModel):
    """What a sheep announces (routing key ``sheep.<id>``) when its state changes and every
    few seconds while it lives; the gateway's ``GET /status`` is built from these."""

    model_config = ConfigDict(extra="forbid")

    sheep_id: PathSegment
    kind: Literal["bare", "docker"]
    model: ModelRef | None = Field(default=None, description="The model its runner holds.")
    runner_alive: bool
    current_job: JobId | None = None
    # Aware and bounded: the gateway computes "alive" from them, and a naive time or an
    # infinite interval would break that arithmetic.
    time: AwareDatetime = Field(default_factory=utcnow)
    interval: float = Field(
        gt=0, le=86_400, description="Seconds until the next announcement at latest."
    )

    @property
    def routing_key(self) -> str:
        return f"sheep.{self.sheep_id}"
