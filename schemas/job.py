"""The job request (``POST /start-job`` body, ``shepherd.submit`` message) and job.json."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from schemas.names import JobId, PathSegment, RelativePath

PAYLOAD_INPUT = "input.json"
"""The file an inline payload becomes for the runner: ``inputs/input.json``."""

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
"""What makes a submission without a job id repeatable: 1 to 255 visible ASCII characters
(HTTP ``Idempotency-Key``, AMQP ``message_id``). Anchored: the OpenAPI document gives it as
a pattern, which JSON Schema searches for anywhere in the value."""


def new_job_id(idempotency_key: str | None = None, submitter: str = "") -> str:
    """A job id Shepherd makes: random, or, for a submission with an idempotency key, derived
    from the key and who submitted it, so that a repeat names the same job (a repeat with a
    different request is then a conflict, as with a client's own id)."""
    if idempotency_key is None:
        return f"job-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{submitter}\0{idempotency_key}".encode()).hexdigest()
    return f"job-{digest[:32]}"


class ModelRef(BaseModel):
    """Which model (and version) runs the job; both become path segments and image tags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PathSegment
    version: PathSegment = "latest"

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


Priority = Literal["high", "normal", "low"]
"""Which job a sheep takes first when several wait for it (see docs/architecture.md)."""
#: The priorities, highest first.
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


#: JSON Schema of the rule ``JobRequest._one_target`` checks: not both a sheep and a class.
_ONE_TARGET = {
    "not": {
        "required": ["sheep_id", "sheep_class"],
        "properties": {"sheep_id": {"type": "string"}, "sheep_class": {"type": "string"}},
    }
}


class JobRequest(BaseModel):
    """What a client submits. Unknown fields are refused so typos never pass silently."""

    # JSON has no NaN or Infinity: accepted, they would be written back as null.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=_ONE_TARGET)

    job_id: JobId | None = Field(
        default=None,
        description="The job's id, chosen by the client; omitted, Shepherd makes one and "
        "returns it. A repeat of a submission is recognised by its job id or, without one, "
        "by its Idempotency-Key header (HTTP) or message_id (AMQP).",
    )
    model: ModelRef
    sheep_id: PathSegment | None = Field(
        default=None,
        description="Run on this named sheep; omit (and sheep_class) to let any idle sheep "
        "take the job.",
    )
    sheep_class: PathSegment | None = Field(
        default=None,
        description="Run on any sheep of this class (sheep_classes in the config); not with "
        "sheep_id.",
    )
    payload: Any = Field(
        default=None,
        description="Inline input, a string or any JSON value; the runner finds it as "
        "inputs/input.json. Up to gateway.dispatch_payload_bytes, in a job that declares no "
        "inputs, it is kept in the job record and travels with the job; otherwise it is "
        "stored as <job_id>/inputs/input.json, a declared input.",
    )
    inputs: list[RelativePath] | None = Field(
        default=None,
        description="Input files the job waits for under <job_id>/inputs/ (input.json, for "
        "a payload, is added). Omitted: the payload is the only input, or without one, "
        "whatever is there when the job starts.",
    )
    callback_url: AnyHttpUrl | None = Field(
        default=None, description="Webhook notified when the job reaches a terminal state."
    )
    timeout: PositiveFloat | None = Field(
        default=None, description="Seconds the job may run before it is stopped and failed."
    )
    priority: Priority | None = Field(
        default=None,
        description="A free sheep takes the highest-priority job waiting for it (a lower one "
        "is never passed over more than 10 times in a row). Omitted: the model's default "
        "(models.<name>.priority), normal unless configured.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Opaque, echoed back.")

    @model_validator(mode="after")
    def _one_target(self) -> JobRequest:
        if self.sheep_id is not None and self.sheep_class is not None:
            raise ValueError("give sheep_id or sheep_class, not both")
        return self

    def identified(self, idempotency_key: str | None = None, submitter: str = "") -> JobRequest:
        """This request with a job id: its own, else one Shepherd makes (:func:`new_job_id`)."""
        if self.job_id is not None:
            return self
        return self.model_copy(update={"job_id": new_job_id(idempotency_key, submitter)})

    def payload_bytes(self) -> bytes | None:
        """The payload as the runner reads it: a string verbatim (so pre-serialised JSON keeps
        its bytes), any other value as compact JSON."""
        if self.payload is None:
            return None
        if isinstance(self.payload, str):
            return self.payload.encode()
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def digest(self) -> str:
        """Fingerprint deciding whether a repeated submission is identical (200) or not (409)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class JobSpec(BaseModel):
    """``<job_id>/job.json``: the declared job, as sheep receive it.

    A small inline payload of a job without declared inputs is kept here (``payload``) and
    is the job's only input, so that declaring the job is one write, queueing it one message,
    and its sheep reads nothing to run it. Any other payload is stored as
    ``inputs/input.json`` and declared (``inputs``), so the job waits for it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    job_id: JobId
    model: ModelRef
    sheep_id: PathSegment | None = None
    sheep_class: PathSegment | None = None
    inputs: list[RelativePath] | None = None
    callback_url: AnyHttpUrl | None = None
    timeout: PositiveFloat | None = None
    priority: Priority | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    request_digest: str
    declared_at: datetime
    payload: str | None = Field(
        default=None,
        description="The inline payload as the runner reads it (inputs/input.json), when it "
        "is kept here rather than stored under inputs/: then the job's only input.",
    )

    @classmethod
    def from_request(
        cls, request: JobRequest, declared_at: datetime, carried_bytes: int = 0
    ) -> JobSpec:
        """The spec of ``request``; its payload kept inline when the job declares no inputs
        and the payload is at most ``carried_bytes`` long, else a declared input."""
        if request.job_id is None:
            raise ValueError("a job request gets its id (JobRequest.identified) before its spec")
        inputs = request.inputs
        payload = request.payload_bytes()
        carried = payload is not None and inputs is None and len(payload) <= carried_bytes
        if payload is not None and not carried and PAYLOAD_INPUT not in (inputs or []):
            inputs = [*(inputs or []), PAYLOAD_INPUT]
        return cls(
            job_id=request.job_id,
            model=request.model,
            sheep_id=request.sheep_id,
            sheep_class=request.sheep_class,
            inputs=inputs,
            callback_url=request.callback_url,
            timeout=request.timeout,
            priority=request.priority,
            metadata=request.metadata,
            request_digest=request.digest(),
            declared_at=declared_at,
            payload=payload.decode() if carried and payload is not None else None,
        )


class JobDispatch(BaseModel):
    """The message on ``shepherd.jobs`` that a sheep consumes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    job: JobSpec
    queued_at: datetime
    timeout: PositiveFloat | None = Field(
        default=None, description="Effective timeout: the request's, else the model default."
    )
    priority: Priority = Field(
        default="normal", description="Effective priority: the request's, else the model's."
    )
