"""Lifecycle events.

Two kinds travel on the topic exchange ``shepherd.events``:

* ``status.<state>`` - a *report* from the gateway or a sheep that something happened to a job.
  Only the notifier consumes these (queue ``shepherd.status``).
* ``job.<state>`` - a CloudEvents 1.0 *notification* the notifier publishes once it has applied
  a report. Subscribers bind to these: they see every transition once, in lifecycle order.
* ``job.rejected`` - a CloudEvents notification the gateway publishes when it refuses a
  submission that arrived on ``<ns>.submit``. It is not a transition: no status changes (a
  conflicting repeat leaves the job it names as it was).

Every notification's ``type`` is ``io.shepherd.job.<kind>``, its routing key ``job.<kind>``:
``kind`` is a :class:`JobState`, ``progress`` (a running job's progress; ``data.state`` is
``running``) or ``rejected``. ``data`` is the job's :class:`JobStatus` for every kind but
``rejected``, whose ``data`` is a :class:`JobRejection`; so a JSON consumer tells them apart by
``type`` alone.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.job import JobDispatch, JobSpec, ModelRef
from schemas.names import JobId, PathSegment
from schemas.status import ErrorInfo, InputFile, JobState, JobStatus, Progress, Usage

CLOUDEVENT_TYPE_PREFIX = "io.shepherd.job."
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
PROGRESS = "progress"
"""The kind of the events that carry a running job's progress."""
REJECTED = "rejected"
"""The kind of the event that says a submission was refused; not a job state."""
STATUS_KINDS = (*(state.value for state in JobState), PROGRESS)
"""The kinds of :class:`JobEvent`, whose ``data`` is the job's status."""


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
    accepted_at: datetime | None = Field(
        default=None,
        description="On a queued report: when the job was accepted. One report then tells "
        "both transitions, and the notifier announces job.accepted first if it has not yet.",
    )
    started_at: datetime | None = Field(
        default=None,
        description="On an outcome report: when the job started, if its running report was "
        "not sent (it ended quickly). One report then tells both transitions.",
    )
    inputs: list[InputFile] | None = Field(
        default=None,
        description="On a running or outcome report: the inputs the attempt ran on.",
    )
    usage: Usage | None = Field(
        default=None, description="On an outcome report: what the attempt used."
    )
    new_job: bool = Field(
        default=False,
        description="Set by the gateway on its first report of a job it has just declared: no "
        "status can exist yet, so the notifier need not look one up in the store.",
    )

    @model_validator(mode="after")
    def _implied_transitions_fit(self) -> StatusReport:
        if self.accepted_at is not None and self.state is not JobState.QUEUED:
            raise ValueError("accepted_at belongs on a queued report only")
        if self.started_at is not None and not (self.state and self.state.terminal):
            raise ValueError("started_at belongs on an outcome report only")
        return self

    @classmethod
    def accepted(cls, spec: JobSpec, *, new_job: bool = False) -> StatusReport:
        """The gateway's report of a job it declared."""
        return cls(
            job_id=spec.job_id,
            state=JobState.ACCEPTED,
            model=spec.model,
            sheep_id=spec.sheep_id,
            time=spec.declared_at,
            new_job=new_job,
        )

    @classmethod
    def queued(cls, dispatch: JobDispatch, *, new_job: bool = False) -> StatusReport:
        """The report a job's message stands for on ``<ns>.status``: queued, and accepted
        before that (only news for a job queued by the declaration that created it)."""
        spec = dispatch.job
        return cls(
            job_id=spec.job_id,
            state=JobState.QUEUED,
            model=spec.model,
            sheep_id=spec.sheep_id,
            time=dispatch.queued_at,
            accepted_at=spec.declared_at,
            new_job=new_job,
        )

    @property
    def routing_key(self) -> str:
        return f"status.{self.state.value if self.state else 'progress'}"

    def implied(self) -> list[StatusReport]:
        """This report as the reports it stands for, in lifecycle order."""
        if self.accepted_at is not None:
            state, time = JobState.ACCEPTED, self.accepted_at
        elif self.started_at is not None:
            state, time = JobState.RUNNING, self.started_at
        else:
            return [self]
        plain = self.model_copy(update={"accepted_at": None, "started_at": None})
        return [plain.model_copy(update={"state": state, "time": time, "error": None}), plain]


class JobEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode notification (routing key ``job.<state>``)."""

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str = Field(
        pattern="^" + re.escape(CLOUDEVENT_TYPE_PREFIX) + f"({'|'.join(STATUS_KINDS)})$",
        description=f"{CLOUDEVENT_TYPE_PREFIX}<state>, or {CLOUDEVENT_TYPE_PREFIX}{PROGRESS}.",
    )
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


class FieldError(BaseModel):
    """One problem of a refused request, named by the dotted path of its field."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Dotted path of the field, or (root).")
    message: str


RejectionReason = Literal[
    "not-json", "unsupported-media-type", "invalid", "too-large", "conflict", "error"
]


class JobRejection(BaseModel):
    """Why a submission on ``<ns>.submit`` was refused: the ``data`` of ``job.rejected``.

    ``reason`` says which rule it broke, as ``POST /start-job`` would have answered: not JSON
    (400), a content type other than JSON (415), not a job request or an unknown sheep (422),
    over ``gateway.max_payload_bytes`` (413), a different request for a job id already declared
    (409), or a fault of the gateway's own (500).
    """

    model_config = ConfigDict(extra="forbid")

    job_id: JobId | None = Field(
        description="The job the submission names, when it names a valid job id."
    )
    reason: RejectionReason
    detail: str = Field(description="What is wrong, for people.")
    errors: list[FieldError] = Field(
        default_factory=list, description="The fields at fault, when the schema refused it."
    )


class JobRejectedEvent(BaseModel):
    """The CloudEvents 1.0 notification ``job.rejected`` (see the module's docstring).

    ``subject`` is the job id the submission names, absent when it names none that is valid.
    """

    model_config = ConfigDict(extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: Literal["io.shepherd.job.rejected"] = CLOUDEVENT_TYPE_PREFIX + REJECTED
    # Absent rather than null: CloudEvents attributes are strings when present.
    subject: JobId | None = Field(default=None, exclude_if=lambda subject: subject is None)
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: Literal["application/json"] = "application/json"
    data: JobRejection

    @property
    def routing_key(self) -> str:
        return f"job.{REJECTED}"


class SheepState(BaseModel):
    """What a sheep announces (routing key ``sheep.<id>``) when its state changes and every
    few seconds while it lives; the gateway's ``GET /status`` is built from these."""

    model_config = ConfigDict(extra="forbid")

    sheep_id: PathSegment
    sheep_class: PathSegment | None = Field(
        default=None, description="The class it joined; none for a named sheep."
    )
    kind: Literal["bare", "docker"]
    leaving: bool = Field(
        default=False, description="Its last word: it stops cleanly, and is gone."
    )
    model: ModelRef | None = Field(default=None, description="The model its runner holds.")
    runner_alive: bool
    current_job: JobId | None = None
    devices: list[str] = Field(
        default_factory=list, description="Its devices (sheep.<id>.devices): GPUs it holds."
    )
    started_at: AwareDatetime | None = Field(default=None, description="When it started.")
    jobs_done: int = Field(default=0, ge=0, description="Jobs it has done since it started.")
    jobs_failed: int = Field(default=0, ge=0, description="Jobs that failed on it since.")
    busy_seconds: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds jobs were on its runner since it started.",
    )
    # Aware and bounded: the gateway computes "alive" from them, and a naive time or an
    # infinite interval would break that arithmetic.
    time: AwareDatetime = Field(default_factory=utcnow)
    interval: float = Field(
        gt=0, le=86_400, description="Seconds until the next announcement at latest."
    )

    @property
    def routing_key(self) -> str:
        return f"sheep.{self.sheep_id}"
