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
from dataclasses import dataclass
from functools import partial

from aio_pika.abc import AbstractIncomingMessage

from schemas.job import JobDispatch
from services.common.broker import Broker
from services.common.consumer import KEPT, Outcome, TypedConsumer
from services.common.outages import backoff, settle

log = logging.getLogger(__name__)

OWN_PREFETCH = 2
"""Jobs of its own queue a sheep holds at once: one on the runner, one being prepared."""


@dataclass(frozen=True)
class Delivery:
    dispatch: JobDispatch
    message: AbstractIncomingMessage
    from_pool: bool


class Deliveries:
    """The sheep's consumers of its own queue and of the pool, feeding one inbox. Both keep
    what they deliver: the sheep settles each job once it is done."""

    def __init__(self, broker: Broker, sheep_id: str, reconnect_interval: float) -> None:
        self._sheep_id = sheep_id
        self._reconnect_interval = reconnect_interval
        self._inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._broker = broker
        names = broker.names
        self._own = self._consumer(names.sheep_queue(sheep_id), from_pool=False)
        self._pool = self._consumer(names.pool_queue, from_pool=True)
        self._pool_open = False
        self._stopping = False

    def _consumer(self, queue: str, *, from_pool: bool) -> TypedConsumer[JobDispatch]:
        return TypedConsumer(
            self._broker,
            queue,
            JobDispatch,
            partial(self._receive, from_pool=from_pool),
            source="jobs",
            bad_input="dead-letter",
            bad_input_log=f"sheep {self._sheep_id}: dead-lettering an invalid job from {queue}",
            prefetch=1 if from_pool else OWN_PREFETCH,
        )

    async def start(self) -> None:
        await self._own.start()
        await self._pool.open()
        log.info(
            "sheep %s consuming %s", self._sheep_id, self._broker.names.sheep_queue(self._sheep_id)
        )

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
        """No more deliveries; the job in hand can still be settled."""
        self._stopping = True
        await self._own.pause()
        await self.close_pool()

    async def stop(self) -> None:
        """Give back what was delivered but never started, and close the channels."""
        while not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            if delivery is not None:
                await settle(delivery.message, "requeue")
        await self._own.stop()
        await self._pool.stop()

    async def close_pool(self) -> None:
        """Stop taking pool work and hand back pool jobs that arrived but were not started.
        A job runs meanwhile: pool jobs delivered before the consumer is gone are handed
        back as they come (``_receive``)."""
        if not self._pool_open:
            return
        self._pool_open = False
        await self._pool.pause()
        kept = []
        while not self._inbox.empty():
            delivery = self._inbox.get_nowait()
            if delivery is not None and delivery.from_pool:
                await settle(delivery.message, "requeue")
            else:
                kept.append(delivery)
        for delivery in kept:
            self._inbox.put_nowait(delivery)

    async def _receive(
        self, dispatch: JobDispatch, message: AbstractIncomingMessage, *, from_pool: bool
    ) -> Outcome:
        if self._stopping or (from_pool and not self._pool_open):  # let another sheep have it
            return "requeue"
        self._inbox.put_nowait(Delivery(dispatch, message, from_pool))
        return KEPT

    async def open_pool(self) -> None:
        """Take pool work: only while idle, so nothing waits behind a busy sheep."""
        delays = backoff(self._reconnect_interval)
        while not (self._pool_open or self._stopping):
            self._pool_open = True
            try:
                await self._pool.resume()
            except Exception as exc:  # a channel still being restored after a reconnection
                self._pool_open = False
                log.warning("sheep %s cannot consume the pool yet: %s", self._sheep_id, exc)
                await self._broker.wait_connected()
                if not self._inbox.empty():  # its own queue has work meanwhile
                    return
                await asyncio.sleep(next(delays))
                continue
            if not self._pool_open:  # close_pool() ran while we subscribed: stay closed
                await self._pool.pause()
            return
