"""The statuses of jobs that have not ended: in memory, rebuilt from the event history.

Only a job's final status is stored (``<job_id>/status.json``, written once by the notifier).
Until then its status lives in memory: in the notifier, which changes it, and in every
gateway, which follows the job events to answer lookups. Every job event carries the job's
whole status, so the last event of a job *is* its status; a table is rebuilt from the
notifier's latest snapshot (``_shepherd/notifier/live.json``) and the events of
``<ns>.event-stream`` from the offset it names: that of a mark the notifier appended to the
stream just before it copied its table (no clock involved). The notifier takes one every
:data:`SNAPSHOT_EVERY` changes, at least every :data:`SNAPSHOT_MAX_AGE` seconds while
statuses change, and when it stops: so a rebuild replays a bounded stretch of history, and a
job that outlives the stream's retention (a day) is still in a snapshot. A job costs no
snapshot of its own.

    live = LiveStatuses()
    live.restore(snapshot := await load_snapshot(storage, namespace))
    end = await history.mark()
    await replay_history(history, live, replay_start(snapshot, end), end)
    live.apply(event)                          # then event by event: its status
    live.get(job_id)                           # None: unknown here, or ended
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import ValidationError

from schemas.events import STATUS_KINDS, JobEvent
from schemas.layout import live_snapshot_key
from schemas.status import JobState, JobStatus, LiveSnapshot
from services.common.broker import BrokerUnavailable
from services.common.history import EventHistory, Offset, StreamedEvent
from services.common.storage import ObjectMissing, Storage

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 10_000
"""Changes of the statuses after which the notifier takes a snapshot: a rebuild replays
about this many events at most (a few seconds' work)."""
SNAPSHOT_MAX_AGE = 3600.0
"""Seconds after which the notifier takes a snapshot anyway, if statuses changed: far
within the event history's retention of a day."""
_STATUS_KINDS = frozenset(f"job.{kind}" for kind in STATUS_KINDS)


class LiveStatuses:
    def __init__(self) -> None:
        self._statuses: dict[str, JobStatus] = {}
        self.changes = 0
        """Counts every change: a snapshot is due when it moved."""

    def get(self, job_id: str) -> JobStatus | None:
        return self._statuses.get(job_id)

    def set(self, status: JobStatus) -> None:
        """Record ``status``; a terminal one ends the job's life here."""
        if status.state.terminal:
            self._statuses.pop(status.job_id, None)
        else:
            self._statuses[status.job_id] = status
        self.changes += 1

    def __len__(self) -> int:
        return len(self._statuses)

    def oldest_queued(self) -> datetime | None:
        """When the job queued longest was queued; None if no job waits."""
        return min(
            (
                s.enqueued_at
                for s in self._statuses.values()
                if s.state is JobState.QUEUED and s.enqueued_at is not None
            ),
            default=None,
        )

    def snapshot(self, offset: int) -> LiveSnapshot:
        """The table now, which holds every event of the history before ``offset``."""
        return LiveSnapshot(
            taken_at=datetime.now(UTC), offset=offset, statuses=list(self._statuses.values())
        )

    def restore(self, snapshot: LiveSnapshot | None) -> None:
        """Start over from ``snapshot`` (empty without one)."""
        self._statuses = {} if snapshot is None else {s.job_id: s for s in snapshot.statuses}
        self.changes += 1

    def apply(self, event: StreamedEvent) -> JobEvent | None:
        """Take the status an event of the history carries, and return the event; None for
        other messages (``job.rejected``, a notifier's mark). Raises ValidationError for an
        event that is not one."""
        job_event = status_event(event)
        if job_event is not None:
            self.set(job_event.data)
        return job_event


def status_event(event: StreamedEvent) -> JobEvent | None:
    """The job event a message of the history carries; None for other messages
    (``job.rejected``, a notifier's mark). Raises ValidationError for an event that is not
    one."""
    if event.kind not in _STATUS_KINDS:
        return None
    return JobEvent.model_validate_json(event.body)


async def replay_history(history: EventHistory, live: LiveStatuses, start: Offset, end: int) -> int:
    """Apply the events of the history from ``start`` up to offset ``end`` (a mark); how
    many."""
    subscription = await history.subscribe(start)
    try:
        replayed = 0
        while (event := await subscription.get()) is not None:
            if event.offset >= end:
                return replayed
            try:
                live.apply(event)
            except ValidationError as exc:
                log.warning("skipping event %d of the history: %s", event.offset, exc)
            replayed += 1
    finally:
        await subscription.close()
    raise BrokerUnavailable("the event history ended before its replay did")


def replay_start(snapshot: LiveSnapshot | None, end: int) -> Offset:
    """Where to replay the history from, after ``snapshot``, for a history that ends at
    ``end``: the whole of it when the snapshot is of another (a stream deleted since)."""
    if snapshot is None or snapshot.offset > end:
        return "first"
    return snapshot.offset


async def load_snapshot(storage: Storage, namespace: str) -> LiveSnapshot | None:
    key = live_snapshot_key(namespace)
    try:
        raw = await storage.get_bytes(key)
    except ObjectMissing:
        return None
    try:
        return LiveSnapshot.model_validate_json(raw)
    except ValidationError as exc:
        log.error("%s is unreadable, replaying the whole history: %s", key, exc)
        return None


async def save_snapshot(storage: Storage, namespace: str, snapshot: LiveSnapshot) -> None:
    await storage.put_bytes(
        live_snapshot_key(namespace), snapshot.model_dump_json().encode(), "application/json"
    )
