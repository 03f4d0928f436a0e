"""Turning the store's "object created" notifications into dispatch attempts.

Consumes ``<ns>.inputs`` (bound to the storage exchange). Events for other buckets or for
keys outside ``<job_id>/inputs/`` are acknowledged and ignored; events that are not S3
notifications are dead-lettered with a log line naming the problem.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from schemas.errors import format_validation_error
from schemas.layout import parse_key
from schemas.s3 import S3EventNotification
from services.gateway.intake import Intake

log = logging.getLogger(__name__)


class UploadListener:
    def __init__(self, intake: Intake, bucket: str) -> None:
        self.intake = intake
        self.bucket = bucket
        self._channel: AbstractChannel | None = None

    async def start(self, prefetch: int = 64) -> None:
        broker = self.intake.broker
        self._channel, _ = await broker.consume(
            broker.names.inputs_queue, self.handle, prefetch=prefetch
        )

    async def stop(self) -> None:
        if self._channel:  # closing the channel cancels the consumer; unacked are requeued
            await self._channel.close()
            self._channel = None

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = S3EventNotification.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning(
                "dead-lettering a message on the inputs queue that is not an S3 notification: %s",
                format_validation_error(exc),
            )
            await message.reject(requeue=False)
            return
        job_ids = {
            parsed.job_id
            for record in event.records
            if record.created
            and record.s3.bucket.name == self.bucket
            and (parsed := parse_key(record.s3.object.decoded_key))
            and parsed.part == "input"
        }
        try:
            for job_id in job_ids:
                await self.intake.try_dispatch(job_id)
        except Exception:
            log.exception("dispatch after upload failed; the notification will be retried")
            await message.nack(requeue=True)
            return
        await message.ack()
