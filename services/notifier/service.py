"""The notifier: the keeper of every job's status.

It consumes the status reports on ``<ns>.status`` (and the jobs' own messages, which stand
for their ``queued`` reports), applies them with :mod:`.state`, announces each transition as
a CloudEvents ``job.<state>`` event on ``<ns>.events``, and only then acks the reports. The
status of a job that has not ended lives in memory (:mod:`services.common.live`): rebuilt
from the last snapshot and the event history before the first report is applied, and
snapshotted now and then. A final status is written once, to
``<job_id>/status.json``, before its event is published.

    notifier = Notifier(config, broker, storage)
    await notifier.start()
    ...
    await notifier.stop()

Reports of different jobs are processed concurrently (up to the prefetch); the reports of one
job go through one worker task, in delivery order, and those that queue up while it writes are
applied together and written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from schemas.broker_names import NEW_JOB
from schemas.config import Config
from schemas.errors import format_validation_error
from schemas.events import CLOUDEVENTS_CONTENT_TYPE, JobEvent, StatusReport
from schemas.job import JobDispatch
from schemas.layout import status_key
from schemas.status import JobState, JobStatus
from services.common.broker import Broker
from services.common.consumer import KEPT, Outcome, QueueConsumer, decode
from services.common.history import EventHistory
from services.common.job_metrics import OLDEST_QUEUED, observe_transition
from services.common.live import (
    SNAPSHOT_EVERY,
    SNAPSHOT_MAX_AGE,
    LiveStatuses,
    load_snapshot,
    replay_history,
    replay_start,
    save_snapshot,
)
from services.common.metrics import reject
from services.common.outages import OUTAGES, Abandoned, holding, orphaned, settle
from services.common.recent import RecentlyUsed
from services.common.storage import ObjectMissing, Storage
from services.common.transitions import apply, replay

log = logging.getLogger(__name__)

CANCEL_REPORT_WAIT = 10.0
"""Seconds the cancellation of a running job waits for its sheep's report (which carries its
usage) before the gateway's report ends it: the sheep stops the runner within a second or
two, then stores its outputs and logs."""

_BAD_REPORT = "dead-lettering status report %s (routing key %s)"

T = TypeVar("T")


@dataclass(frozen=True)
class _Delivery:
    message: AbstractIncomingMessage
    report: StatusReport


class Notifier:
    def __init__(
        self,
        config: Config,
        broker: Broker,
        storage: Storage,
        *,
        prefetch: int = 64,
        cache_size: int = 10_000,
        retry_delay: float = 0.5,
        stop_grace: float = 10.0,
        cancel_report_wait: float = CANCEL_REPORT_WAIT,
    ) -> None:
        self._broker = broker
        self._storage = storage
        self._names = broker.names
        self._prefetch = prefetch
        self._retry_delay = retry_delay
        self._stop_grace = stop_grace
        self.live = LiveStatuses()
        """The statuses of the jobs that have not ended; trusted once restored."""
        self.cache: RecentlyUsed[JobStatus] = RecentlyUsed(cache_size)
        """Final statuses this notifier wrote or read: coherent, as it is their only writer."""
        self._history = EventHistory(config.broker, broker.names, reader="notifier-replay")
        self._restoring: asyncio.Task[None] | None = None
        self._snapshots: asyncio.Task[None] | None = None
        self._snapshot_changes = 0
        self._snapshot_due = asyncio.Event()
        self.source = f"/{config.broker.namespace}/notifier"
        """CloudEvents ``source`` of every event this notifier publishes."""
        self._reports = QueueConsumer(
            broker,
            self._names.status_queue,
            self._receive,
            source="status",
            prefetch=prefetch,
            grace=stop_grace,
        )
        self._pending: dict[str, list[_Delivery]] = {}
        self._cancel_report_wait = cancel_report_wait
        self._arrivals: dict[str, asyncio.Event] = {}
        """Set when a report of the job arrives while its worker waits for the sheep's."""
        self._started = False

    async def start(self) -> None:
        """Consume ``<ns>.status``; the topology is declared by whoever starts the process."""
        await self._reports.start()
        self._started = True
        # The queue has a single active consumer: after a reconnect another notifier may
        # have written statuses in between, so what is cached can no longer be trusted.
        self._reports.channel.reopen_callbacks.add(self._forget)
        self._snapshots = asyncio.create_task(self._take_snapshots(), name="notifier-snapshots")
        OLDEST_QUEUED.add(self._queue_wait)

    async def stop(self) -> None:
        """Stop consuming, let the reports in hand finish (for ``stop_grace`` seconds at most;
        the rest are cancelled and redelivered), then close the channel."""
        if not self._started:
            return
        self._started = False
        OLDEST_QUEUED.remove(self._queue_wait)
        for task in (self._snapshots, self._restoring):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._reports.stop()
        await self._snapshot()
        self._restoring = None
        await self._history.close()

    def _queue_wait(self) -> dict[tuple[str, ...], float]:
        """The oldest queued job's wait so far, for ``shepherd_oldest_queued_job_age_seconds``."""
        oldest = self.live.oldest_queued()
        waited = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        return {(): max(0.0, waited)}

    def _forget(self, *_: object) -> None:
        """After a reconnect, another notifier may have been active meanwhile: statuses are
        restored again before the next report."""
        self.cache.clear()
        self._restoring = None

    @property
    def _restored(self) -> bool:
        task = self._restoring
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    async def _ensure_restored(self) -> None:
        """Wait for the live statuses to be restored; the first caller starts it, and a
        caller after a failed attempt starts another."""
        task = self._restoring
        if task is None or (task.done() and not self._restored):
            task = self._restoring = asyncio.create_task(self._restore(), name="notifier-restore")
        await asyncio.shield(task)

    async def _restore(self) -> None:
        """The snapshot, then every event published since, up to a mark appended to the
        history now: the statuses as the last notifier left them, since no other notifier
        publishes meanwhile (one consumes at a time)."""
        snapshot = await load_snapshot(self._storage, self._names.namespace)
        end = await self._history.mark()
        self.live.restore(snapshot)
        replayed = await replay_history(self._history, self.live, replay_start(snapshot, end), end)
        log.info(
            "restored %d live job statuses (snapshot at offset %s, %d events replayed)",
            len(self.live),
            "none" if snapshot is None else snapshot.offset,
            replayed,
        )

    async def _take_snapshots(self) -> None:
        """A snapshot when enough changed, or SNAPSHOT_MAX_AGE seconds after the last one
        (off the path of any job)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._snapshot_due.wait(), SNAPSHOT_MAX_AGE)
            self._snapshot_due.clear()
            await self._snapshot()

    async def _snapshot(self) -> None:
        if not self._restored or self.live.changes == self._snapshot_changes:
            return
        changes = self.live.changes
        try:
            offset = await self._history.mark()
            await save_snapshot(self._storage, self._names.namespace, self.live.snapshot(offset))
        except OUTAGES as exc:
            log.warning("could not save the live statuses (next time, then): %r", exc)
            return
        self._snapshot_changes = changes

    async def _receive(self, message: AbstractIncomingMessage) -> Outcome:
        """Hand a report to its job's worker, which settles it. Runs in delivery order and
        must not await before queuing the report, or the order of one job's reports could
        change."""
        report = self._report(message)
        if report is None:
            return "dead-letter"
        delivery = _Delivery(message, report)
        batch = self._pending.get(report.job_id)
        if batch is not None:
            batch.append(delivery)
            if (arrived := self._arrivals.get(report.job_id)) is not None:
                arrived.set()
            return KEPT
        self._pending[report.job_id] = [delivery]
        self._reports.track(
            asyncio.create_task(self._work(report.job_id), name=f"notifier:{report.job_id}")
        )
        return KEPT

    def _report(self, message: AbstractIncomingMessage) -> StatusReport | None:
        """A status report, or a job's message: its ``queued`` report; None (logged and
        counted) for neither."""
        named = (_BAD_REPORT, message.message_id or message.delivery_tag, message.routing_key)
        if message.exchange != self._names.jobs_exchange:
            return decode(StatusReport, message.body, "status", *named)
        dispatch = decode(JobDispatch, message.body, "status", *named)
        if dispatch is None:
            return None
        return StatusReport.queued(dispatch, new_job=bool((message.headers or {}).get(NEW_JOB)))

    async def _work(self, job_id: str) -> None:
        """Process the job's reports until none is waiting."""
        try:
            while batch := self._pending[job_id]:
                self._pending[job_id] = []
                await self._process(job_id, batch)
        finally:
            # Deliveries still listed were never settled; the broker redelivers them.
            del self._pending[job_id]

    async def _process(self, job_id: str, batch: list[_Delivery]) -> None:
        try:
            if not self._restored:
                await self._retrying(
                    "restoring the live statuses", job_id, batch, self._ensure_restored
                )
            current = (
                None
                if _first_news(batch)
                else await self._retrying("reading the status", job_id, batch, self._load, job_id)
            )
            superseded = await self._sheep_cancellation(job_id, batch, current)
            status, events, changes = current, [], []
            for delivery in batch:
                if delivery in superseded:
                    continue
                for report in delivery.report.implied():
                    transition = apply(status, report)
                    if transition is not None:
                        status = transition.status
                        if transition.kind:
                            events.append(JobEvent.of(status, self.source, transition.kind))
                            changes.append((status, transition.kind))
                    elif delivery.message.redelivered and (kind := replay(status, report)):
                        events.append(JobEvent.of(status, self.source, kind))
            # A final status is stored before it is announced (whoever hears the event
            # finds it), while the transitions before it are announced.
            earlier = [e for e in events if not e.data.ready]
            final = [e for e in events if e.data.ready]
            storing = None
            if status is not None and status is not current:
                if status.state.terminal:
                    storing = self._retrying(
                        "writing the final status", job_id, batch, self._store, status
                    )
                else:  # in memory only
                    self._remember(status)
            await _together(storing, self._announce(job_id, batch, earlier))
            await self._announce(job_id, batch, final)
        except Abandoned:
            # The deliveries of the closed channel come again; those of the new one that
            # joined the batch (while it waited for a sheep) go back to the job's queue.
            self._pending[job_id][:0] = [d for d in batch if not orphaned(d.message)]
            return
        except Exception:
            log.exception("status reports of job %s failed; dead-lettering them", job_id)
            for delivery in batch:
                reject("status", "error")
                await settle(delivery.message, "dead-letter")
            return
        for changed, kind in changes:
            observe_transition(changed, kind)
        for delivery in batch:
            await settle(delivery.message, "ack")

    async def _sheep_cancellation(
        self, job_id: str, batch: list[_Delivery], current: JobStatus | None
    ) -> list[_Delivery]:
        """The gateway's cancellation of a job running on a sheep: the sheep's own report of
        it, which tells what the job used, is waited for (``cancel_report_wait`` seconds at
        most; reports arriving meanwhile join ``batch``) and taken instead. The gateway's
        reports it supersedes are returned, to be acked unapplied. A sheep reporting the
        attempt done or failed instead ends the wait, and the reports apply in their order."""
        requested = [d for d in batch if _requested_cancel(d.report, current)]
        if not requested or len(self._arrivals) >= self._prefetch // 2:
            # Waits hold their prefetch slots: half of them stay free for the sheeps' reports.
            return []
        arrived = self._arrivals[job_id] = asyncio.Event()
        try:
            async with asyncio.timeout(self._cancel_report_wait):
                while not any(_sheep_ended(d.report, current) for d in batch):
                    await arrived.wait()
                    arrived.clear()
                    batch.extend(self._pending[job_id])
                    self._pending[job_id] = []
        except TimeoutError:
            return []  # the sheep is gone or slow: the gateway's report ends the job
        finally:
            del self._arrivals[job_id]
        stopped = any(
            _sheep_ended(d.report, current) and d.report.state is JobState.CANCELLED for d in batch
        )
        return requested if stopped else []  # done or failed first: that order stands

    async def _retrying(
        self,
        what: str,
        job_id: str,
        batch: list[_Delivery],
        operation: Callable[..., Awaitable[T]],
        *args: object,
    ) -> T:
        """Retry a storage or broker call through outages, holding the reports meanwhile.

        Requeueing instead would spend the queue's delivery limit, so an outage of the store
        would dead-letter reports; holding them keeps their order and stops new deliveries
        once every prefetch slot waits.
        """
        return await holding(
            [d.message for d in batch],
            f"{what} of job {job_id}",
            partial(operation, *args),
            first_delay=self._retry_delay,
        )

    async def _load(self, job_id: str) -> JobStatus | None:
        cached = self.live.get(job_id) or self.cache.get(job_id)
        if cached is not None:
            return cached
        try:
            raw = await self._storage.get_bytes(status_key(job_id))
        except ObjectMissing:
            return None
        try:
            status = JobStatus.model_validate_json(raw)
        except ValidationError as exc:
            log.error(
                "%s is not a valid status (%s); rebuilding it from the reports",
                status_key(job_id),
                format_validation_error(exc),
            )
            return None
        self.cache.put(status.job_id, status)
        return status

    async def _store(self, status: JobStatus) -> None:
        """A final status, kept in memory once stored: a report redelivered after a failed
        write writes it again."""
        data = status.model_dump_json().encode()
        await self._storage.put_bytes(status_key(status.job_id), data, "application/json")
        self.cache.put(status.job_id, status)
        self._remember(status)

    def _remember(self, status: JobStatus) -> None:
        self.live.set(status)
        if self.live.changes - self._snapshot_changes >= SNAPSHOT_EVERY:
            self._snapshot_due.set()

    async def _announce(self, job_id: str, batch: list[_Delivery], events: list[JobEvent]) -> None:
        """The events, one after the other, in lifecycle order."""
        for event in events:
            await self._retrying("publishing the event", job_id, batch, self._publish, event)

    async def _publish(self, event: JobEvent) -> None:
        await self._broker.publish(
            self._names.events_exchange,
            event.routing_key,
            event,
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            message_id=event.id,
            mandatory=False,  # an announcement: nobody need be listening
        )


async def _together(*steps: Coroutine[object, object, object] | None) -> None:
    """Run the ``steps`` concurrently; if one fails, the others are cancelled."""
    tasks = [asyncio.ensure_future(step) for step in steps if step is not None]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _requested_cancel(report: StatusReport, current: JobStatus | None) -> bool:
    """The gateway's cancellation (no sheep names it) of the attempt running on a sheep."""
    return (
        report.state is JobState.CANCELLED
        and report.sheep_id is None
        and current is not None
        and current.state is JobState.RUNNING
        and current.sheep_id is not None
        and report.attempt == current.attempt
    )


def _sheep_ended(report: StatusReport, current: JobStatus | None) -> bool:
    """The sheep's own report that the running attempt ended: stopped (cancelled), or done
    or failed just before the cancellation reached it."""
    return (
        current is not None
        and report.state is not None
        and report.state.terminal
        and report.sheep_id == current.sheep_id
        and report.attempt == current.attempt
    )


def _first_news(batch: list[_Delivery]) -> bool:
    """Whether the batch opens with the gateway's first report of a job it just declared,
    delivered for the first time: the job can have no status yet."""
    first = batch[0]
    return first.report.new_job and not first.message.redelivered
