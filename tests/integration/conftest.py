"""Fixtures of the integration tests that drive sheep directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from schemas.broker_names import Names
from schemas.config import Config
from services.common.broker import Broker
from services.common.storage import Storage
from services.sheep.service import Sheep
from tests.support.jobs import Listener
from tests.support.stack import bare_sheep


@pytest.fixture
def sheep_ids() -> list[str]:
    return ["s1"]


@pytest.fixture
def sheep_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
def configured(config: Config, sheep_ids: list[str], sheep_settings: dict[str, Any]) -> Config:
    """The test config with bare sheep; set before ``broker`` so their queues are cleaned.
    Every job is reported running at once, however quick, so that tests can wait for that
    report (the quick job's single report is tested on its own, in test_sheep.py)."""
    config.sheep = {sheep_id: bare_sheep(**sheep_settings) for sheep_id in sheep_ids}
    config.broker.report_running_after = 0.0
    return config


@pytest.fixture
def storage(configured: Config) -> Storage:
    return Storage(configured.storage)


@pytest.fixture
async def channel(servers: Any) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def reports(channel: aio_pika.abc.AbstractChannel, broker: Broker, names: Names) -> Listener:
    listener = Listener()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(names.events_exchange, "status.#")
    await queue.consume(listener.collect, no_ack=True)
    return listener


@pytest.fixture
async def sheep(
    configured: Config, broker: Broker, storage: Storage, sheep_ids: list[str], reports: Listener
) -> AsyncIterator[dict[str, Sheep]]:
    flock = {sheep_id: Sheep(sheep_id, configured, broker, storage) for sheep_id in sheep_ids}
    for one in flock.values():
        await one.start()
    yield flock
    for one in flock.values():
        await one.stop()
