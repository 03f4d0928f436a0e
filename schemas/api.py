"""The bodies the HTTP API answers with (besides a job's status, ``schemas.status``): the
gateway's handlers build these, and its OpenAPI document is generated from them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.job import ModelRef
from schemas.names import JobId
from schemas.status import JobState


def _absent(value: object) -> bool:
    return value is None


class FieldError(BaseModel):
    model_config = ConfigDict(extra="allow")  # nothing a handler says is dropped

    field: str = Field(description="The field, path parameter or header at fault.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: every error of the API names what is wrong."""

    model_config = ConfigDict(extra="allow")  # members of a problem type's own

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, exclude_if=_absent)
    errors: list[FieldError] | None = Field(
        default=None, exclude_if=_absent, description="Each field at fault (400, 422)."
    )
    required_scope: str | None = Field(
        default=None, exclude_if=_absent, description="The scope a 403 lacked."
    )
    object: str | None = Field(
        default=None, exclude_if=_absent, description="The stored object that cannot be read."
    )


class Accepted(BaseModel):
    job_id: JobId
    state: JobState = Field(
        description="The state the declaration leaves the job in: queued, accepted while "
        "declared inputs are missing, or (a repeat) wherever it got."
    )
    links: dict[str, str] = Field(description="The job's URLs: status, ready, result, ...")
    notes: list[str] = Field(
        description="What the submitter should know: e.g. that the callback_url's host does "
        "not resolve now (each delivery resolves and checks it again)."
    )


class Uploaded(BaseModel):
    job_id: JobId
    file: str = Field(description="Its path below the job's inputs.")
    size: int = Field(description="Bytes stored.")


class Readiness(BaseModel):
    ready: bool = Field(description="Whether the job is terminal: done, failed or cancelled.")
    state: JobState


class ListedFile(BaseModel):
    name: str
    size: int
    url: str


class FileListing(BaseModel):
    """A job's files, when it has more than the default one or not that one."""

    files: list[ListedFile]


class Check(BaseModel):
    ok: bool
    error: str | None = Field(default=None, exclude_if=_absent, description="What is wrong.")


class Health(BaseModel):
    healthy: bool
    broker: Check
    storage: Check


class SheepStatus(BaseModel):
    type: str = Field(description="bare or docker.")
    sheep_class: str | None = Field(
        default=None, description="The class it joined; none for a named sheep."
    )
    alive: bool = Field(description="Heard from within three announcement intervals.")
    runner_alive: bool
    model: ModelRef | None = Field(description="The model its runner holds.")
    current_job: str | None
    last_seen: str | None = Field(description="When it was last heard of (ISO 8601).")
    queue_depth: int | None = Field(
        description="Jobs waiting in its own queue (a sheep of a class: in its class's)."
    )
    devices: list[str] = Field(default_factory=list, description="The devices it holds.")
    started_at: str | None = Field(default=None, description="When it started (ISO 8601).")
    jobs_done: int = Field(default=0, description="Jobs done on it since it started.")
    jobs_failed: int = Field(default=0, description="Jobs failed on it since it started.")
    busy_seconds: float = Field(
        default=0.0, description="Seconds jobs were on its runner since it started."
    )
    duty_cycle: float | None = Field(
        default=None,
        description="busy_seconds over its time up, as of its last announcement (0 to 1); "
        "the difference of two readings gives it over a recent span.",
    )


class PoolStatus(BaseModel):
    queue_depth: int | None = Field(description="Jobs waiting for any sheep.")


class FleetStatus(BaseModel):
    sheep: dict[str, SheepStatus] = Field(
        description="The named sheep, and the sheep of a class heard from lately "
        "(gateway.forget_sheep_after)."
    )
    pool: PoolStatus
    classes: dict[str, PoolStatus] = Field(
        default_factory=dict, description="Jobs waiting for any sheep of each class."
    )


class JobLogs(BaseModel):
    """What a job's runner printed to stdout and stderr while the job ran, stored as it ended
    and decoded as UTF-8 (bytes that are not are shown as U+FFFD). A stream not asked for is
    left out; one longer than the answer may hold is cut to its end, and named in
    ``truncated``."""

    job_id: JobId
    state: JobState
    stdout: str | None = Field(default=None, exclude_if=_absent)
    stderr: str | None = Field(default=None, exclude_if=_absent)
    truncated: list[Literal["stdout", "stderr"]] = Field(
        default_factory=list,
        description="Streams longer than the answer holds (1 MiB each), cut to their last "
        "lines: ask for one alone (stream=...) to get all of it, as text/plain.",
    )
