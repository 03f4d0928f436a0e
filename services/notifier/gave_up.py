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

from aio_pika.abc import AbstractIncomingMessage

from schemas.config import Config
from schemas.events import StatusReport
from schemas.job import JobDispatch
from schemas.status import ErrorInfo, JobState
from services.common.broker import Broker
from services.common.consumer import TypedConsumer
from services.common.outages import Settlement, holding

log = logging.getLogger(__name__)


class GaveUpListener:
    def __init__(self, config: Config, broker: Broker) -> None:
        self._broker = broker
        self._limit = config.broker.delivery_limit
        # An unreadable job was rejected by a sheep as such, and is in <ns>.dead already.
        self._consumer = TypedConsumer(
            broker,
            broker.names.gave_up_queue,
            JobDispatch,
            self._fail,
            source="gave-up",
            bad_input="ack",
            bad_input_log="dropping an unreadable dead-lettered job",
            prefetch=16,
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def _fail(self, dispatch: JobDispatch, message: AbstractIncomingMessage) -> Settlement:
        report = StatusReport(
            job_id=dispatch.job.job_id,
            model=dispatch.job.model,
            attempt=self._limit,
            state=JobState.FAILED,
            error=ErrorInfo(type="GaveUp", message=f"gave up after {self._limit} deliveries"),
        )
        # <ns>.gave-up dead-letters nowhere: a report lost here would leave the job unended.
        await holding(
            [message],
            "reporting a job given up",
            lambda: self._broker.publish(
                self._broker.names.events_exchange, report.routing_key, report
            ),
        )
        log.warning("job %s failed: %s", report.job_id, report.error.message)
        return "ack"
