"""Reading the event history, ``<ns>.event-stream``, from any offset (or another stream the
same way: ``<ns>.job-logs``, the output of running jobs).

    history = EventHistory(config.broker, names)
    subscription = await history.subscribe(start=1234)   # or "next": from now on
    end = await history.mark()                          # the offset of a mark appended now
    while (event := await subscription.get()) is not None:
        ...  # event.offset, event.kind, event.body
    await subscription.close()
    await history.close()

Each subscription is a consumer of the stream on an AMQP channel of its own, with a prefetch,
so a slow reader holds back only its own deliveries. The channels live on a connection of the
history's own (not the gateway's robust one): when it drops, every subscription ends (``get``
returns None) instead of being restored from the offset it *started* at, which would deliver
again what was already read; a client resumes with the offset it last saw. The connection is
made on the first subscription after it was lost, so nothing runs between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from prometheus_client import Gauge

from schemas.broker_names import Names
from schemas.config import BrokerConfig
from schemas.nodes import broker_nodes
from services.common.broker import BrokerUnavailable
from services.common.cluster_connection import connect_plain

log = logging.getLogger(__name__)

Offset = int | datetime | Literal["first", "next"]
"""Where a subscription starts: an offset of the stream (inclusive), the first event stored
at or after a time (to the granularity of the stream's chunks, so possibly a few earlier),
"first", the oldest event kept, or "next", the first event published after it attached."""

PREFETCH = 64
OFFSET_HEADER = "x-stream-offset"

LIVE_SUBSCRIPTIONS = Gauge(
    "shepherd_event_subscriptions",
    "Readers of the event history or of live job output open in this process: one consumer "
    "and one channel each, held for one live stream (GET /events, GET /jobs/{job_id}/events, "
    "GET /jobs/{job_id}/logs?follow=true).",
)


@dataclass(frozen=True)
class StreamedEvent:
    offset: int
    """Position in the stream: increasing, never reused; the SSE event id."""
    kind: str
    """The routing key it was published with, ``job.<state>``."""
    body: bytes
    """The CloudEvent as the notifier published it."""
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


class Subscription:
    """One reader of the stream. ``get`` returns the events in stream order, and None once the
    subscription has ended (its channel closed, or the broker cancelled its consumer)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._closed = False
        channel.close_callbacks.add(self._end)
        LIVE_SUBSCRIPTIONS.inc()

    async def start(self, queue: str, start: Offset) -> None:
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._end)
        stream = await self._channel.get_queue(queue, ensure=False)
        await stream.consume(self._deliver, arguments={OFFSET_HEADER: start})

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        # No await before queueing: deliveries are handed over in the order they came.
        self._inbox.put_nowait(message)

    def _end(self, *_: Any) -> None:
        self._inbox.put_nowait(None)

    def waiting(self) -> int:
        """Deliveries :meth:`get` would return at once (an end counts as one)."""
        return self._inbox.qsize()

    async def get(self) -> StreamedEvent | None:
        """The next event, waiting for it; cancelling the wait loses nothing."""
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # ended for good: later calls say so too
            return None
        # Streams need acks: each one is credit for the next delivery. On a closed channel
        # it fails, and the events delivered before are still handed out, in order.
        with contextlib.suppress(AMQPError, ChannelInvalidStateError):
            await message.ack()
        return StreamedEvent(
            offset=int(message.headers[OFFSET_HEADER]),  # type: ignore[arg-type]
            kind=message.routing_key or "",
            body=message.body,
            message_id=message.message_id,
            headers=message.headers or {},
        )

    async def close(self) -> None:
        """Cancel the consumer and close the channel (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        LIVE_SUBSCRIPTIONS.dec()
        if self._channel.is_closed:
            return
        try:
            await self._channel.close()  # the broker drops the channel's consumer with it
        except Exception as exc:
            log.warning("closing a live stream's channel failed: %r", exc)


class EventHistory:
    def __init__(
        self,
        config: BrokerConfig,
        names: Names,
        prefetch: int = PREFETCH,
        reader: str = "live-streams",
        stream: str | None = None,
    ) -> None:
        """``stream``: the stream to read, ``<ns>.event-stream`` by default."""
        self._url = config.url.get_secret_value()
        self._timeout = config.publish_timeout
        self._queue = stream or names.event_stream
        self.connection_name = f"{names.namespace}-{reader}"
        """What RabbitMQ's management UI calls the connection."""
        self._prefetch = prefetch
        self._connection: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def subscribe(self, start: Offset) -> Subscription:
        """A reader attached at ``start``; once this returns, every event published later
        reaches it. Raises :class:`BrokerUnavailable` when RabbitMQ cannot be reached."""
        try:
            async with asyncio.timeout(self._timeout):
                connection = await self._connect()
                channel = await connection.channel(publisher_confirms=False)
        except (OSError, AMQPError, TimeoutError) as exc:
            # Neither the URL nor aio-pika's message: they may name the password.
            raise BrokerUnavailable(
                f"live streams cannot reach RabbitMQ ({type(exc).__name__})"
            ) from None
        subscription = Subscription(channel)
        try:
            async with asyncio.timeout(self._timeout):
                await channel.set_qos(prefetch_count=self._prefetch)
                await subscription.start(self._queue, start)
        except BaseException:
            await subscription.close()
            raise
        return subscription

    async def mark(self) -> int:
        """Append a mark to the history and return its offset: every event published before
        this call lies before it. (A mark is no event: its routing key is the stream's name,
        and readers skip it.)"""
        subscription = await self.subscribe("next")
        try:
            mark = uuid.uuid4().hex
            try:
                async with asyncio.timeout(self._timeout):
                    channel = await (await self._connect()).channel(publisher_confirms=True)
                    try:
                        await channel.default_exchange.publish(
                            aio_pika.Message(b"", message_id=mark), routing_key=self._queue
                        )
                    finally:
                        await channel.close()
            except (OSError, AMQPError, TimeoutError) as exc:
                raise BrokerUnavailable(
                    f"cannot mark the event history ({type(exc).__name__})"
                ) from None
            while (event := await subscription.get()) is not None:
                if event.message_id == mark:
                    return event.offset
        finally:
            await subscription.close()
        raise BrokerUnavailable("the event history ended before its mark came back")

    async def _connect(self) -> AbstractConnection:
        async with self._lock:
            if self._closed:
                raise BrokerUnavailable("the gateway is shutting down")
            # ``connected``, not ``is_closed``: a connection the broker closed is not closed
            # for aio-pika until we close it.
            if self._connection is None or not self._connection.connected.is_set():
                lost, self._connection = self._connection, None
                if lost is not None:
                    await lost.close()
                self._connection = await connect_plain(
                    broker_nodes(self._url),
                    client_properties={"connection_name": self.connection_name},
                )
            return self._connection

    async def close(self) -> None:
        """End every subscription (their channels close with the connection) and refuse new
        ones."""
        async with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()
