"""Readiness lookups for the gateway: a job's status, and waiting until it is terminal.

Every gateway replica can answer for every job: the status comes from storage, and the
wake-up from the notifier's terminal ``job.<state>`` events, which each replica receives on a
queue of its own.

    lookup = StatusLookup(broker, storage)
    await lookup.start()
    status = await lookup.wait_terminal(job_id, timeout=30)
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.events import JobEvent
from schemas.job import JobSpec
from schemas.layout import inputs_prefix, job_key, status_key
from schemas.names import is_job_id
from schemas.status import TERMINAL_STATES, JobState, JobStatus
from services.common.broker import Broker
from services.common.metrics import invalid_reason, reject
from services.common.storage import ObjectMissing, Storage

log = logging.getLogger(__name__)

_Waiter = asyncio.Future[JobStatus | None]
"""Resolved with the terminal status, or with None: "look again" (events may have been lost)."""


class StatusLookup:
    def __init__(self, broker: Broker, storage: Storage) -> None:
        self._broker = broker
        self._storage = storage
        self._waiters: dict[str, set[_Waiter]] = {}
        self._channel: AbstractRobustChannel | None = None
        self._closed = False

    async def start(self) -> None:
        """Listen to terminal job events on an exclusive queue that goes away with us."""
        self._closed = False
        channel = await self._broker.listen(
            [f"job.{state.value}" for state in sorted(TERMINAL_STATES)], self._on_event
        )
        # Events published while we were disconnected are lost: waiters look again.
        channel.reopen_callbacks.add(self._wake_all)
        self._channel = channel

    async def stop(self) -> None:
        """Stop listening; waiters return the current status at once."""
        self._closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        self._wake_all()

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status; ``accepted`` from job.json before the notifier has written
        status.json; None for an unknown job."""
        if not is_job_id(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        spec: JobSpec | None = None
        try:
            status = JobStatus.model_validate_json(
                await self._storage.get_bytes(status_key(job_id))
            )
        except ObjectMissing:
            spec = await self._spec(job_id)
            if spec is None:
                return None
            status = JobStatus(
                job_id=job_id,
                state=JobState.ACCEPTED,
                model=spec.model,
                sheep_id=spec.sheep_id,
                accepted_at=spec.declared_at,
            )
        if status.state is not JobState.ACCEPTED:
            return status
        spec = spec or await self._spec(job_id)
        if spec is None or spec.inputs is None:
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

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            event = JobEvent.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning(
                "ignoring job event (routing key %s): %s",
                message.routing_key,
                format_validation_error(exc),
            )
            reject("job-events", invalid_reason(exc))
            return
        if event.data.ready:
            self._wake(event.data.job_id, event.data)

    async def _spec(self, job_id: str) -> JobSpec | None:
        try:
            return JobSpec.model_validate_json(await self._storage.get_bytes(job_key(job_id)))
        except ObjectMissing:
            return None
