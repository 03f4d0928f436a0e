"""Where a job's objects live in the bucket: one prefix per job.

<job_id>/job.json        the declared job (JobSpec), with a small inline payload
<job_id>/dispatch.json   claimed once, with If-None-Match, by whoever queues a job that
                         declares inputs
<job_id>/inputs/...      inputs; a larger inline payload becomes inputs/input.json
<job_id>/outputs/...     what the runner wrote
<job_id>/status.json     the job's final status, written once it has ended, by the notifier
<job_id>/cancel.json     a cancellation request, written by the gateway before it answers
<job_id>/logs/...        runner stdout/stderr for this job

_shepherd/...            Shepherd's own bookkeeping; no job id starts with "_", so no job
                         can collide with it:
_shepherd/pending/<job_id>   the job waits for declared inputs (removed once it is queued)
_shepherd/notifier/<namespace>/live.json   the statuses of the jobs that have not ended, as
                                          of a moment
                               (see services.common.live)
_shepherd/webhooks/disabled/<name>   a webhook subscription that answered 410 Gone
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.names import is_job_id

Part = Literal["job", "dispatch", "cancel", "input", "output", "status", "log", "webhook"]


def job_prefix(job_id: str) -> str:
    return f"{job_id}/"


def job_key(job_id: str) -> str:
    return f"{job_id}/job.json"


def dispatch_key(job_id: str) -> str:
    return f"{job_id}/dispatch.json"


def status_key(job_id: str) -> str:
    return f"{job_id}/status.json"


def cancel_key(job_id: str) -> str:
    return f"{job_id}/cancel.json"


def inputs_prefix(job_id: str) -> str:
    return f"{job_id}/inputs/"


def outputs_prefix(job_id: str) -> str:
    return f"{job_id}/outputs/"


def logs_prefix(job_id: str) -> str:
    return f"{job_id}/logs/"


def webhooks_prefix(job_id: str) -> str:
    """Where the notifier records each attempt to deliver the job's events to a webhook."""
    return f"{job_id}/webhooks/"


def webhook_attempt_key(job_id: str, webhook_id: str, attempt: int) -> str:
    return f"{webhooks_prefix(job_id)}{webhook_id}/{attempt:04d}.json"


RESERVED_PREFIX = "_shepherd/"
PENDING_PREFIX = f"{RESERVED_PREFIX}pending/"


def live_snapshot_key(namespace: str) -> str:
    """The notifier's snapshot of the statuses of jobs that have not ended, per namespace
    (each has its event history)."""
    return f"{RESERVED_PREFIX}notifier/{namespace}/live.json"


"""The index of jobs waiting for declared inputs, so that a lost upload notification (MinIO
drops them while RabbitMQ is down) does not leave a job waiting forever."""


def pending_key(job_id: str) -> str:
    return f"{PENDING_PREFIX}{job_id}"


def pending_job(key: str) -> str | None:
    """The job a key of the pending index stands for; None for any other key."""
    job_id = key.removeprefix(PENDING_PREFIX)
    return job_id if key.startswith(PENDING_PREFIX) and is_job_id(job_id) else None


DISABLED_WEBHOOKS_PREFIX = f"{RESERVED_PREFIX}webhooks/disabled/"
"""Webhook subscriptions disabled by a 410 Gone, so that they stay disabled after a restart."""


def disabled_webhook_key(name: str) -> str:
    return f"{DISABLED_WEBHOOKS_PREFIX}{name}"


@dataclass(frozen=True)
class ParsedKey:
    job_id: str
    part: Part
    path: str = ""
    """The file's path below inputs/, outputs/ or logs/."""


_FIXED: dict[str, Part] = {
    "job.json": "job",
    "dispatch.json": "dispatch",
    "cancel.json": "cancel",
    "status.json": "status",
}
_TREES: dict[str, Part] = {
    "inputs": "input",
    "outputs": "output",
    "logs": "log",
    "webhooks": "webhook",
}


def parse_key(key: str) -> ParsedKey | None:
    """Which job and part a key belongs to; ``None`` for keys outside the layout."""
    job_id, _, rest = key.partition("/")
    if not is_job_id(job_id) or not rest:
        return None
    if rest in _FIXED:
        return ParsedKey(job_id, _FIXED[rest])
    tree, _, path = rest.partition("/")
    if tree in _TREES and path and not any(p in {"", ".", ".."} for p in path.split("/")):
        return ParsedKey(job_id, _TREES[tree], path)
    return None
