"""Where a sheep's jobs come from: its own queue always, the shared pool (its class's queues
and the pool's) only while no job of its own queue (or a leased pool job) keeps it busy, so
that no pool job waits behind it.

    deliveries = Deliveries(broker, Membership.named(config, "gpu0"), reconnect_interval=1.0)
    await deliveries.start()
    await deliveries.open_pool()         # the runner is free and nothing waits
    delivery = await deliveries.next()
    await deliveries.close_pool()        # own job, or a leased one: pool jobs go elsewhere
    await deliveries.stop()              # deliveries not started go back to their queues

Each has a queue per priority. The own queues are consumed with a prefetch of four each (see
``OWN_PREFETCH``), the pool's with a
prefetch of one: a pool job held by its unacknowledged delivery keeps anything more of its
priority from coming from the pool meanwhile. What is delivered waits in an inbox
(``services.sheep.inbox``) that hands out the highest priority first.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage

from schemas.job import JobDispatch, Priority
from services.common.broker import Broker
from services.common.consumer import KEPT, Outcome, TypedConsumer
from services.common.outages import backoff, settle
from services.sheep.inbox import Inbox, Prioritised
from services.sheep.membership import Membership

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Prioritised)

OWN_PREFETCH = 4
"""Jobs of each of its own queues a sheep holds at once: one on the runner, one finishing
(its outputs stored, its outcome reported), one being prepared, and one more in the inbox,
so that the next job of a priority is in sight when the one after the next is chosen."""


@dataclass(frozen=True)
class Delivery:
    dispatch: JobDispatch
    message: AbstractIncomingMessage
    from_pool: bool

    @property
    def priority(self) -> Priority:
        return self.dispatch.priority


class Deliveries:
    """The sheep's consumers of its own queue and of the pool, feeding one inbox. Both keep
    what they deliver: the sheep settles each job once it is done."""

    def __init__(self, broker: Broker, member: Membership, reconnect_interval: float) -> None:
        self._sheep_id = member.sheep_id
        self._reconnect_interval = reconnect_interval
        self._inbox: Inbox[Delivery] = Inbox()
        self._broker = broker
        self._own = [self._consumer(q, from_pool=False) for q in member.own_queues(broker.names)]
        self._pool = [self._consumer(q, from_pool=True) for q in member.shared_queues(broker.names)]
        self._consuming = [*member.own_queues(broker.names), *member.shared_queues(broker.names)]
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
        for consumer in self._own:
            await consumer.start()
        for consumer in self._pool:
            await consumer.open()
        log.info("sheep %s consuming %s", self._sheep_id, ", ".join(self._consuming))

    async def next(self, aside: list[A]) -> Delivery | A | None:
        """The next delivery, or one of ``aside`` (taken before and put aside since): the
        highest priority first, then in arrival order, those aside first; None once
        :meth:`end` was called and what arrived before is taken."""
        return await self._inbox.get(aside)

    async def outranking(self, priority: Priority) -> None:
        """Return once a delivery of a priority higher than ``priority`` waits."""
        await self._inbox.outranking(priority)

    def waiting(self) -> bool:
        """Whether a delivery waits to be taken."""
        return bool(len(self._inbox))

    def end(self) -> None:
        """Make :meth:`next` return None once what arrived before is taken."""
        self._inbox.end()

    async def stop_consuming(self) -> None:
        """No more deliveries; the job in hand can still be settled."""
        self._stopping = True
        for consumer in self._own:
            await consumer.pause()
        await self.close_pool()

    async def stop(self) -> None:
        """Give back what was delivered but never started, and close the channels."""
        for delivery in self._inbox.remove(lambda _: True):
            await settle(delivery.message, "requeue")
        for consumer in (*self._own, *self._pool):
            await consumer.stop()

    async def close_pool(self) -> None:
        """Stop taking pool work and hand back pool jobs that arrived but were not started.
        A job runs meanwhile: pool jobs delivered before the consumer is gone are handed
        back as they come (``_receive``)."""
        if not self._pool_open:
            return
        self._pool_open = False
        await asyncio.gather(*(consumer.pause() for consumer in self._pool))
        for delivery in self._inbox.remove(lambda delivery: delivery.from_pool):
            await settle(delivery.message, "requeue")

    async def _receive(
        self, dispatch: JobDispatch, message: AbstractIncomingMessage, *, from_pool: bool
    ) -> Outcome:
        if self._stopping or (from_pool and not self._pool_open):  # let another sheep have it
            return "requeue"
        self._inbox.put(Delivery(dispatch, message, from_pool))
        return KEPT

    async def open_pool(self) -> None:
        """Take pool work: only while idle, so nothing waits behind a busy sheep."""
        delays = backoff(self._reconnect_interval)
        while not (self._pool_open or self._stopping):
            self._pool_open = True
            try:
                await asyncio.gather(*(consumer.resume() for consumer in self._pool))
            except Exception as exc:  # a channel still being restored after a reconnection
                self._pool_open = False
                log.warning("sheep %s cannot consume the pool yet: %s", self._sheep_id, exc)
                await self._broker.wait_connected()
                if self.waiting():  # its own queue has work meanwhile
                    return
                await asyncio.sleep(next(delays))
                continue
            if not self._pool_open:  # close_pool() ran while we subscribed: stay closed
                await asyncio.gather(*(consumer.pause() for consumer in self._pool))
            return
