"""A job longer than RabbitMQ's consumer timeout completes normally, once.

RabbitMQ closes the channel of a consumer that holds a delivery unacked for longer than its
``consumer_timeout`` and requeues the delivery; a sheep that held its job that way would see
every long job run again. On a private node with the timeout at 3 s, a raw consumer shows the
broker enforces it, and a sheep runs a 8 s job once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from pydantic import SecretStr

from schemas.broker_names import Names
from schemas.config import Config
from schemas.status import JobState
from schemas.topology import build_topology
from services.common.broker import Broker
from services.common.storage import Storage
from services.sheep.service import Sheep
from tests.support.jobs import Listener, submit
from tests.support.private_servers import RabbitNode, private_rabbitmq
from tests.support.stack import bare_sheep

CONSUMER_TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
async def strict_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RabbitNode]:
    """A private RabbitMQ node whose consumer timeout is 3 s, checked twice a second."""
    async with private_rabbitmq(tmp_path_factory.mktemp("strict") / "rabbitmq") as node:
        for setting, value in (
            ("consumer_timeout", CONSUMER_TIMEOUT_MS),
            ("channel_tick_interval", 500),
        ):
            await node.ctl("eval", f"application:set_env(rabbit, {setting}, {value}).")
        yield node


@pytest.fixture
async def strict_broker(
    strict_node: RabbitNode, config: Config, names: Names
) -> AsyncIterator[Broker]:
    config.broker.url = SecretStr(strict_node.amqp_url)
    config.broker.lease_after = 1.0  # well under the consumer timeout, as it must be
    config.sheep = {"s1": bare_sheep()}
    broker = await Broker.connect(config.broker, names, "long-jobs")
    await broker.declare(build_topology(names, config.broker.delivery_limit, ["s1"]))
    yield broker
    await broker.close()


async def test_the_broker_cuts_off_a_consumer_that_holds_a_delivery_too_long(
    strict_node, strict_broker, names
):
    await strict_broker.publish(names.jobs_exchange, "pool", b"{}")
    connection = await aio_pika.connect(strict_node.amqp_url)
    async with connection:
        channel = await connection.channel()
        closed = asyncio.get_running_loop().create_future()
        channel.close_callbacks.add(lambda _, exc: closed.done() or closed.set_result(exc))
        queue = await channel.get_queue(names.pool_queue, ensure=False)
        held: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(held.put)  # never acked
        await asyncio.wait_for(held.get(), 5)
        reason = await asyncio.wait_for(closed, 3 * CONSUMER_TIMEOUT_MS / 1000)
    assert "timed out" in str(reason)


async def test_a_job_longer_than_the_consumer_timeout_runs_once_and_completes(
    strict_node, strict_broker, config, names, job_id
):
    storage = Storage(config.storage)
    reports = Listener()
    connection = await aio_pika.connect(strict_node.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events_exchange, "status.#")
        await queue.consume(reports.collect, no_ack=True)

        sheep = Sheep("s1", config, strict_broker, storage)
        await sheep.start()
        try:
            await submit(strict_broker, storage, job_id, "sleep", b'{"seconds": 8, "value": 1}')
            done = await reports.report(job_id, JobState.DONE)
        finally:
            await sheep.stop()
    assert done.attempt == 1
    assert reports.states(job_id) == [JobState.RUNNING, JobState.DONE]
    assert await storage.get_bytes(f"{job_id}/outputs/output.json") == b'{"value": 1}'
