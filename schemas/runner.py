"""Messages between a sheep (ZMQ DEALER) and its runner (ZMQ ROUTER), one JSON object a frame.

Sheep -> runner: ``hello`` (right after connecting; ZMQ queues it until the runner binds,
so the runner learns whom to answer), ``run``, ``withdraw``.
Runner -> sheep: ``ready`` (answering ``hello`` once the model is loaded), ``started``,
``progress``, ``heartbeat``, ``done``, ``failed``, ``withdrawn``.

A runner runs one job and holds the next one (``run`` while busy): it starts it the moment
the current one ends, with no round trip to the sheep in between, and says ``started``. A
held job that is cancelled is ``withdraw``-n: ``withdrawn`` if it had not started yet,
nothing if it had (its ``started`` is then on its way).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter

from schemas.names import JobId
from schemas.status import ErrorInfo


class _Message(BaseModel):
    # JSON has no NaN or Infinity: accepted, they would be written back as null.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Hello(_Message):
    type: Literal["hello"] = "hello"
    sheep_id: str


class Ready(_Message):
    """The model is loaded and the runner takes jobs."""

    type: Literal["ready"] = "ready"
    model: str
    load_seconds: float = Field(ge=0)
    pid: int


class Run(_Message):
    type: Literal["run"] = "run"
    job_id: JobId
    inputs_dir: str
    outputs_dir: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class Withdraw(_Message):
    """Drop a job handed over ahead of its turn, unless it has started."""

    type: Literal["withdraw"] = "withdraw"
    job_id: JobId


LogOffsets = tuple[NonNegativeInt, NonNegativeInt]
"""How long the runner's stdout and stderr files are at a moment, flushed: where a job's part
of them starts or ends. Absent when they are not files (a container writes to pipes)."""


class Started(_Message):
    type: Literal["started"] = "started"
    job_id: JobId
    logs: LogOffsets | None = None


class Withdrawn(_Message):
    type: Literal["withdrawn"] = "withdrawn"
    job_id: JobId


class ProgressUpdate(_Message):
    type: Literal["progress"] = "progress"
    job_id: JobId
    fraction: float = Field(ge=0.0, le=1.0)
    message: str | None = None


class Heartbeat(_Message):
    """Sent every few seconds while the runner lives, busy or idle."""

    type: Literal["heartbeat"] = "heartbeat"
    job_id: JobId | None = None


class Accounting(_Message):
    """What the runner process used for one job (see ``schemas.status.Usage``). Runners built
    before the split of user and system CPU send ``cpu_seconds`` only: their jobs still run,
    and their usage shows no CPU figures."""

    wall_seconds: float = Field(ge=0)
    cpu_user_seconds: float | None = Field(default=None, ge=0)
    cpu_system_seconds: float | None = Field(default=None, ge=0)
    cpu_seconds: float | None = Field(
        default=None, ge=0, description="Older runners: user and system CPU together."
    )
    max_rss_bytes: int | None = Field(default=None, ge=0)


class Done(_Message):
    type: Literal["done"] = "done"
    job_id: JobId
    accounting: Accounting
    logs: LogOffsets | None = None


class Failed(_Message):
    """The job failed in user code, or the runner could not understand a request.

    ``job_id`` is absent when the request that failed could not even be parsed.
    """

    type: Literal["failed"] = "failed"
    job_id: JobId | None = None
    error: ErrorInfo
    accounting: Accounting | None = Field(
        default=None, description="Set when the job itself failed: what it used until then."
    )
    logs: LogOffsets | None = None


RunnerMessage = Annotated[
    Ready | Started | ProgressUpdate | Heartbeat | Done | Failed | Withdrawn,
    Field(discriminator="type"),
]
SheepMessage = Annotated[Hello | Run | Withdraw, Field(discriminator="type")]

runner_message = TypeAdapter(RunnerMessage)
sheep_message = TypeAdapter(SheepMessage)
