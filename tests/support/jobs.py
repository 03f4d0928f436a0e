"""Submitting jobs straight to the broker, and listening to the reports they cause."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from schemas.broker_names import Names
from schemas.events import StatusReport
from schemas.job import JobDispatch, JobSpec, ModelRef
from schemas.status import JobState
from services.common.broker import Broker
from services.common.storage import Storage
from services.sheep.service import Sheep

WAIT = 20.0


class Listener:
    """A private queue on the events exchange, and waits for what arrives on it."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.seen: list[StatusReport] = []

    async def collect(self, message: AbstractIncomingMessage) -> None:
        self.messages.put_nowait(message)

    async def report(self, job_id: str, state: JobState) -> StatusReport:
        """The first report of ``job_id`` in ``state``; every report seen is kept in order."""
        async with asyncio.timeout(WAIT):
            while True:
                report = StatusReport.model_validate_json((await self.messages.get()).body)
                self.seen.append(report)
                if report.job_id == job_id and report.state == state:
                    return report

    async def progress(self, job_id: str) -> StatusReport:
        async with asyncio.timeout(WAIT):
            while True:
                report = StatusReport.model_validate_json((await self.messages.get()).body)
                self.seen.append(report)
                if report.job_id == job_id and report.progress is not None:
                    return report

    def states(self, job_id: str) -> list[JobState | None]:
        return [r.state for r in self.seen if r.job_id == job_id and r.state is not None]


async def submit(
    broker: Broker,
    storage: Storage,
    job_id: str,
    model: str,
    payload: bytes,
    *,
    sheep_id: str | None = "s1",
    job_timeout: float | None = None,
) -> None:
    """What the gateway does: inputs into the store, then the dispatch onto the jobs exchange."""
    await storage.put_bytes(f"{job_id}/inputs/input.json", payload, "application/json")
    name, _, version = model.partition(":")
    now = datetime.now(UTC)
    dispatch = JobDispatch(
        job=JobSpec(
            job_id=job_id,
            model=ModelRef(name=name, version=version or "1"),
            sheep_id=sheep_id,
            request_digest="0" * 64,
            declared_at=now,
        ),
        queued_at=now,
        timeout=job_timeout,
    )
    await broker.publish(broker.names.jobs_exchange, Names.job_routing_key(sheep_id), dispatch)


def new_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def unbound(amqp_url: str, queue_name: str, exchange: str) -> AsyncIterator[None]:
    """``queue_name`` deaf to ``exchange`` for the block: what is published meanwhile is lost."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        await queue.unbind(exchange, "")
        try:
            yield
        finally:
            await queue.bind(exchange, "")


@asynccontextmanager
async def started(sheep: Sheep) -> AsyncIterator[Sheep]:
    """``sheep`` started for the block, and stopped after it whatever happened."""
    await sheep.start()
    try:
        yield sheep
    finally:
        await sheep.stop()
