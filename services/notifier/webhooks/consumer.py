"""A consumer of one queue that knows its handlers in flight, so that stopping is orderly.

The broker runs each delivery's handler as a task of its own (up to the prefetch at once).
:meth:`QueueConsumer.stop` stops new deliveries, gives those in hand ``grace`` seconds to
finish, cancels the rest and closes the channel: what was not acked is redelivered.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from services.common.broker import Broker, Handler

log = logging.getLogger(__name__)

CANCEL_TIMEOUT = 5.0
"""Seconds to wait for the broker to cancel the consumer (it may be unreachable)."""


class QueueConsumer:
    def __init__(
        self, broker: Broker, queue: str, handler: Handler, *, prefetch: int, grace: float
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._prefetch = prefetch
        self._grace = grace
        self._consumer: tuple[AbstractRobustChannel, str] | None = None
        self._in_flight: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._consumer = await self._broker.consume(
            self._queue, self._tracked, prefetch=self._prefetch
        )

    async def _tracked(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None  # the broker calls handlers in tasks
        self._in_flight.add(task)
        try:
            await self._handler(message)
        finally:
            self._in_flight.discard(task)

    async def stop(self) -> None:
        if self._consumer is None:
            return
        channel, tag = self._consumer
        self._consumer = None
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                queue = await channel.get_queue(self._queue, ensure=False)
                await queue.cancel(tag)
        except Exception:
            log.warning("cancelling the consumer of %s failed", self._queue, exc_info=True)
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self._grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await channel.close()
