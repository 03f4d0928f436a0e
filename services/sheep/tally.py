"""What a sheep has done since it started, carried by its announcements (``GET /status``, the
dashboard's sheep view).

    tally = Tally()
    tally.ran(1.3)              # seconds a job was on the runner
    tally.ended(JobState.DONE)  # its outcome was reported
    SheepState(..., **tally.announced())
"""

from __future__ import annotations

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
    """Seconds jobs were on the runner: over the time since ``started_at``, the duty cycle."""

    def ran(self, seconds: float) -> None:
        self.busy_seconds += seconds

    def ended(self, state: JobState | None) -> None:
        if state is JobState.DONE:
            self.jobs_done += 1
        elif state is JobState.FAILED:
            self.jobs_failed += 1

    def announced(self) -> dict[str, Any]:
        """The :class:`~schemas.events.SheepState` fields it fills."""
        return {
            "started_at": self.started_at,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "busy_seconds": round(self.busy_seconds, 3),
        }
