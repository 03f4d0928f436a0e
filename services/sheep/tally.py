"""What a sheep has done since it started, carried by its announcements (``GET /status``, the
dashboard's sheep view).

    tally = Tally()
    with tally.busy():          # a job on the runner
        ...
    tally.ended(JobState.DONE)  # its outcome was reported
    SheepState(..., **tally.announced())
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.status import JobState


@dataclass
class Tally:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    jobs_done: int = 0
    jobs_failed: int = 0
    busy_seconds: float = 0.0
    """Seconds jobs were on the runner, until the current one: over the time since
    ``started_at``, the duty cycle."""
    busy_since: float | None = None
    """When the current job went on the runner (``time.monotonic``)."""

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A job on the runner: its time counts, as it goes, however it ends."""
        self.busy_since = time.monotonic()
        try:
            yield
        finally:
            self.busy_seconds += time.monotonic() - self.busy_since
            self.busy_since = None

    def ended(self, state: JobState | None) -> None:
        if state is JobState.DONE:
            self.jobs_done += 1
        elif state is JobState.FAILED:
            self.jobs_failed += 1

    def _current(self) -> float:
        return 0.0 if self.busy_since is None else time.monotonic() - self.busy_since

    def announced(self) -> dict[str, Any]:
        """The :class:`~schemas.events.SheepState` fields it fills."""
        return {
            "started_at": self.started_at,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "busy_seconds": round(self.busy_seconds + self._current(), 3),
        }
