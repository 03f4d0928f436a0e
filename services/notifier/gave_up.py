"""Marks failed the jobs RabbitMQ dead-lettered after too many deliveries.

A job whose sheep keeps dying before it can even take the job's lease is dropped by its
quorum queue once it was delivered ``delivery_limit`` times, and lands in ``<ns>.gave-up``
(a copy stays in ``<ns>.dead`` for inspection). This listener turns each into a ``failed``
report, so the job reaches a terminal state like any other.

    listener = GaveUpListener(config, broker)
    await listener.start()
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import ValidationError

from schemas.config import Config
from schemas.errors import format_validation_error
from schemas.events import StatusReport
from schemas.job import JobDispatch
from schemas.status import ErrorInfo, JobState
from services.common.broker import Broker

log = logging.getLogger(__name__)


class GaveUpListener:
    def __init__(self, config: Config, broker: Broker) -> None:
        self._broker = broker
        self._limit = config.broker.delivery_limit
        self._consumer: tuple[AbstractRobustChannel, str] | None = None

    async def start(self) -> None:
        self._consumer = await self._broker.consume(
            self._broker.names.gave_up_queue, self._receive, prefetch=16
        )

    async def stop(self) -> None:
        if self._consumer is not None:
            channel, _ = self._consumer
            self._consumer = None
            await channel.close()

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        try:
            dispatch = JobDispatch.model_validate_json(message.body)
        except ValidationError as exc:  # a sheep rejected it as unreadable; it is in <ns>.dead
            log.warning(
                "dropping an unreadable dead-lettered job: %s", format_validation_error(exc)
            )
            await message.ack()
            return
        report = StatusReport(
            job_id=dispatch.job.job_id,
            model=dispatch.job.model,
            attempt=self._limit,
            state=JobState.FAILED,
            error=ErrorInfo(type="GaveUp", message=f"gave up after {self._limit} deliveries"),
        )
        await self._broker.publish(self._broker.names.events_exchange, report.routing_key, report)
        await message.ack()
        log.warning("job %s failed: %s", report.job_id, report.error.message)
