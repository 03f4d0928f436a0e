"""How a sheep holds the job it runs: its unacknowledged delivery while the job is young, a
lease in the sheep's lease queue once it has run ``lease_after`` seconds.

    hold = Hold(leases, message, attempt=1, lease_after=60)
    hold.start()                    # leases the job if it is still running after 60 s
    ...
    await hold.release()            # outcome published: ack the delivery, or drop the lease
    # or: await hold.give_back()    # the job goes back to its queue, to be run again

    leases = Leases(broker, "gpu0", lease_time=60)
    await leases.open()             # returns what a previous incarnation left behind
    lease = await leases.take(message, attempt=1)   # parks a copy, then acks the delivery
    ...                             # the copy is renewed while the job runs
    await lease.release()           # outcome published: the job is over
    # or: await lease.give_back()   # the job goes back to its queue, to be run again

Why two ways: a delivery left unacknowledged is requeued by RabbitMQ the moment its sheep's
connection dies, at no cost, but RabbitMQ also cuts off deliveries unacked for longer than
its consumer timeout, which would run every long job twice. So only jobs that run long
enough to need one are leased (a copy parked, renewed, dropped: a publish and a few gets).
A parked copy expires after ``lease_time`` unless renewed
and is then dead-lettered back into the queue it came from (see ``schemas.topology``), so a
job whose sheep died for good runs again elsewhere; a sheep that comes back returns its
copies at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from schemas.broker_names import ATTEMPTS, HOLDER
from schemas.topology import Topology
from services.common.broker import Broker

log = logging.getLogger(__name__)


def attempt_number(message: AbstractIncomingMessage) -> int:
    """Which attempt this delivery is: earlier attempts, plus the broker's redeliveries of
    this message (a sheep that died before taking its lease), plus one."""
    headers = message.headers or {}
    return 1 + _count(headers.get(ATTEMPTS)) + _count(headers.get("x-delivery-count"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class Leases:
    """One sheep's lease queue. A sheep id must run in one process at a time.

    ``expiring``: the declaration of a lease queue that RabbitMQ deletes once unused (a sheep
    of a class's), made again before each lease; the queue is deleted as the sheep leaves."""

    def __init__(
        self, broker: Broker, sheep_id: str, lease_time: float, expiring: Topology | None = None
    ) -> None:
        self._broker = broker
        self._sheep_id = sheep_id
        self.lease_time = lease_time
        self._expiring = expiring
        self._names = broker.names
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None

    async def open(self) -> None:
        self._channel = await self._broker.connection.channel(publisher_confirms=False)
        self._queue = await self._channel.get_queue(
            self._names.lease_queue(self._sheep_id), ensure=False
        )
        if returned := await self.give_back_all():
            log.info("sheep %s: queued again %d job(s) of its last run", self._sheep_id, returned)

    async def close(self) -> None:
        """Close the channel (copies it had fetched go back to the queue); then an expiring
        lease queue left empty is deleted (one still holding a copy, left by a give-back that
        failed, expires once the copy has)."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = self._queue = None
        if self._expiring is not None:
            try:
                await self._delete_if_empty()
            except Exception as exc:
                log.info("sheep %s: lease queue left to expire: %s", self._sheep_id, exc)

    async def _delete_if_empty(self) -> None:
        """Quorum queues refuse ``if_empty`` (and RabbitMQ closes the connection for it): the
        sheep, which alone parks copies there, looks, then deletes."""
        channel = await self._broker.connection.channel(publisher_confirms=False)
        try:
            name = self._names.lease_queue(self._sheep_id)
            queue = await channel.declare_queue(name, passive=True)
            held = queue.declaration_result.message_count
            if held:
                log.info(
                    "sheep %s: lease queue left to expire with %d copies", self._sheep_id, held
                )
            else:
                await queue.delete(if_unused=False, if_empty=False)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def take(self, message: AbstractIncomingMessage, attempt: int) -> Lease:
        """Park a copy of the delivered job, then ack the delivery."""
        if self._expiring is not None:
            await self._broker.declare(self._expiring)
            await self._touch()
        lease = Lease(self, message.body, message.routing_key or "", attempt)
        await lease.park()
        await message.ack()
        lease.start_renewing()
        return lease

    async def give_back_all(self) -> int:
        """Queue every parked job again; how many there were."""
        return await self.sweep()

    async def sweep(
        self, mine: str | None = None, *, keep: str | None = None, requeue: str | None = None
    ) -> int:
        """Go through the parked copies, oldest first: the copy ``keep`` stays (and ends the
        sweep), the copy ``requeue`` is queued again, other copies of the lease whose ids
        start with ``mine`` are dropped, and every other copy (left by a give-back that
        failed, or by a previous run) is queued again. How many were queued again."""
        queued = 0
        while (copy := await self._get()) is not None:
            copy_id = copy.message_id or ""
            if keep is not None and copy_id == keep:
                await copy.nack(requeue=True)
                break
            if mine is None or not copy_id.startswith(mine) or copy_id == requeue:
                await self._broker.publish(
                    self._names.jobs_exchange,
                    copy.routing_key or "",
                    copy.body,
                    headers={ATTEMPTS: _count((copy.headers or {}).get(ATTEMPTS))},
                )
                queued += 1
            await copy.ack()
        return queued

    async def _park(self, body: bytes, routing_key: str, attempt: int, message_id: str) -> None:
        await self._broker.publish(
            self._names.leases_exchange,
            routing_key,
            body,
            headers={HOLDER: self._sheep_id, ATTEMPTS: attempt},
            message_id=message_id,
            expiration=self.lease_time,
        )

    async def _touch(self) -> None:
        """A get on the expiring queue, which (unlike a declaration or a publish) restarts
        its idle time: it cannot expire under the copy about to be parked before the first
        renewal's gets."""
        if (copy := await self._get()) is not None:
            await copy.nack(requeue=True)

    async def _get(self) -> AbstractIncomingMessage | None:
        assert self._queue is not None, "open() first"
        return await self._queue.get(no_ack=False, fail=False)


class Lease:
    """The lease on one job, renewed every third of the lease time until it ends."""

    def __init__(self, leases: Leases, body: bytes, routing_key: str, attempt: int) -> None:
        self._leases = leases
        self._body = body
        self._routing_key = routing_key
        self._attempt = attempt
        self._prefix = f"{uuid.uuid4().hex}-"
        self._numbers = itertools.count()
        self._current: str | None = None
        self._renewal: asyncio.Task[None] | None = None

    async def park(self) -> None:
        message_id = f"{self._prefix}{next(self._numbers)}"
        await self._leases._park(self._body, self._routing_key, self._attempt, message_id)
        self._current = message_id

    def start_renewing(self) -> None:
        self._renewal = asyncio.create_task(self._renew(), name="lease-renewal")

    async def release(self) -> None:
        """The job is over: drop its copies."""
        await self._stop_renewing()
        await self._leases.sweep(self._prefix)

    async def give_back(self) -> None:
        """The job must run again: queue its latest copy, drop the older ones."""
        await self._stop_renewing()
        await self._leases.sweep(self._prefix, requeue=self._current)

    async def _stop_renewing(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
            self._renewal = None

    async def _renew(self) -> None:
        """Park a fresh copy, then drop the older ones. A renewal that fails only risks the
        job running twice (its old copy expires), never losing it."""
        while True:
            await asyncio.sleep(self._leases.lease_time / 3)  # a deadline, not a poll
            try:
                await self.park()
                await self._leases.sweep(self._prefix, keep=self._current)
            except Exception as exc:
                log.warning("renewing the lease on a job failed: %s", exc)


class Hold:
    """The job a sheep runs, held by its delivery until it has run ``lease_after`` seconds,
    then by a lease (see the module's docstring)."""

    def __init__(
        self,
        leases: Leases,
        message: AbstractIncomingMessage,
        attempt: int,
        lease_after: float,
        *,
        before_lease: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``before_lease``: awaited before the lease is taken and the delivery acked (a
        sheep closes the pool then: once the delivery no longer fills its prefetch, a pool
        job could come to it, only to be requeued, which uses up one of that job's
        deliveries)."""
        self._leases = leases
        self._before_lease = before_lease
        self._message = message
        self._attempt = attempt
        self._lease_after = lease_after
        self._lease: Lease | None = None
        self._leasing: asyncio.Task[None] | None = None
        self._taking = False

    def start(self) -> None:
        self._leasing = asyncio.create_task(self._lease_later(), name="lease-later")

    async def release(self) -> None:
        """The job is over: ack its delivery, or drop its lease."""
        await self._stop_leasing()
        await (self._lease.release() if self._lease else self._message.ack())

    async def give_back(self) -> None:
        """The job must run again: requeue its delivery, or give its lease back."""
        await self._stop_leasing()
        await (self._lease.give_back() if self._lease else self._message.nack(requeue=True))

    async def _lease_later(self) -> None:
        """Lease the job once it has run ``lease_after`` s; while the broker refuses, try
        again each third of the lease time (the delivery holds the job meanwhile)."""
        await asyncio.sleep(self._lease_after)  # a deadline, not a poll
        if self._before_lease is not None:
            await self._before_lease()
        while True:
            self._taking = True
            try:
                self._lease = await self._leases.take(self._message, self._attempt)
            except Exception as exc:
                log.warning("leasing a long job failed (%s); trying again", exc)
            else:
                return
            finally:
                self._taking = False
            await asyncio.sleep(self._leases.lease_time / 3)

    async def _stop_leasing(self) -> None:
        """Stop the pending lease; one being taken is let finish, so that no parked copy is
        left behind next to a settled delivery."""
        if self._leasing is None:
            return
        if not self._taking:
            self._leasing.cancel()
        await asyncio.gather(self._leasing, return_exceptions=True)
        self._leasing = None
