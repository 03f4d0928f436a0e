"""One way to consume: each message decoded into its pydantic model, the handler given the
model, what it decides settled, and an orderly stop.

    consumer = TypedConsumer(
        broker, names.gave_up_queue, JobDispatch, self._fail,
        source="gave-up", bad_input="ack", bad_input_log="dropping an unreadable job",
        prefetch=16,
    )
    await consumer.start()

    async def _fail(self, dispatch: JobDispatch, _: AbstractIncomingMessage) -> Outcome:
        ...                                   # only the handling
        return "ack"

A message that does not decode is logged with what is wrong, counted in
``shepherd_rejected_messages_total{source, reason}`` and settled as the consumer says once
for all (``bad_input``: ``"dead-letter"`` keeps it in ``<ns>.dead``, ``"ack"`` drops it). A
handler that raises gets its message dead-lettered and counted as ``error``; one that raises
:class:`~services.common.outages.Abandoned` (its channel closed during an outage) leaves it to
the broker, which redelivers it. A handler that keeps the message, to settle it itself once
its work is done (a sheep's job, a batch of status reports), answers :data:`KEPT`; work of
its own that settles kept messages (the notifier's per-job workers) goes to
:meth:`QueueConsumer.track`, which a stop waits for.

The queue is one of the topology's (a name), or a private one bound to the events exchange
that lives as long as the connection (:class:`Subscription`: what a listener hears while it
is down is missed). :meth:`~QueueConsumer.pause` and :meth:`~QueueConsumer.resume` stop and
restart deliveries on the same channel, whose kept messages can still be settled meanwhile.

Stopping cancels the consumer, gives the work in hand ``grace`` seconds, cancels the rest and
closes the channel: what was not settled goes back to the queue.

A consumer of raw bytes (AMQP submissions: content type, size, then JSON) is a
:class:`QueueConsumer`, the same without the decoding; one that decodes its own way (the
notifier's, whose messages are status reports or jobs) uses :func:`decode`. The streams
(``services.common.history``) are read, not consumed: their readers take records from an
offset and settle nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from pydantic import BaseModel, ValidationError

from schemas.errors import format_validation_error
from services.common.broker import Broker
from services.common.metrics import invalid_reason, reject
from services.common.outages import Abandoned, Settlement, settle

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Seconds a clean-up step with the broker gets (cancelling a consumer, closing a channel):
#: RabbitMQ may be unreachable, and what a dead channel held goes back to its queue anyway.
BROKER_STEP_TIMEOUT = 5.0
#: Seconds a stopping consumer gives the work in hand by default.
STOP_GRACE = 5.0
#: A handler's answer when it keeps the message, to settle it itself later.
KEPT: Final = "kept"

Outcome = Settlement | Literal["kept"]
Handler = Callable[[AbstractIncomingMessage], Awaitable[Outcome]]


def decode(model: type[M], body: bytes, source: str, what: str, *args: object) -> M | None:
    """``body`` as ``model``; None, logged and counted under ``source``, when it is not one.
    ``what % args`` names the message in the log line; it is formatted only then, so that
    a valid message (every job's) costs nothing more than its validation."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        log.warning(f"{what}: %s", *args, format_validation_error(exc))
        reject(source, invalid_reason(exc))
        return None


async def briefly(what: str, action: Awaitable[object]) -> None:
    """A clean-up step with the broker, given :data:`BROKER_STEP_TIMEOUT` seconds; failing
    is only logged."""
    try:
        async with asyncio.timeout(BROKER_STEP_TIMEOUT):
            await action
    except Exception as exc:
        log.warning("%s failed: %s", what, exc or type(exc).__name__)


@dataclass(frozen=True)
class Subscription:
    """A private queue bound to the events exchange with ``routing_keys``."""

    routing_keys: tuple[str, ...]


class QueueConsumer:
    """Consume a queue raw: ``handler`` gets each message and answers its settlement."""

    def __init__(
        self,
        broker: Broker,
        queue: str | Subscription,
        handler: Handler,
        *,
        source: str,
        prefetch: int,
        grace: float = STOP_GRACE,
    ) -> None:
        """``source``: the queue's role, for the rejected-messages counter (``inputs``)."""
        self._broker = broker
        self._queue_spec = queue
        self._handler = handler
        self._source = source
        self._prefetch = prefetch
        self._grace = grace
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def channel(self) -> AbstractRobustChannel:
        """The consumer's channel, once opened: its callbacks tell of outages."""
        assert self._channel is not None, "the consumer is not open"
        return self._channel

    async def start(self) -> None:
        """Open the channel and consume."""
        await self.open()
        await self.resume()

    async def open(self) -> None:
        """Open the channel, not consuming yet."""
        self._stopping = False
        spec = self._queue_spec
        if isinstance(spec, Subscription):
            opened = await self._broker.open_subscription(spec.routing_keys, self._prefetch)
        else:
            opened = await self._broker.open_queue(spec, self._prefetch)
        self._channel, self._queue = opened

    async def resume(self) -> None:
        """Consume (again). Raises while the channel is being restored after an outage."""
        if self._queue is not None and self._tag is None:
            self._tag = await self._queue.consume(self._receive)

    async def pause(self) -> None:
        """No more deliveries; those kept can still be settled. A cancel that fails (RabbitMQ
        away) leaves the consumer registered, so that a later pause or stop tries again and a
        resume does not add a second one."""
        if self._queue is None or self._tag is None:
            return
        try:
            async with asyncio.timeout(BROKER_STEP_TIMEOUT):
                await self._queue.cancel(self._tag)
        except Exception as exc:
            log.warning("cancelling the consumer of %s failed: %s", self._queue.name, exc)
            return
        self._tag = None

    def track(self, task: asyncio.Task[Any]) -> None:
        """Work that settles kept messages: a stop waits for it as for a handler."""
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # left unsettled: the broker delivers it again once the channel closes
        task = asyncio.current_task()
        assert task is not None  # the broker runs each delivery's handler in a task
        self._in_flight.add(task)
        try:
            outcome = await self._guarded(message)
            if outcome != KEPT:
                await settle(message, outcome)
        except Abandoned:
            pass  # the channel closed during an outage: the broker redelivers the message
        finally:
            self._in_flight.discard(task)

    async def _guarded(self, message: AbstractIncomingMessage) -> Outcome:
        try:
            return await self._handler(message)
        except (Abandoned, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("handler for %s failed; dead-lettering the message", self._queue_spec)
            reject(self._source, "error")
            return "dead-letter"

    async def stop(self) -> None:
        """Stop new deliveries, give the work in hand ``grace`` seconds, cancel the rest and
        close the channel: what was not settled goes back to the queue."""
        self._stopping = True
        channel, self._channel = self._channel, None
        if channel is None:
            return
        await self.pause()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self._grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._queue = None
        await briefly("closing a consumer's channel", channel.close())


class TypedConsumer(QueueConsumer, Generic[M]):
    """Consume a queue as messages of ``model`` (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        queue: str | Subscription,
        model: type[M],
        handler: Callable[[M, AbstractIncomingMessage], Awaitable[Outcome]],
        *,
        source: str,
        bad_input: Settlement,
        bad_input_log: str,
        prefetch: int,
        grace: float = STOP_GRACE,
    ) -> None:
        """``bad_input``: the settlement of a message that does not decode; ``bad_input_log``:
        the opening of its log line."""
        super().__init__(
            broker, queue, self._decoded, source=source, prefetch=prefetch, grace=grace
        )
        self._model = model
        self._typed_handler = handler
        self._bad_input = bad_input
        self._bad_input_log = bad_input_log

    async def _decoded(self, message: AbstractIncomingMessage) -> Outcome:
        decoded = decode(self._model, message.body, self._source, self._bad_input_log)
        if decoded is None:
            return self._bad_input
        return await self._typed_handler(decoded, message)
