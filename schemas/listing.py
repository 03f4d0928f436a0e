"""The job listing, ``GET /jobs``: one line per job, newest first, paged by an opaque cursor.

A summary is what a listing needs to pick a job out (its state, model, sheep, times and, for
a failed job, why); its whole status is ``GET /jobs/{job_id}/status``.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.job import ModelRef
from schemas.names import SEGMENT, JobId, PathSegment
from schemas.status import JobState, JobStatus

#: The most jobs one page may hold.
MAX_PAGE = 1000
#: A page's size when ``limit`` is not given.
DEFAULT_PAGE = 100
#: A cursor: the acceptance time (microseconds since the epoch) and the id of the job a page
#: ended with; the next page lists the jobs after it.
CURSOR_PATTERN = rf"^[0-9]{{1,18}}\.{SEGMENT}$"
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
#: Characters of a failed job's error message a summary keeps.
ERROR_MESSAGE_CHARS = 500


class ErrorSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    message: str = Field(description=f"At most {ERROR_MESSAGE_CHARS} characters of it.")


class JobSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: JobId
    state: JobState
    model: ModelRef
    sheep_id: PathSegment | None = None
    attempt: int = Field(default=1, ge=1)
    accepted_at: datetime = Field(description="When it was accepted: the listing's order.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorSummary | None = None

    @classmethod
    def of(cls, status: JobStatus, seen_at: datetime) -> JobSummary:
        """The summary of ``status``, read in an event of ``seen_at`` (its acceptance time
        when the status does not carry one)."""
        error = status.error
        return cls(
            job_id=status.job_id,
            state=status.state,
            model=status.model,
            sheep_id=status.sheep_id,
            attempt=status.attempt,
            accepted_at=status.accepted_at or seen_at,
            started_at=status.started_at,
            finished_at=status.finished_at,
            error=None
            if error is None
            else ErrorSummary(type=error.type, message=error.message[:ERROR_MESSAGE_CHARS]),
        )


class JobPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSummary]
    next_cursor: str | None = Field(
        description="Pass it as cursor for the next page; null on the last page."
    )


class JobFilter(BaseModel):
    """Which jobs a listing or a count takes; unknown parameters are refused (a typo filters
    nothing)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)?$",
        description="Only jobs of this model: name, or name:version.",
    )
    sheep: PathSegment | None = Field(default=None, description="Only jobs this sheep ran.")
    since: AwareDatetime | None = Field(
        default=None, description="Only jobs accepted at or after this time (RFC 3339)."
    )

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        """Not a number of seconds, which pydantic would take for a Unix time."""
        if isinstance(value, str) and not _DATE_TIME.match(value):
            raise ValueError("must be an RFC 3339 date-time with its zone: 2026-12-01T00:00:00Z")
        return value


class JobListQuery(JobFilter):
    """The query of ``GET /jobs``."""

    state: list[JobState] = Field(
        default_factory=list,
        description="Only jobs in one of these states (repeated, or comma-separated).",
    )
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Jobs per page.")
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="next_cursor of the page before: the listing goes on after that job.",
    )


class JobCounts(BaseModel):
    """``GET /job-counts``: how many jobs the index holds in each state."""

    model_config = ConfigDict(extra="forbid")

    counts: dict[JobState, int] = Field(description="Every state, with 0 for none.")
    total: int
