"""How a status report changes a job's status: the rule book of the notifier (which writes
statuses) and of the gateway (which answers a cancellation with the status it leads to), free
of I/O.

Reports arrive at least once, and the gateway's and the sheep's interleave in any order, so
:func:`apply` makes the outcome independent of both:

* reports are ordered by ``(attempt, state rank)``; only a newer one moves the state, and a
  terminal state is final; ``cancelled`` ends any job that has not ended yet;
* a stale report never moves the state back, but fills the timestamp of its state when the
  status lacks it (a ``queued`` report that arrives after ``running`` still sets enqueued_at);
* a ``queued`` or ``running`` report with a higher attempt is a redelivery: the job moves on to
  that attempt, and what belonged to the previous one (started_at, progress, sheep) is dropped;
* a progress report (no state) updates a running job of the same attempt only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.events import PROGRESS, StatusReport
from schemas.status import JobState, JobStatus

_STAMP: dict[JobState, str] = {
    JobState.ACCEPTED: "accepted_at",
    JobState.QUEUED: "enqueued_at",
    JobState.RUNNING: "started_at",
    JobState.DONE: "finished_at",
    JobState.FAILED: "finished_at",
    JobState.CANCELLED: "finished_at",
}
_WITH_ERROR = frozenset({JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class Transition:
    """The status after a report, and the event that announces it."""

    status: JobStatus
    kind: str | None
    """The event to publish (a state, or ``progress``); None when the report only filled a
    detail of a state subscribers have already been told about."""


def apply(current: JobStatus | None, report: StatusReport) -> Transition | None:
    """The status after ``report``; None when the report changes nothing."""
    state = report.state
    if state is None:
        return _progress(current, report)
    if current is None:
        return Transition(_fresh(report, state), state.value)
    if _supersedes(current, report, state):
        return Transition(_advance(current, report, state), state.value)
    filled = _fill(current, report, state)
    return None if filled is None else Transition(filled, None)


def replay(current: JobStatus | None, report: StatusReport) -> str | None:
    """The event kind of the transition ``report`` already made, if the status still shows it.

    A redelivered report the status already reflects may never have been announced (the
    notifier can die between writing status.json and publishing); announcing it again keeps
    events at-least-once.
    """
    if current is None or report.state is None:
        return None
    if report.state is current.state and report.attempt == current.attempt:
        return report.state.value
    return None


def _supersedes(current: JobStatus, report: StatusReport, state: JobState) -> bool:
    # Nothing goes back to accepted, whatever attempt a report claims.
    if current.state.terminal or state is JobState.ACCEPTED:
        return False
    # A cancellation comes from the gateway, which does not know the attempt in progress.
    if state is JobState.CANCELLED:
        return True
    return (report.attempt, state.rank) > (current.attempt, current.state.rank)


def _fresh(report: StatusReport, state: JobState) -> JobStatus:
    """A status built from the first report seen, whichever state it names."""
    return JobStatus(
        job_id=report.job_id,
        state=state,
        model=report.model,
        sheep_id=report.sheep_id,
        attempt=report.attempt,
        error=report.error if state in _WITH_ERROR else None,
        progress=report.progress if state is JobState.RUNNING else None,
        inputs=report.inputs,
        usage=report.usage if state.terminal else None,
        **{_STAMP[state]: report.time},
    )


def _advance(current: JobStatus, report: StatusReport, state: JobState) -> JobStatus:
    new_attempt = report.attempt > current.attempt
    update: dict[str, Any] = {
        "state": state,
        "attempt": max(report.attempt, current.attempt),
        "sheep_id": report.sheep_id or (None if new_attempt else current.sheep_id),
        "error": report.error if state in _WITH_ERROR else None,
        "progress": report.progress if state is JobState.RUNNING else None,
        "missing_inputs": None,
        "inputs": report.inputs or (None if new_attempt else current.inputs),
        "usage": report.usage if state.terminal else None,
    }
    if new_attempt:
        # Timestamps of later states belonged to the previous attempt.
        update.update({_STAMP[s]: None for s in JobState if s.rank > state.rank})
    update[_STAMP[state]] = report.time
    return current.model_copy(update=update)


def _fill(current: JobStatus, report: StatusReport, state: JobState) -> JobStatus | None:
    """A stale report's timestamp, if the status lacks it and it belongs to this attempt."""
    same_attempt = report.attempt == current.attempt or state is JobState.ACCEPTED
    field = _STAMP[state]
    if not same_attempt or state.rank >= current.state.rank or getattr(current, field) is not None:
        return None
    return current.model_copy(update={field: report.time})


def _progress(current: JobStatus | None, report: StatusReport) -> Transition | None:
    if (
        current is None
        or current.state is not JobState.RUNNING
        or report.attempt != current.attempt
        or report.progress is None
        or report.progress == current.progress
    ):
        return None
    return Transition(current.model_copy(update={"progress": report.progress}), PROGRESS)
