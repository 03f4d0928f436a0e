"""Where a sheep's jobs come from: its own queue always, the shared pool only while no job
of its own queue (or a leased pool job) keeps it busy, so that no pool job waits behind it.

    deliveries = Deliveries(broker, "gpu0", reconnect_interval=1.0)
    await deliveries.start()
    await deliveries.open_pool()         # the runner is free and nothing waits
    delivery = await deliveries.next()
    await deliveries.close_pool()        # own job, or a leased one: pool jobs go elsewhere
    await deliveries.stop()              # deliveries not started go back to their queues

The own queue is consumed with a prefetch of two (the job on the runner and the next one,
whose inputs are fetched meanwhile), the pool with a prefetch of one: a pool job held by its
unacknowledged delivery keeps anything more from coming from the pool meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from services.common.broker import Broker
from services.common.outages import backoff, settle

log = logging.getLogger(__name__)

BROKER_STEP_TIMEOUT = 5.0
"""Seconds a clean-up step with the broker gets (it may be unreachable)."""

OWN_PREFETCH = 2
"""Jobs of its own queue a sheep holds at once: one on the runner, one being prepared."""


@dataclass(frozen=True)
class Delivery:
    message: AbstractIncomingMessage
    from_pool: bool


class Deliveries:
    """The sheep's consumers of its own queue and of the pool, feeding one inbox."""

    def __init__(self, broker: Broker, sheep_id: str, reconnect_interval: float) -> None:
        self._broker = broker
        self._sheep_id = sheep_id
        self._reconnect_interval = reconnect_interval
        self._inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._channels: list[AbstractRobustChannel] = []
        self._own_queue: AbstractQueue | None = None
        self._own_tag: str | None = None
        self._pool_queue: AbstractQueue | None = None
        self._pool_tag: str | None = None
        self._pool_open = False
        self._stopping = False

    async def start(self) -> None:
        names = self._broker.names
        self._own_queue = await self._open_queue(names.sheep_queue(self._sheep_id), OWN_PREFETCH)
        self._pool_queue = await self._open_queue(names.pool_queue, 1)
        self._own_tag = await self._own_queue.consume(partial(self._receive, from_pool=False))
        log.info("sheep %s consuming %s", self._sheep_id, names.sheep_queue(self._sheep_id))

    async def next(self) -> Delivery | None:
        """The next delivery in arrival order; None once :meth:`end` was called."""
        return await self._inbox.get()

    def waiting(self) -> bool:
        """Whether a delivery waits to be taken."""
        return not self._inbox.empty()

    def end(self) -> None:
        """Make :meth:`next` return None once what arrived before is taken."""
        self._inbox.put_nowait(None)

    async def stop_consuming(self) -> None:
        self._stopping = True
        await _cancel_consumer(self._own_queue, self._own_tag)
        self._own_tag = None
        await self.close_pool()

    async def stop(self) -> None:
        """Give back what was delivered but never started, and close the channels."""
        while not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            if delivery is not None:
                await settle(delivery.message, "requeue")
        for channel in self._channels:
            await briefly("closing a channel", channel.close())
        self._channels = []

    async def close_pool(self) -> None:
        """Stop taking pool work and hand back pool jobs that arrived but were not started.
        A job runs meanwhile: pool jobs delivered before the consumer is gone are handed
        back as they come (``_receive``)."""
        if not self._pool_open:
            return
        self._pool_open = False
        tag, self._pool_tag = self._pool_tag, None
        await _cancel_consumer(self._pool_queue, tag)
        kept = []
        while not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            if delivery is not None and delivery.from_pool:
                await settle(delivery.message, "requeue")
            else:
                kept.append(delivery)
        for delivery in kept:
            self._inbox.put_nowait(delivery)

    async def _open_queue(self, name: str, prefetch: int) -> AbstractQueue:
        channel = await self._broker.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        self._channels.append(channel)
        # Passive declare, not get_queue: only declared queues get their consumers back when
        # the robust channel reconnects.
        return await channel.declare_queue(name, passive=True)

    async def _receive(self, message: AbstractIncomingMessage, *, from_pool: bool) -> None:
        if self._stopping or (from_pool and not self._pool_open):  # let another sheep have it
            await settle(message, "requeue")
            return
        self._inbox.put_nowait(Delivery(message, from_pool))

    async def open_pool(self) -> None:
        """Take pool work: only while idle, so nothing waits behind a busy sheep."""
        delays = backoff(self._reconnect_interval)
        while not (self._pool_open or self._stopping or self._pool_queue is None):
            self._pool_open = True
            try:
                tag = await self._pool_queue.consume(partial(self._receive, from_pool=True))
            except Exception as exc:  # a channel still being restored after a reconnection
                self._pool_open = False
                log.warning("sheep %s cannot consume the pool yet: %s", self._sheep_id, exc)
                await self._broker.wait_connected()
                if not self._inbox.empty():  # its own queue has work meanwhile
                    return
                await asyncio.sleep(next(delays))
                continue
            if self._pool_open:
                self._pool_tag = tag
            else:  # stop() closed the pool while we subscribed
                await _cancel_consumer(self._pool_queue, tag)


async def _cancel_consumer(queue: AbstractQueue | None, tag: str | None) -> None:
    if queue is None or tag is None:
        return
    await briefly(f"cancelling the consumer of {queue.name}", queue.cancel(tag))


async def briefly(what: str, action: Awaitable[object]) -> None:
    """A clean-up step with the broker, given ``BROKER_STEP_TIMEOUT`` seconds: RabbitMQ may
    be unreachable, and whatever a dead channel held goes back to its queue anyway."""
    try:
        async with asyncio.timeout(BROKER_STEP_TIMEOUT):
            await action
    except Exception as exc:
        log.warning("%s failed: %s", what, exc or type(exc).__name__)
