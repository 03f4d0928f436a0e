"""Turning the store's "object created" notifications into dispatch attempts.

Consumes ``<ns>.inputs`` (bound to the storage exchange). Events for other buckets, removals
and keys outside the layout are acknowledged, counted and ignored, as are (silently) events for
a job's other objects; messages that are not S3 notifications are dead-lettered with a log
line naming the problem.

MinIO drops the notifications it cannot deliver while RabbitMQ is down, so the listener also
has the intake re-check the jobs waiting for inputs (:meth:`Intake.reconcile`) when it starts
and whenever the broker connection comes back: events, not a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.layout import RESERVED_PREFIX, parse_key
from schemas.s3 import S3EventNotification, S3Record
from services.common.metrics import invalid_reason, reject
from services.gateway.intake import Intake

log = logging.getLogger(__name__)

RECONCILE_RETRY = 1.0
MAX_RECONCILE_RETRY = 30.0
"""Seconds before re-checking the waiting jobs again after a failure (doubling up to this);
a reconnection re-checks at once."""


class UploadListener:
    def __init__(self, intake: Intake, bucket: str) -> None:
        self.intake = intake
        self.bucket = bucket
        self._channel: AbstractChannel | None = None
        self._recheck = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self, prefetch: int = 64) -> None:
        broker = self.intake.broker
        self._channel, _ = await broker.consume(
            broker.names.inputs_queue, self.handle, prefetch=prefetch
        )
        broker.connection.reconnect_callbacks.add(self._on_reconnect)
        self._recheck.set()  # uploads may have gone unnoticed while no gateway was listening
        self._reconciler = asyncio.create_task(self._reconcile(), name="uploads-reconcile")

    async def stop(self) -> None:
        self.intake.broker.connection.reconnect_callbacks.discard(self._on_reconnect)
        if self._reconciler:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
            self._reconciler = None
        if self._channel:  # closing the channel cancels the consumer; unacked are requeued
            await self._channel.close()
            self._channel = None

    def _on_reconnect(self, _: object) -> None:
        self._recheck.set()

    async def _reconcile(self) -> None:
        """Re-check the waiting jobs on every request; after a failure (the store may be down
        too) again with backoff, or at once if the broker reconnects meanwhile."""
        delay = RECONCILE_RETRY
        while True:
            await self._recheck.wait()
            self._recheck.clear()
            try:
                await self.intake.reconcile()
                delay = RECONCILE_RETRY
            except Exception as exc:
                log.warning(
                    "re-checking the jobs waiting for inputs failed (%s: %s); again in %g s",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._recheck.wait(), delay)
                self._recheck.set()
                delay = min(delay * 2, MAX_RECONCILE_RETRY)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = S3EventNotification.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning(
                "dead-lettering a message on the inputs queue that is not an S3 notification: %s",
                format_validation_error(exc),
            )
            reject("inputs", invalid_reason(exc))
            await message.reject(requeue=False)
            return
        job_ids = {job_id for record in event.records if (job_id := self._input_of(record))}
        try:
            for job_id in job_ids:
                await self.intake.try_dispatch(job_id)
        except Exception:
            log.exception("dispatch after upload failed; the notification will be retried")
            await message.nack(requeue=True)
            return
        await message.ack()

    def _input_of(self, record: S3Record) -> str | None:
        """The job whose input ``record`` announces. Events Shepherd cannot use are counted and
        ignored; the other objects of a job (its status, outputs, ...) are ignored silently."""
        key = record.s3.object.decoded_key
        if record.s3.bucket.name != self.bucket:  # the storage exchange may serve many buckets
            log.debug("ignoring an event of bucket %s", record.s3.bucket.name)
            reject("inputs", "other-bucket")
            return None
        if key.startswith(RESERVED_PREFIX):  # Shepherd's own bookkeeping
            return None
        if not record.created:
            log.debug("ignoring %s of %s", record.event_name, key)
            reject("inputs", "not-created")
            return None
        parsed = parse_key(key)
        if parsed is None:
            log.warning("ignoring an event of %r, a key outside the layout <job_id>/...", key)
            reject("inputs", "outside-layout")
            return None
        return parsed.job_id if parsed.part == "input" else None
