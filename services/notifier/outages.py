"""Holding messages through an outage of the store or the broker.

The notifier's consumers call MinIO (status.json, a job's ``callback_url``, a disabled
subscription) and RabbitMQ (the events and deliveries they publish) before they ack. When one
of them is down, rejecting the messages would spend their queue's delivery limit and
requeueing them would spin; so they are held and the call retried with backoff. Once a
message's own channel has closed it will be redelivered anyway, and holding stops.

    status = await holding([message], "reading the status", partial(load, job_id))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import urllib3
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from minio.error import MinioException

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # ConnectionError, BrokerUnavailable and aiormq's connection errors among them
    TimeoutError,
    urllib3.exceptions.HTTPError,
    MinioException,
    AMQPError,
    ChannelInvalidStateError,
)
"""Errors of the store or the broker that pass once it is back; anything else is a bug."""
FIRST_DELAY = 0.5
MAX_DELAY = 10.0


class Abandoned(Exception):
    """The message's channel closed during an outage; the broker redelivers it."""


async def holding(
    messages: Sequence[AbstractIncomingMessage],
    what: str,
    operation: Callable[[], Awaitable[T]],
    *,
    first_delay: float = FIRST_DELAY,
) -> T:
    """``operation()``, retried through outages while every one of ``messages`` can still be
    acked."""
    delay = first_delay
    while True:
        try:
            return await operation()
        except OUTAGES as exc:
            if any(orphaned(m) for m in messages):
                raise Abandoned from exc
            log.warning("%s failed, retrying in %.1fs: %r", what, delay, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


def orphaned(message: AbstractIncomingMessage) -> bool:
    """Whether the channel that delivered ``message`` has closed."""
    try:
        message.channel  # noqa: B018 - raises once the channel has closed
    except ChannelInvalidStateError:
        return True
    return False
