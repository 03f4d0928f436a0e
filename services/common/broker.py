"""RabbitMQ plumbing shared by every service: one robust connection, confirmed publishes,
topology declaration, and consumers that never die on a bad message.

    broker = await Broker.connect(config.broker, names)
    await broker.declare(build_topology(names, delivery_limit=5))
    await broker.publish(names.events_exchange, report.routing_key, report)
    await broker.consume(names.status_queue, handle, prefetch=64)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
)
from pydantic import BaseModel

from schemas.config import BrokerConfig
from schemas.topology import Names, Topology

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
JSON = "application/json"


@dataclass
class Broker:
    connection: AbstractRobustConnection
    names: Names
    _publish_channel: AbstractRobustChannel
    _exchanges: dict[str, AbstractRobustExchange] = field(default_factory=dict)
    _consumer_channels: list[AbstractRobustChannel] = field(default_factory=list)

    @classmethod
    async def connect(cls, config: BrokerConfig, names: Names, client_name: str) -> Broker:
        connection = await aio_pika.connect_robust(
            config.url.get_secret_value(),
            client_properties={"connection_name": client_name},
            reconnect_interval=config.reconnect_interval,
        )
        channel = await connection.channel(publisher_confirms=True)
        return cls(connection, names, channel)

    async def close(self) -> None:
        await self.connection.close()

    async def declare(self, topology: Topology) -> None:
        """Idempotent: re-declaring with the same arguments is a no-op for RabbitMQ."""
        channel = self._publish_channel
        for exchange in topology.exchanges:
            self._exchanges[exchange.name] = await channel.declare_exchange(
                exchange.name, exchange.type, durable=True
            )
        for queue in topology.queues:
            await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
        for binding in topology.bindings:
            queue = await channel.get_queue(binding.queue, ensure=False)
            await queue.bind(binding.exchange, binding.routing_key)

    async def _exchange(self, name: str) -> AbstractRobustExchange:
        if name not in self._exchanges:
            self._exchanges[name] = await self._publish_channel.get_exchange(name)
        return self._exchanges[name]

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: BaseModel | bytes,
        *,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; unroutable messages raise
        unless ``mandatory`` is False (announcements nobody may be listening to)."""
        payload = body if isinstance(body, bytes) else body.model_dump_json().encode()
        message = aio_pika.Message(
            payload,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
            message_id=message_id,
        )
        target = await self._exchange(exchange)
        await target.publish(message, routing_key, mandatory=mandatory)

    async def consume(
        self, queue_name: str, handler: Handler, *, prefetch: int, consumer_tag: str | None = None
    ) -> tuple[AbstractRobustChannel, str]:
        """Deliver messages to ``handler`` on a channel of their own.

        The handler owns ack/nack. If it raises, the message is rejected to the dead-letter
        exchange with a log line, and the consumer carries on.
        """
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        # A passive declare registers the queue with the robust channel, so the consumer is
        # restored after a reconnect (``get_queue(ensure=False)`` is not, and goes silent).
        queue = await channel.declare_queue(queue_name, passive=True)

        async def guarded(message: AbstractIncomingMessage) -> None:
            try:
                await handler(message)
            except Exception:
                log.exception("handler for %s failed; dead-lettering the message", queue_name)
                if not message.processed:
                    await message.reject(requeue=False)

        tag = await queue.consume(guarded, consumer_tag=consumer_tag)
        self._consumer_channels.append(channel)
        return channel, tag
