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


class Usage(BaseModel):
    """What a job's last attempt used, as far as it got: the same object in its final status,
    its final CloudEvent and its webhook. A job stopped on its runner (cancelled, or its
    runner died) has no CPU or memory figures, the runner being gone; a job that never
    reached a runner (cancelled while queued, given up) has no usage at all."""

    model_config = ConfigDict(extra="forbid")

    wall_seconds: float = Field(
        ge=0,
        description="Seconds the job was on its runner: from its start to its outcome (or "
        "to being stopped).",
    )
    cpu_user_seconds: float | None = Field(
        default=None,
        ge=0,
        description="CPU seconds in user mode of the runner process (and the child processes "
        "it waited for) during the job.",
    )
    cpu_system_seconds: float | None = Field(
        default=None, ge=0, description="CPU seconds in the kernel, counted the same way."
    )
    max_rss_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Peak resident memory of the runner process during this job: its "
        "high-water mark, reset as the job starts (Linux). None where it cannot be reset.",
    )
    input_bytes: int = Field(ge=0, description="Bytes of the inputs it ran on, payload included.")
    output_bytes: int = Field(ge=0, description="Bytes of the outputs the sheep stored.")
    gpu_seconds: float | None = Field(
        default=None,
        ge=0,
        description="On a sheep with devices: wall_seconds times the devices its runner holds.",
    )
    max_gpu_memory_bytes: int | None = Field(
        default=None,
        ge=0,
        description="On a sheep with GPUs that NVML reads: the peak GPU memory held by the "
        "processes on its devices (its runner's) during the job, sampled every 0.1 s (a "
        "shorter spike can be missed). None where NVML cannot read them.",
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
    usage: Usage | None = Field(default=None, description="On a final status: what it used.")

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
