"""One way to consume a queue: each message decoded into its pydantic model, the handler given
the model, what it decides settled, and an orderly stop.

    consumer = TypedConsumer(
        broker, names.gave_up_queue, JobDispatch, self._fail,
        source="gave-up", bad_input="ack", bad_input_log="dropping an unreadable job",
        prefetch=16,
    )
    await consumer.start()

    async def _fail(self, dispatch: JobDispatch, _: AbstractIncomingMessage) -> Settlement:
        ...                                   # only the handling
        return "ack"

A message that does not decode is logged with what is wrong, counted in
``shepherd_rejected_messages_total{source, reason}`` and settled as the consumer says once
for all (``bad_input``: ``"dead-letter"`` keeps it in ``<ns>.dead``, ``"ack"`` drops it). A
handler that raises gets its message dead-lettered and counted as ``error``; one that raises
:class:`~services.common.outages.Abandoned` (its channel closed during an outage) leaves it to
the broker, which redelivers it.

Stopping cancels the consumer, gives the handlers in hand ``grace`` seconds, cancels the rest
and closes the channel: what was not settled goes back to the queue.

A consumer of raw bytes (AMQP submissions: content type, size, then JSON) is a
:class:`QueueConsumer`, the same without the decoding. Consumers of events rather than of a
queue of their own (listeners, the event history) use :func:`decode` for the same decoding,
logging and counting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from pydantic import BaseModel, ValidationError

from schemas.errors import format_validation_error
from services.common.broker import Broker
from services.common.metrics import invalid_reason, reject
from services.common.outages import Abandoned, Settlement, settle

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Seconds a stopping consumer waits for the broker to cancel it (it may be unreachable).
CANCEL_TIMEOUT = 5.0
#: Seconds a stopping consumer gives the handlers in hand by default.
STOP_GRACE = 5.0


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


async def wind_down(
    channel: AbstractRobustChannel,
    queue: str,
    tag: str,
    in_flight: set[asyncio.Task[Any]],
    grace: float,
) -> None:
    """The orderly stop of a consumer: no new deliveries, ``grace`` seconds for the work in
    ``in_flight``, the rest cancelled. The caller closes the channel, which puts back what
    was not settled."""
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT):
            await (await channel.get_queue(queue, ensure=False)).cancel(tag)
    except Exception:
        log.warning("cancelling the consumer of %s failed", queue, exc_info=True)
    if in_flight:
        _, late = await asyncio.wait(set(in_flight), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


class QueueConsumer:
    """Consume ``queue`` raw: ``handler`` gets each message and returns its settlement."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handler: Callable[[AbstractIncomingMessage], Awaitable[Settlement]],
        *,
        source: str,
        prefetch: int,
        grace: float = STOP_GRACE,
    ) -> None:
        """``source``: the queue's role, for the rejected-messages counter (``inputs``)."""
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._source = source
        self._prefetch = prefetch
        self._grace = grace
        self._consumer: tuple[AbstractRobustChannel, str] | None = None
        self._in_flight: set[asyncio.Task[object]] = set()
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._consumer = await self._broker.consume(
            self._queue, self._receive, prefetch=self._prefetch
        )

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # left unsettled: the broker delivers it again once the channel closes
        task = asyncio.current_task()
        assert task is not None  # the broker runs each delivery's handler in a task
        self._in_flight.add(task)
        try:
            await settle(message, await self._guarded(message))
        except Abandoned:
            pass  # the channel closed during an outage: the broker redelivers the message
        finally:
            self._in_flight.discard(task)

    async def _guarded(self, message: AbstractIncomingMessage) -> Settlement:
        try:
            return await self._handler(message)
        except (Abandoned, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("handler for %s failed; dead-lettering the message", self._queue)
            reject(self._source, "error")
            return "dead-letter"

    async def stop(self) -> None:
        """Stop new deliveries, give the handlers in hand ``grace`` seconds, cancel the rest
        and close the channel: what was not settled goes back to the queue."""
        self._stopping = True
        if self._consumer is None:
            return
        channel, tag = self._consumer
        self._consumer = None
        await wind_down(channel, self._queue, tag, self._in_flight, self._grace)
        await channel.close()


class TypedConsumer(QueueConsumer, Generic[M]):
    """Consume ``queue`` as messages of ``model`` (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        model: type[M],
        handler: Callable[[M, AbstractIncomingMessage], Awaitable[Settlement]],
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

    async def _decoded(self, message: AbstractIncomingMessage) -> Settlement:
        decoded = decode(self._model, message.body, self._source, self._bad_input_log)
        if decoded is None:
            return self._bad_input
        return await self._typed_handler(decoded, message)
