"""Buckets and queues the benchmark makes and removes on the shared MinIO and RabbitMQ.

Light on purpose (minio, pika and httpx, no Shepherd code): the peers' client side uses it,
and their worker processes import the same modules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

import httpx
import pika
from minio import Minio
from minio.deleteobjects import DeleteObject


def empty_bucket(client: Minio, bucket: str, prefix: str = "") -> int:
    """Remove every object (in rounds: MinIO lists nothing below a key that is an object
    too until that object is gone). Returns how many were removed."""
    removed = 0
    if not client.bucket_exists(bucket):
        return 0
    while keys := [
        o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)
    ]:
        for error in client.remove_objects(bucket, (DeleteObject(k) for k in keys)):
            raise RuntimeError(f"removing {error.name} from {bucket} failed: {error.message}")
        removed += len(keys)
    return removed


def fresh_plain_bucket(client: Minio, bucket: str) -> None:
    """An empty bucket without notifications: what a peer writes costs no events."""
    if client.bucket_exists(bucket):
        client.delete_bucket_notification(bucket)
        empty_bucket(client, bucket)
    else:
        client.make_bucket(bucket)


def remove_bucket(client: Minio, bucket: str) -> int:
    """Notifications off, objects removed, bucket removed; how many objects there were."""
    if not client.bucket_exists(bucket):
        return 0
    client.delete_bucket_notification(bucket)
    removed = empty_bucket(client, bucket)
    client.remove_bucket(bucket)
    return removed


def delete_broker_objects(
    amqp_url: str, queues: Iterable[str], exchanges: Iterable[str] = ()
) -> None:
    """Delete ``queues`` and ``exchanges`` (absent ones are fine)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def leftover_queues(amqp_url: str, prefixes: Iterable[str], port: int = 15672) -> list[str]:
    """Queues whose names start with one of ``prefixes``, from the management API (which
    lists queues from the broker's metadata at once; only its message statistics lag)."""
    parts = urlsplit(amqp_url)
    response = httpx.get(
        f"{management_port_url(amqp_url, port)}/api/queues",
        params={"columns": "name"},
        auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
        timeout=10,
    )
    response.raise_for_status()
    wanted = tuple(prefixes)
    return sorted(q["name"] for q in response.json() if q["name"].startswith(wanted))


def wait_queues_gone(amqp_url: str, prefixes: list[str], timeout: float = 30.0) -> float:
    """Until no queue named with one of ``prefixes`` is left: the next system starts on a
    broker without the previous one's queues. Returns the seconds it took."""
    start = time.monotonic()
    while left := leftover_queues(amqp_url, prefixes):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"queues still there after {timeout:g} s: {', '.join(left)}")
        time.sleep(0.5)  # between systems only
    return time.monotonic() - start


def management_port_url(amqp_url: str, port: int) -> str:
    """``http://<the broker's host>:<port>`` (the Prometheus plugin's port, say)."""
    return f"http://{urlsplit(amqp_url).hostname or '127.0.0.1'}:{port}"
