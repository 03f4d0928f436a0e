"""What an attempt's answer means, and when the next attempt is due.

2xx is delivered. A network error, a timeout, 429 and 5xx are worth another attempt, after
the schedule's next delay (``notifier.webhook_retry_schedule``) less up to a fifth of it at
random (jitter, so that the deliveries a receiver's outage piled up do not all come back at
once), or after the receiver's Retry-After if that is longer. 410 Gone says the receiver is
gone for good. Anything else (3xx included: redirects are not followed, as they could lead
anywhere) will not change by itself, and is given up at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

from schemas.topology import retry_delays_ms
from services.common.outages import JITTER


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"
    GIVE_UP = "give-up"


def verdict(status: int | None) -> Verdict:
    """``status`` None: no answer (network error, timeout)."""
    if status is None or status == 429 or status >= 500:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.GONE if status == 410 else Verdict.GIVE_UP


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP-date); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Retry:
    queue_ms: int
    """The retry queue to park the delivery in: ``<ns>.webhook-retry.<queue_ms>ms``."""
    delay: float
    """Seconds until it is due (the message's expiration, at most the queue's TTL)."""


class ScheduleSpent(Exception):
    """No further attempt: the schedule is used up, or the receiver asks for a longer wait
    than the schedule's longest delay."""


class Backoff:
    def __init__(self, schedule: Sequence[float]) -> None:
        self._schedule = list(schedule)
        self._queues = retry_delays_ms(schedule)

    def after(self, attempt: int, asked: float | None) -> Retry:
        """When to try again after attempt number ``attempt`` (1 for the first) failed,
        ``asked``: the receiver's Retry-After. Raises :class:`ScheduleSpent`."""
        if attempt > len(self._schedule):
            raise ScheduleSpent(f"{attempt} attempts made, the retry schedule is spent")
        # Rounded as retry_delays_ms rounds the step: the step's own queue always fits.
        delay_ms = max(1, round(self._schedule[attempt - 1] * random.uniform(1 - JITTER, 1) * 1000))
        if asked is not None:
            delay_ms = max(delay_ms, math.ceil(asked * 1000))
        queue = next((q for q in self._queues if q >= delay_ms), None)
        if queue is None:
            raise ScheduleSpent(
                f"the receiver asks to wait {asked:g} s (Retry-After), longer than the "
                f"longest retry delay, {self._queues[-1] / 1000:g} s"
            )
        return Retry(queue, delay_ms / 1000)
