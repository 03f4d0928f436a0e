"""Keeping the job index (:mod:`services.gateway.job_index`) up with the event history.

    indexer = Indexer(index, EventHistory(config.broker, names, reader="job-index"))
    await indexer.start()   # from the event after the last one the index applied
    ...
    await indexer.stop()

The indexer reads ``<ns>.event-stream`` like any other reader, from the offset after the
last one the index holds (its first event, for a new index), and applies what has arrived in
batches, each with its last offset, in one transaction. When the subscription ends (RabbitMQ
went away) it subscribes again from where the index stands. If the history no longer holds
that offset (the index was older than the history's retention, a day), the jobs that changed
in between keep the state they had; if the history was made anew (its stream deleted and
declared again), the index goes on from its events. Either way the log says so.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.listing import JobSummary
from services.common.history import EventHistory, Offset, StreamedEvent, Subscription
from services.common.live import status_event
from services.common.outages import OUTAGES, backoff
from services.gateway.job_index import JobIndex

log = logging.getLogger(__name__)

#: Events applied in one transaction at most.
BATCH = 500


class Indexer:
    def __init__(self, index: JobIndex, history: EventHistory) -> None:
        self._index = index
        self._history = history
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="job-indexer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._history.close()

    async def _follow(self) -> None:
        delays = backoff()
        while True:
            try:
                applied = await self._index.applied()
                start: Offset = "first" if applied is None else applied + 1
                subscription = await self._history.subscribe(start)
            except (*OUTAGES, sqlite3.Error) as exc:
                log.warning("the job index cannot follow the job events yet (%r); retrying", exc)
                await asyncio.sleep(next(delays))
                continue
            delays = backoff()
            try:
                await self._apply_all(subscription, start)
            except sqlite3.Error as exc:  # a full disk, say: the listing falls behind, says so
                log.error("the job index cannot store events (%r); retrying", exc)
                await asyncio.sleep(next(delays))
            finally:
                await subscription.close()

    async def _apply_all(self, subscription: Subscription, start: Offset) -> None:
        """Apply what the subscription delivers until it ends."""
        while batch := await _next_batch(subscription):
            if isinstance(start, int) and batch[0].offset > start:
                log.warning(
                    "the job index missed events %d to %d, no longer in the history: jobs "
                    "that changed then are listed as they were before",
                    start,
                    batch[0].offset - 1,
                )
            elif isinstance(start, int) and batch[0].offset < start:
                log.warning(
                    "the event history was made anew (its events start at %d, the job index "
                    "had read up to %d): indexing it from there on",
                    batch[0].offset,
                    start - 1,
                )
            start = "next"
            summaries = [s for s in map(_summary, batch) if s is not None]
            await self._index.apply(summaries, batch[-1].offset)


async def _next_batch(subscription: Subscription) -> list[StreamedEvent]:
    """The next event, waiting for it, and those delivered with it; [] once it has ended."""
    batch: list[StreamedEvent] = []
    while not batch or (subscription.waiting() and len(batch) < BATCH):
        event = await subscription.get()
        if event is None:
            break
        batch.append(event)
    return batch


def _summary(event: StreamedEvent) -> JobSummary | None:
    try:
        job_event = status_event(event)
    except ValidationError as exc:
        log.warning(
            "the job index skips event %d (routing key %s): %s",
            event.offset,
            event.kind,
            format_validation_error(exc),
        )
        return None  # counted as rejected by the lookup, which reads it too
    return None if job_event is None else JobSummary.of(job_event.data, job_event.time)
