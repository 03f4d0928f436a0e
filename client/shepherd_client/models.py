"""What the gateway answers, as the client hands it on: light, typed views over the JSON
(the SDK carries no copy of the server's schemas; ``raw`` keeps every field)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: The states a job ends in.
TERMINAL = frozenset({"done", "failed", "cancelled"})


@dataclass(frozen=True)
class JobStatus:
    """A job's status: its state, and every field the gateway sent in ``raw`` (model, sheep,
    timestamps, progress, inputs, usage)."""

    job_id: str
    state: str
    raw: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any]) -> JobStatus:
        return cls(job_id=body["job_id"], state=body["state"], raw=body)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def error(self) -> dict[str, Any] | None:
        """``type``, ``message`` and ``traceback`` of a failed job."""
        return self.raw.get("error")

    @property
    def usage(self) -> dict[str, Any] | None:
        """What the job used (wall and CPU seconds, peak memory, bytes in and out)."""
        return self.raw.get("usage")


@dataclass(frozen=True)
class JobEvent:
    """One of a job's events: ``kind`` is its state (``queued``, ``done``, ...), ``progress``,
    or ``status`` for the status a stream opens with; ``raw`` is the CloudEvent."""

    kind: str
    status: JobStatus
    raw: dict[str, Any]

    @classmethod
    def of(cls, name: str, data: str) -> JobEvent:
        body = json.loads(data)
        if name == "status":  # the opening status, not a CloudEvent
            return cls("status", JobStatus.of(body), body)
        return cls(name.removeprefix("job."), JobStatus.of(body["data"]), body)


@dataclass(frozen=True)
class LogLine:
    """A piece of what a job's runner printed, as it printed it."""

    stream: str
    text: str
    attempt: int | None = None
