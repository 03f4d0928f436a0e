"""RabbitMQ plumbing shared by every service: one robust connection, confirmed publishes,
topology declaration, and the channels consumers read from (:mod:`services.common.consumer`).

    broker = await Broker.connect(config.broker, names)
    await broker.declare(Topology.for_config(config))
    await broker.publish(names.events_exchange, report.routing_key, report)
    channel, queue = await broker.open_queue(names.status_queue, prefetch=64)

While RabbitMQ is unreachable the connection reconnects every ``reconnect_interval`` seconds
and then restores every channel, queue, binding and consumer declared through it;
:attr:`Broker.outage` says why it is down, and publishing fails at once with
:class:`BrokerUnavailable` instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
    HeadersType,
)
from pydantic import BaseModel

from schemas.broker_names import Names
from schemas.config import BrokerConfig
from schemas.nodes import broker_nodes
from schemas.topology import Binding, Topology
from services.common.cluster_connection import ClusterConnection
from services.common.metrics import BROKER_CONNECTED

log = logging.getLogger(__name__)

JSON = "application/json"


class BrokerUnavailable(ConnectionError):
    """RabbitMQ is unreachable or did not confirm a publish in time; worth retrying later."""


@dataclass
class Broker:
    connection: AbstractRobustConnection
    names: Names
    _publish_channel: AbstractRobustChannel
    publish_timeout: float
    """Seconds a publish may wait for the broker's confirm before it fails."""
    _exchanges: dict[str, AbstractRobustExchange] = field(default_factory=dict)
    _lost: str | None = None
    _up: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def connect(cls, config: BrokerConfig, names: Names, client_name: str) -> Broker:
        connection = await ClusterConnection.connect_any(
            broker_nodes(config.url.get_secret_value()),
            client_properties={"connection_name": client_name},
            reconnect_interval=config.reconnect_interval,
        )
        # on_return_raises: without it a mandatory publish nobody can receive "succeeds".
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        broker = cls(connection, names, channel, config.publish_timeout)
        connection.close_callbacks.add(broker._on_lost)
        connection.reconnect_callbacks.add(broker._on_regained)
        broker._up.set()
        BROKER_CONNECTED.set(1)
        return broker

    @property
    def connected(self) -> bool:
        """Connected, with every channel restored after the last reconnection."""
        return self._lost is None and self.connection.connected.is_set()

    @property
    def outage(self) -> str | None:
        """Why RabbitMQ is unreachable and since when (never the password); None while
        connected."""
        if self.connected:
            return None
        return self._lost or f"not connected to RabbitMQ at {self._where}"

    @property
    def _where(self) -> str:
        return str(self.connection.url.with_password(None).with_query(None))

    def _on_lost(self, _: object, exc: BaseException | None) -> None:
        if self._lost is not None or self.connection.close_called:
            return  # a failed reconnection (the first reason says more), or our own close
        reason = f"{type(exc).__name__}: {exc}" if exc else "closed"
        password = self.connection.url.password
        if password:
            reason = reason.replace(password, "******")
        since = datetime.now(UTC).isoformat(timespec="seconds")
        self._lost = (
            f"connection to RabbitMQ at {self._where} lost at {since} ({reason}); "
            f"reconnecting every {self.connection.reconnect_interval:g} s"
        )
        self._up.clear()
        BROKER_CONNECTED.set(0)
        log.warning("%s", self._lost)

    async def wait_connected(self) -> None:
        """Until :attr:`connected` (at once while it is)."""
        await self._up.wait()

    def _on_regained(self, _: object) -> None:
        """Called once every channel, queue and consumer is restored."""
        log.info("reconnected to RabbitMQ at %s", self._where)
        self._lost = None
        self._up.set()
        BROKER_CONNECTED.set(1)

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
            await self.bind(binding)

    async def bind(self, binding: Binding, *, bound: bool = True) -> None:
        """Make ``binding`` exist, or not (``bound=False``); both are idempotent."""
        queue = await self._publish_channel.get_queue(binding.queue, ensure=False)
        if bound:
            await queue.bind(binding.exchange, binding.routing_key, arguments=binding.arguments)
        else:
            await queue.unbind(binding.exchange, binding.routing_key, arguments=binding.arguments)

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":  # the default exchange, which routes to the queue named by the key
            return self._publish_channel.default_exchange
        if name not in self._exchanges:
            self._exchanges[name] = await self._publish_channel.get_exchange(name)
        return self._exchanges[name]

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: BaseModel | bytes,
        *,
        content_type: str | None = JSON,
        headers: HeadersType | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        expiration: float | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; unroutable messages raise
        unless ``mandatory`` is False (announcements nobody may be listening to).
        ``expiration`` (seconds) makes the broker drop or dead-letter the message after it.
        The exchange ``""`` is the default one: a reply to a ``reply_to`` queue.

        Raises :class:`BrokerUnavailable` at once while disconnected, and when the confirm
        takes longer than ``publish_timeout`` (the message may then still arrive)."""
        if not self.connected:
            raise BrokerUnavailable(self.outage)
        payload = body if isinstance(body, bytes) else body.model_dump_json().encode()
        message = aio_pika.Message(
            payload,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
            message_id=message_id,
            correlation_id=correlation_id,
            expiration=expiration,
        )
        try:
            async with asyncio.timeout(self.publish_timeout):
                target = await self._exchange(exchange)
                await target.publish(message, routing_key, mandatory=mandatory)
        except TimeoutError:
            raise BrokerUnavailable(
                f"RabbitMQ did not confirm a message to {exchange} within "
                f"{self.publish_timeout:g} s"
            ) from None

    async def open_queue(
        self, name: str, prefetch: int
    ) -> tuple[AbstractRobustChannel, AbstractRobustQueue]:
        """The topology's queue ``name`` on a channel of its own, to consume (see
        :mod:`services.common.consumer`)."""
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        # A passive declare registers the queue with the robust channel, so the consumer is
        # restored after a reconnect (``get_queue(ensure=False)`` is not, and goes silent).
        return channel, await channel.declare_queue(name, passive=True)

    async def open_subscription(
        self, routing_keys: tuple[str, ...], prefetch: int
    ) -> tuple[AbstractRobustChannel, AbstractRobustQueue]:
        """A private queue of the events matching ``routing_keys``, on a channel of its own:
        it lives as long as this connection (a reconnected channel declares it anew, and
        what was published in between is missed). It is named in the namespace, where the
        services' broker user may declare queues."""
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        name = f"{self.names.namespace}.listener.{uuid.uuid4().hex}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(self.names.events_exchange, key)
        return channel, queue
