"""Fixtures giving every integration test real servers and names of its own."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import aio_pika
import httpx
import pytest
from minio import Minio

from schemas.broker_names import Names
from schemas.config import Config
from schemas.topology import Topology
from services.common.broker import Broker
from services.setup import delete_namespace, setup_storage
from tests.support.servers import Servers, build_config, find_servers
from tests.support.stack import bare_sheep, running_stack

pytest_plugins = ["tests.support.docker"]  # the Docker engine, registry and images


@pytest.fixture(autouse=True)
async def dump_tasks_before_timeout(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """pytest-timeout shows threads only; print every asyncio task a few seconds before it
    fires, so that a hung test shows what it waits on."""
    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0] if marker else request.config.getini("timeout") or 0)
    if timeout <= 10:
        yield
        return
    handle = asyncio.get_running_loop().call_later(timeout - 5, _dump_tasks)
    yield
    handle.cancel()


def _dump_tasks() -> None:
    print("+++ asyncio tasks of the hung test +++", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        yield find_servers(stack)


@pytest.fixture(scope="session")
def minio_client(servers: Servers) -> Minio:
    return Minio(
        servers.s3_endpoint, servers.s3_access_key, servers.s3_secret_key, secure=servers.s3_secure
    )


@pytest.fixture(scope="session")
def test_bucket(servers: Servers, minio_client: Minio) -> Iterator[str]:
    """One bucket per test session, wired to the AMQP notification target like production."""
    bucket = f"shepherd-test-{uuid.uuid4().hex[:12]}"
    setup_storage(servers.storage_config(bucket), servers.notification_target_arn)
    yield bucket
    # Rounds, because MinIO lists nothing below a key that is an object too ("a" hides "a/b")
    # until that object is gone.
    while keys := [o.object_name for o in minio_client.list_objects(bucket, recursive=True)]:
        for key in keys:
            minio_client.remove_object(bucket, key)
    minio_client.remove_bucket(bucket)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def names(namespace: str) -> Names:
    return Names(namespace)


@pytest.fixture
def job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def config(servers: Servers, test_bucket: str, namespace: str, tmp_path: Path) -> Config:
    return build_config(servers, test_bucket, namespace, tmp_path / "data")


@pytest.fixture
async def broker(config: Config, names: Names) -> AsyncIterator[Broker]:
    """A connected broker with the test namespace declared; its queues are deleted after."""
    broker = await Broker.connect(config.broker, names, "shepherd-tests")
    await broker.declare(Topology.for_config(config))
    yield broker
    await broker.close()
    await delete_namespace(
        config.broker.url.get_secret_value(),
        names,
        list(config.sheep),
        config.notifier.webhook_retry_schedule,  # as the test left it
        classes=list(config.sheep_classes),
    )


@pytest.fixture
async def subscriber(
    config: Config, names: Names
) -> AsyncIterator[asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]]:
    """Every ``job.#`` event of the namespace, from a queue of the test's own bound before
    anything is submitted, as the README's subscriber binds one."""
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, "job.#")
        messages: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(messages.put, no_ack=True)
        yield messages


@asynccontextmanager
async def serving(config: Config, names: Names) -> AsyncIterator[httpx.AsyncClient]:
    """Gateway, notifier and the configured sheep on the test's namespace, and an HTTP client
    of the gateway; the namespace is deleted after."""
    try:
        async with running_stack(config) as client:
            yield client
    finally:
        await delete_namespace(
            config.broker.url.get_secret_value(),
            names,
            list(config.sheep),
            config.notifier.webhook_retry_schedule,
            classes=list(config.sheep_classes),
        )


@pytest.fixture
async def stack(config: Config, names: Names) -> AsyncIterator[httpx.AsyncClient]:
    """:func:`serving` with one bare sheep ``s1`` unless the test configured others."""
    config.sheep = config.sheep or {"s1": bare_sheep()}
    async with serving(config, names) as client:
        yield client
