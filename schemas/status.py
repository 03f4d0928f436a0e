"""Job state and status: what ``GET /jobs/{id}/status`` returns and ``status.json`` holds
once the job has ended."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.job import ModelRef
from schemas.names import JobId, PathSegment, RelativePath


class JobState(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def rank(self) -> int:
        """Position in the lifecycle; terminal states share the last rank."""
        return _RANK[self]


TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
_RANK = {
    JobState.ACCEPTED: 0,
    JobState.QUEUED: 1,
    JobState.RUNNING: 2,
    JobState.DONE: 3,
    JobState.FAILED: 3,
    JobState.CANCELLED: 3,
}


class ErrorInfo(BaseModel):
    """Why a job failed: the exception type, its message and, for user code, the traceback."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    traceback: str | None = None


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(ge=0.0, le=1.0)
    message: str | None = None


class InputFile(BaseModel):
    """One input a job ran on, as the store described it when the sheep fetched it."""

    model_config = ConfigDict(extra="forbid")

    name: RelativePath = Field(description="Its path under <job_id>/inputs/.")
    size: int = Field(ge=0)
    etag: str | None = Field(
        default=None,
        description="The store's ETag (the MD5 of an object stored in one PUT); for a payload "
        "kept in job.json, the MD5 of the payload. A later overwrite in the store changes it.",
    )


class JobStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: JobId
    state: JobState
    model: ModelRef
    sheep_id: PathSegment | None = Field(
        default=None, description="The sheep that runs or ran the job."
    )
    attempt: int = Field(default=1, ge=1, description="Delivery attempt; grows on redelivery.")
    accepted_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    progress: Progress | None = None
    missing_inputs: list[RelativePath] | None = Field(
        default=None, description="Declared inputs not yet uploaded (accepted jobs only)."
    )
    inputs: list[InputFile] | None = Field(
        default=None, description="What the job's latest attempt ran on, once it started."
    )

    @property
    def ready(self) -> bool:
        return self.state.terminal


class LiveSnapshot(BaseModel):
    """``_shepherd/notifier/live.json``: the statuses of the jobs that had not ended when the
    notifier took it. With the job events of the history from ``offset`` on, it gives every
    job's current status (see ``services.common.live``)."""

    model_config = ConfigDict(extra="forbid")

    taken_at: AwareDatetime
    offset: int = Field(ge=0, description="Where in <ns>.event-stream a replay starts.")
    statuses: list[JobStatus]
