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

from aio_pika.abc import AbstractIncomingMessage

from schemas.layout import RESERVED_PREFIX, parse_key
from schemas.s3 import S3EventNotification, S3Record
from services.common.consumer import TypedConsumer
from services.common.metrics import reject
from services.common.outages import Settlement, backoff
from services.gateway.intake import Intake

log = logging.getLogger(__name__)


class UploadListener:
    def __init__(self, intake: Intake, bucket: str) -> None:
        self.intake = intake
        self.bucket = bucket
        self._consumer = TypedConsumer(
            intake.broker,
            intake.broker.names.inputs_queue,
            S3EventNotification,
            self.handle,
            source="inputs",
            bad_input="dead-letter",
            bad_input_log="dead-lettering a message on the inputs queue that is not an S3 "
            "notification",
            prefetch=64,
        )
        self._recheck = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self.intake.broker.connection.reconnect_callbacks.add(self._on_reconnect)
        self._recheck.set()  # uploads may have gone unnoticed while no gateway was listening
        self._reconciler = asyncio.create_task(self._reconcile(), name="uploads-reconcile")

    async def stop(self) -> None:
        self.intake.broker.connection.reconnect_callbacks.discard(self._on_reconnect)
        if self._reconciler:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
            self._reconciler = None
        await self._consumer.stop()

    def _on_reconnect(self, _: object) -> None:
        self._recheck.set()

    async def _reconcile(self) -> None:
        """Re-check the waiting jobs on every request; after a failure (the store may be down
        too) again with backoff, or at once if the broker reconnects meanwhile."""
        delays = backoff()
        while True:
            await self._recheck.wait()
            self._recheck.clear()
            try:
                await self.intake.reconcile()
                delays = backoff()
            except Exception as exc:
                delay = next(delays)
                log.warning(
                    "re-checking the jobs waiting for inputs failed (%s: %s); again in %g s",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._recheck.wait(), delay)
                self._recheck.set()

    async def handle(
        self, event: S3EventNotification, message: AbstractIncomingMessage
    ) -> Settlement:
        job_ids = {job_id for record in event.records if (job_id := self._input_of(record))}
        try:
            for job_id in job_ids:
                await self.intake.try_dispatch(job_id)
        except Exception:
            log.exception("dispatch after upload failed; the notification will be retried")
            return "requeue"
        return "ack"

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
