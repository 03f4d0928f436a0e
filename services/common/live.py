"""The statuses of jobs that have not ended: in memory, rebuilt from the event history.

Only a job's final status is stored (``<job_id>/status.json``, written once by the notifier).
Until then its status lives in memory: in the notifier, which changes it, and in every
gateway, which follows the job events to answer lookups. Every job event carries the job's
whole status, so the last event of a job *is* its status; a table is rebuilt from the
notifier's latest snapshot (``_shepherd/notifier/live.json``) and the events of
``<ns>.event-stream`` from a little before it was taken. The notifier takes one every
:data:`SNAPSHOT_EVERY` changes, at least every :data:`SNAPSHOT_MAX_AGE` seconds while
statuses change, and when it stops: so a rebuild replays a bounded stretch of history, and a
job that outlives the stream's retention (a day) is still in a snapshot. A job costs no
snapshot of its own.

    live = LiveStatuses()
    live.restore(await load_snapshot(storage))
    subscription = await history.subscribe(replay_start(snapshot))
    live.apply(await subscription.get())       # for each event: its status
    live.get(job_id)                           # None: unknown here, or ended
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from schemas.events import STATUS_KINDS, JobEvent
from schemas.layout import LIVE_SNAPSHOT_KEY
from schemas.status import JobStatus, LiveSnapshot
from services.common.history import Offset, StreamedEvent
from services.common.storage import ObjectMissing, Storage

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 10_000
"""Changes of the statuses after which the notifier takes a snapshot: a rebuild replays
about this many events at most (a few seconds' work)."""
SNAPSHOT_MAX_AGE = 3600.0
"""Seconds after which the notifier takes a snapshot anyway, if statuses changed: far
within the event history's retention of a day."""
REPLAY_MARGIN = timedelta(minutes=1)
"""How much earlier than a snapshot a rebuild starts replaying: for the skew between the
notifier's clock and RabbitMQ's, and the stream's chunk granularity. Replaying more is
harmless: the events of a job are replayed in order, so its last one wins."""
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

    def snapshot(self) -> LiveSnapshot:
        return LiveSnapshot(taken_at=datetime.now(UTC), statuses=list(self._statuses.values()))

    def restore(self, snapshot: LiveSnapshot | None) -> None:
        """Start over from ``snapshot`` (empty without one)."""
        self._statuses = {} if snapshot is None else {s.job_id: s for s in snapshot.statuses}
        self.changes += 1

    def apply(self, event: StreamedEvent) -> JobStatus | None:
        """Take the status an event of the history carries, and return it; None for other
        messages (``job.rejected``, a notifier's mark). Raises ValidationError for an event
        that is not one."""
        if event.kind not in _STATUS_KINDS:
            return None
        status = JobEvent.model_validate_json(event.body).data
        self.set(status)
        return status


def replay_start(snapshot: LiveSnapshot | None) -> Offset:
    """Where to replay the history from, after ``snapshot``."""
    return "first" if snapshot is None else snapshot.taken_at - REPLAY_MARGIN


async def load_snapshot(storage: Storage) -> LiveSnapshot | None:
    try:
        raw = await storage.get_bytes(LIVE_SNAPSHOT_KEY)
    except ObjectMissing:
        return None
    try:
        return LiveSnapshot.model_validate_json(raw)
    except ValidationError as exc:
        log.error("%s is unreadable, replaying the whole history: %s", LIVE_SNAPSHOT_KEY, exc)
        return None


async def save_snapshot(storage: Storage, snapshot: LiveSnapshot) -> None:
    await storage.put_bytes(
        LIVE_SNAPSHOT_KEY, snapshot.model_dump_json().encode(), "application/json"
    )
