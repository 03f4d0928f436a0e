"""Which errors mean that RabbitMQ or MinIO is unreachable, rather than a bug.

An HTTP request failing with one of these answers 503 with ``Retry-After``; an AMQP
submission failing with one is requeued once both answer again.
"""

from __future__ import annotations

import aio_pika
import aiormq
import urllib3
from minio.error import ServerError

from services.common.broker import BrokerUnavailable

BROKER_OUTAGES: tuple[type[Exception], ...] = (
    BrokerUnavailable,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
)
STORAGE_OUTAGES: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, ServerError)
OUTAGES = (*BROKER_OUTAGES, *STORAGE_OUTAGES, ConnectionError, TimeoutError)
"""Errors of an unreachable broker or store: worth retrying, not a bug to report."""
