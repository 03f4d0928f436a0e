"""Outages of RabbitMQ or MinIO: what counts as one, how long to wait between tries, and how
messages are held and settled meanwhile. Every service uses these, and nothing else.

An outage is an error that passes once the server is back: the server cannot be reached, or
answers that it cannot serve now (a 5xx). Anything else is a bug or bad input, and is
reported as such. Retries wait longer and longer (:func:`backoff`), with jitter, so that the
services waiting for a server that comes back do not all arrive at once.

    for delay in backoff():
        try:
            return await storage.ping()
        except OUTAGES as exc:
            log.warning("storage unreachable (%s); looking again in %.1f s", exc, delay)
        await asyncio.sleep(delay)

A consumer whose handler meets an outage holds its messages (:func:`holding`) rather than
rejecting them, which would spend their delivery limit, or requeueing them at once, which
would spin; once a message's channel has closed it is redelivered anyway, and holding stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Literal, Protocol, TypeVar

import urllib3
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from minio.error import MinioException

from services.common.broker import BrokerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

BROKER_OUTAGES: tuple[type[Exception], ...] = (
    BrokerUnavailable,
    AMQPError,
    ChannelInvalidStateError,
)
"""RabbitMQ is unreachable, did not confirm in time, or closed the channel under us."""
STORAGE_OUTAGES: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,  # no connection, a timeout, a broken response
    MinioException,  # a 5xx, a response that is no S3 answer, and S3 errors with a code
)
"""MinIO is unreachable or refuses to serve. An S3 error with a code (AccessDenied,
NoSuchBucket: a bucket or a policy being restored) counts too: held messages wait for it to
pass rather than being dead-lettered and lost. A missing object is no error here: the
storage layer answers it as ``ObjectMissing``."""
OUTAGES: tuple[type[Exception], ...] = (
    *BROKER_OUTAGES,
    *STORAGE_OUTAGES,
    OSError,  # ConnectionError and socket errors, name resolution among them
    TimeoutError,
)
"""Errors of an unreachable broker or store: worth retrying, never a bug to report."""

#: Seconds before the first retry after an outage.
FIRST_RETRY_DELAY = 0.5
#: Seconds at most between two retries: a server that is back is noticed within this.
MAX_RETRY_DELAY = 10.0
#: The largest share of a delay taken off at random.
JITTER = 0.2


def backoff(first: float = FIRST_RETRY_DELAY, cap: float = MAX_RETRY_DELAY) -> Iterator[float]:
    """Delays between retries, for ever: doubling from ``first`` to ``cap``, each less up to
    :data:`JITTER` of it at random."""
    delay = first
    while True:
        yield delay * random.uniform(1 - JITTER, 1)
        delay = min(delay * 2, cap)


def describe(exc: Exception) -> str:
    """What went wrong, without urllib3's wrapping around the cause, for a 503 or a health
    check."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, BrokerUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Pingable(Protocol):
    async def ping(self) -> None: ...


async def until_store_answers(
    storage: Pingable, who: str, first: float = FIRST_RETRY_DELAY
) -> None:
    """Return once MinIO answers ``storage.ping()``, saying who waits while it does not. Any
    failure counts: a missing bucket makes the store as unusable as a dead server."""
    for delay in backoff(first):
        try:
            await storage.ping()
            return
        except Exception as exc:
            log.warning("%s: storage unreachable (%s); looking again in %.1f s", who, exc, delay)
        await asyncio.sleep(delay)


class Abandoned(Exception):
    """The message's channel closed during an outage; the broker redelivers it."""


async def holding(
    messages: Sequence[AbstractIncomingMessage],
    what: str,
    operation: Callable[[], Awaitable[T]],
    *,
    first_delay: float = FIRST_RETRY_DELAY,
) -> T:
    """``operation()``, retried through outages while every one of ``messages`` can still be
    acked; raises :class:`Abandoned` once one cannot.

        status = await holding([message], "reading the status", partial(load, job_id))
    """
    for delay in backoff(first_delay):
        try:
            return await operation()
        except OUTAGES as exc:
            if any(orphaned(m) for m in messages):
                raise Abandoned from exc
            log.warning("%s failed, retrying in %.1fs: %r", what, delay, exc)
        await asyncio.sleep(delay)
    raise AssertionError("backoff() never ends")


def orphaned(message: AbstractIncomingMessage) -> bool:
    """Whether the channel that delivered ``message`` has closed."""
    try:
        message.channel  # noqa: B018 - raises once the channel has closed
    except ChannelInvalidStateError:
        return True
    return False


Settlement = Literal["ack", "requeue", "dead-letter"]


async def settle(message: AbstractIncomingMessage, settlement: Settlement) -> None:
    """Ack, requeue or dead-letter (reject) a delivery. Failing to is only logged: the channel
    died meanwhile, and RabbitMQ has put the message back in its queue already."""
    try:
        if settlement == "ack":
            await message.ack()
        else:
            await message.nack(requeue=settlement == "requeue")
    except Exception as exc:
        log.warning("cannot %s delivery %s: %s", settlement, message.delivery_tag, exc)
