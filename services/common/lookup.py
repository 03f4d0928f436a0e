"""Readiness lookups for the gateway: a job's status, and waiting until it is terminal.

Every gateway replica can answer for every job: a final status comes from storage
(``<job_id>/status.json``), the status of a job that has not ended from the job events, which
each replica follows in the event history (``<ns>.event-stream``) into a table of its own
(:mod:`services.common.live`), and the wake-up from the terminal events it reads there.

    lookup = StatusLookup(storage, EventHistory(config.broker, names), names.namespace)
    await lookup.start()
    status = await lookup.wait_terminal(job_id, timeout=30)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import format_validation_error
from schemas.events import JobEvent
from schemas.job import JobSpec
from schemas.layout import inputs_prefix, job_key, status_key
from schemas.names import is_job_id
from schemas.status import JobState, JobStatus
from services.common.history import EventHistory, Offset, StreamedEvent
from services.common.live import LiveStatuses, load_snapshot, replay_start
from services.common.metrics import invalid_reason, reject
from services.common.outages import OUTAGES, backoff
from services.common.storage import ObjectMissing, Storage, UnreadableRecord

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

_Waiter = asyncio.Future[JobStatus | None]
"""Resolved with the terminal status, or with None: "look again" (the lookup stopped)."""


class StatusLookup:
    def __init__(
        self,
        storage: Storage,
        history: EventHistory,
        namespace: str,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> None:
        """``on_event``: called with every job event, as it is read."""
        self._storage = storage
        self._history = history
        self._namespace = namespace
        self._on_event = on_event
        self._live = LiveStatuses()
        self._waiters: dict[str, set[_Waiter]] = {}
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Stopped: waits return at once."""
        return self._closed

    async def start(self) -> None:
        """Follow the event history, from the notifier's last snapshot on."""
        self._closed = False
        self._follower = asyncio.create_task(self._follow(), name="lookup-follower")

    async def stop(self) -> None:
        """Stop following; waiters return the current status at once."""
        self._closed = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await self._history.close()
        self._wake_all()

    async def _follow(self) -> None:
        """Read the history for good, resuming after the last event read whenever the
        subscription ends (the broker went away), and retrying through outages."""
        start: Offset | None = None
        delays = backoff()
        while True:
            try:
                if start is None:
                    snapshot = await load_snapshot(self._storage, self._namespace)
                    end = await self._history.mark()
                    self._live.restore(snapshot)
                    start = replay_start(snapshot, end)
                subscription = await self._history.subscribe(start)
            except OUTAGES as exc:
                log.warning("cannot follow the job events yet (%r); retrying", exc)
                await asyncio.sleep(next(delays))
                continue
            delays = backoff()
            try:
                while (event := await subscription.get()) is not None:
                    start = event.offset + 1
                    self._take(event)
            finally:
                await subscription.close()

    def _take(self, event: StreamedEvent) -> None:
        try:
            job_event = self._live.apply(event)
        except ValidationError as exc:
            log.warning(
                "ignoring job event (routing key %s): %s",
                event.kind,
                format_validation_error(exc),
            )
            reject("job-events", invalid_reason(exc))
            return
        if job_event is None:
            return
        if self._on_event is not None:
            self._on_event(job_event)
        if job_event.data.ready:
            self._wake(job_event.subject, job_event.data)

    def queued(self, job_id: str) -> bool:
        """Whether the job events read so far show the job queued, and not ended (a final
        status is read from the store)."""
        status = self._live.get(job_id)
        return status is not None and status.state is not JobState.ACCEPTED

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status: final from status.json, else as the job events tell, else
        ``accepted`` from job.json; None for an unknown job."""
        if not is_job_id(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        final = await self._stored(job_id)
        if final is not None:
            return final
        status = self._live.get(job_id)
        if status is not None and status.state is not JobState.ACCEPTED:
            return status
        spec = await self._spec(job_id)
        if spec is None:
            return status
        status = status or JobStatus(
            job_id=job_id,
            state=JobState.ACCEPTED,
            model=spec.model,
            sheep_id=spec.sheep_id,
            accepted_at=spec.declared_at,
        )
        if spec.inputs is None:
            return status
        prefix = inputs_prefix(job_id)
        present = {obj.key.removeprefix(prefix) for obj in await self._storage.list(prefix)}
        missing = [path for path in spec.inputs if path not in present]
        return status.model_copy(update={"missing_inputs": missing})

    async def wait_terminal(self, job_id: str, timeout: float) -> JobStatus | None:  # noqa: ASYNC109
        """The status as soon as the job is terminal, or as it is after ``timeout`` seconds;
        None at once for an unknown job. (A timeout here is an answer, not an error, hence
        the parameter rather than ``asyncio.timeout``.)"""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            # Registered before reading, so an event arriving in between is not lost.
            waiter = self._register(job_id)
            try:
                status = await self.status(job_id)
                if status is None or status.ready or self._closed:
                    return status
                try:
                    async with asyncio.timeout_at(deadline):
                        woken = await waiter
                except TimeoutError:
                    return await self.status(job_id)
                if woken is not None:
                    return woken
            finally:
                self._unregister(job_id, waiter)

    def waiting(self, job_id: str) -> int:
        """How many long-polls wait for ``job_id`` to end now."""
        return len(self._waiters.get(job_id, ()))

    def _register(self, job_id: str) -> _Waiter:
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(waiter)
        return waiter

    def _unregister(self, job_id: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[job_id]

    def _wake(self, job_id: str, status: JobStatus | None) -> None:
        for waiter in self._waiters.get(job_id, ()):
            if not waiter.done():
                waiter.set_result(status)

    def _wake_all(self, *_: object) -> None:
        for job_id in list(self._waiters):
            self._wake(job_id, None)

    async def _stored(self, job_id: str) -> JobStatus | None:
        return await self._record(JobStatus, status_key(job_id))

    async def _spec(self, job_id: str) -> JobSpec | None:
        return await self._record(JobSpec, job_key(job_id))

    async def _record(self, model: type[R], key: str) -> R | None:
        """The record at ``key``; None if there is none. Raises :class:`UnreadableRecord`
        (logged) for one that is not a record."""
        try:
            return model.model_validate_json(await self._storage.get_bytes(key))
        except ObjectMissing:
            return None
        except ValidationError as exc:
            unreadable = UnreadableRecord(key, format_validation_error(exc))
            log.error("%s", unreadable)
            raise unreadable from None
