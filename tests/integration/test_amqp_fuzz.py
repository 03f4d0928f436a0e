"""The AMQP side fuzzed, as ``test_api_fuzz`` fuzzes HTTP: generated bodies (random bytes,
invalid UTF-8, JSON of the wrong shape, huge values, deep nesting, odd content types and
headers) on every exchange Shepherd consumes, under the routing keys its consumers listen to.
Afterwards no consumer has stopped, a live stream is still open, and jobs submitted over HTTP
and AMQP still complete."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from schemas.broker_names import Names
from schemas.config import Config
from tests.conftest import delete_namespace
from tests.support.sse import read_events
from tests.support.stack import bare_sheep, running_stack

WAIT = 30
SEED = 20261202
"""The corpus is generated, but the same on every run: a failure reproduces."""
PER_EXCHANGE = 40

SHAPES = [  # JSON that is valid, but no message any consumer takes
    [],
    {},
    None,
    0,
    "job.done",
    {"job_id": "../../etc", "state": "done"},
    {"type": "io.shepherd.job.done", "subject": 7},
    {"Records": [{"s3": None}]},
    {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"object": {"key": "%ZZ"}}}]},
    {"job": {"job_id": "x", "model": {}}, "queued_at": "yesterday"},
    {"id": "x", "subscription": None, "url": "http://[::1", "event": {}},
]
STATUS_KEYS = ["status.done", "status.running", "status.cancelled", "status.progress"]
CONTENT_TYPES = [None, "application/json", "text/plain", "application/octet-stream", "é/ß"]


def bodies(rng: random.Random, count: int) -> Iterator[tuple[bytes, str | None, dict]]:
    """``count`` bodies with a content type and headers each, cycling through the kinds."""
    kinds = [
        lambda: rng.randbytes(rng.randint(0, 512)),
        lambda: b"\xff\xfe" + rng.randbytes(32),  # not UTF-8
        lambda: json.dumps(rng.choice(SHAPES)).encode(),
        lambda: json.dumps({"job_id": "j" * rng.randint(1, 300), "x": "y" * 1_000_000}).encode(),
        lambda: b"[" * 5000 + b"]" * 5000,
        lambda: b'{"a": ' * 3000 + b"1" + b"}" * 3000,
        lambda: b"",
        lambda: json.dumps({"state": "done", "job_id": rng.choice(["a", "", "é"])}).encode(),
    ]
    for i in range(count):
        headers = rng.choice(
            [{}, {"x-delivery-count": "many"}, {"shepherd-attempts": -3}, {"x": "\x00"}]
        )
        yield kinds[i % len(kinds)](), rng.choice(CONTENT_TYPES), headers


def targets(names: Names, config: Config) -> list[tuple[str, list[str]]]:
    """Every exchange Shepherd consumes from, with the routing keys its consumers bind."""
    return [
        (names.submit_exchange, [""]),
        (config.storage.notification_exchange, ["s3"]),
        (names.events_exchange, [*STATUS_KEYS, "job.done", "job.failed", "sheep.s1"]),
        (names.jobs_exchange, ["sheep.s1", "pool"]),
        (names.leases_exchange, ["s1"]),
        (names.webhooks_exchange, ["deliver"]),
    ]


@pytest.fixture
async def stack(config: Config, names: Names) -> AsyncIterator[httpx.AsyncClient]:
    config.sheep = {"s1": bare_sheep()}
    try:
        async with running_stack(config) as client:
            yield client
    finally:
        await delete_namespace(config.broker.url.get_secret_value(), names, list(config.sheep))


async def consumers(channel: AbstractChannel, queues: list[str]) -> dict[str, int]:
    counts = {}
    for queue in queues:
        declared = await channel.declare_queue(queue, passive=True)
        counts[queue] = declared.declaration_result.consumer_count
    return counts


async def test_garbage_on_every_exchange_stops_nothing(stack, config, names, job_id):
    queues = [
        names.submit_queue,
        names.inputs_queue,
        names.status_queue,
        names.sheep_queue("s1"),
        names.pool_queue,
        names.webhook_deliveries_queue,
    ]
    connection = await aio_pika.connect(config.broker.url.get_secret_value())
    async with connection, stack.stream("GET", "/events?types=job.done") as live:
        assert live.status_code == 200
        events = read_events(live)
        channel = await connection.channel()
        before = await consumers(channel, queues)
        rng = random.Random(SEED)
        sent = 0
        for exchange_name, keys in targets(names, config):
            exchange = await channel.get_exchange(exchange_name, ensure=False)
            for body, content_type, headers in bodies(rng, PER_EXCHANGE):
                message = aio_pika.Message(body, content_type=content_type, headers=headers)
                await exchange.publish(message, rng.choice(keys))
                sent += 1
        assert sent == PER_EXCHANGE * len(targets(names, config))

        # Both ways in still work, and their jobs' events reach the live stream.
        http_job, amqp_job = f"{job_id}-http", f"{job_id}-amqp"
        echo = {"model": {"name": "echo", "version": "1"}}
        answer = await stack.post("/start-job", json={"job_id": http_job, "payload": 1, **echo})
        assert answer.status_code == 202, answer.text
        submit = await channel.get_exchange(names.submit_exchange, ensure=False)
        request = json.dumps({"job_id": amqp_job, "payload": 2, **echo}).encode()
        await submit.publish(aio_pika.Message(request, content_type="application/json"), "")
        done: set[str] = set()
        async with asyncio.timeout(WAIT):  # the live stream lived through it all
            async for event in events:
                done.add(event.json()["subject"])
                if {http_job, amqp_job} <= done:
                    break
        for job, value in ((http_job, 1), (amqp_job, 2)):
            assert (await stack.get(f"/jobs/{job}/result")).json() == value
        assert await consumers(channel, queues) == before
