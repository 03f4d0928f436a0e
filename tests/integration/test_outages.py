"""RabbitMQ or MinIO down: Shepherd keeps running, says what is down, refuses submissions with
503 and Retry-After at once, and finishes every job once the server is back.

The servers here are private (``tests.support.private_servers``): the shared ones of
``make services`` must never go down under other tests.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from minio import Minio

from schemas.broker_names import Names
from schemas.config import Config
from schemas.layout import pending_key
from services.runtime import Roles, run
from shepherd_client import AsyncClient, Unavailable
from tests.support.jobs import unbound
from tests.support.polling import eventually
from tests.support.private_servers import PrivateServers, private_servers
from tests.support.servers import build_config
from tests.support.stack import bare_sheep, free_port, healthy, running_stack

pytestmark = pytest.mark.outage
log = logging.getLogger(__name__)

REFUSAL_LIMIT = 3.0
"""Seconds within which a submission must be refused during an outage."""
QUORUM_SETTLE = 2.0
"""Seconds a new quorum queue needs before RabbitMQ 3.10 survives a kill -9 with it: killed
sooner, it may come back without a leader, and a consumer of it waits forever."""


@pytest.fixture(scope="module")
async def private(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PrivateServers]:
    async with private_servers(tmp_path_factory.mktemp("servers")) as servers:
        yield servers


@pytest.fixture
def private_config(private: PrivateServers, namespace: str, tmp_path: Path) -> Config:
    config = build_config(private.servers, private.bucket, namespace, tmp_path / "data")
    config.sheep = {"s1": bare_sheep()}
    return config


@pytest.fixture
async def stack(private_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with running_stack(private_config) as client:
        yield client


@pytest.fixture
def minio(private: PrivateServers) -> Minio:
    m = private.minio
    return Minio(m.endpoint, m.access_key, m.secret_key, secure=False)


def sleep_job(job_id: str, seconds: float, value: Any) -> dict:
    model = {"name": "sleep", "version": "1"}
    return {"job_id": job_id, "model": model, "payload": {"seconds": seconds, "value": value}}


def echo_job(job_id: str, **fields: Any) -> dict:
    return {"job_id": job_id, "model": {"name": "echo", "version": "1"}, **fields}


async def submit(client: httpx.AsyncClient, job: dict) -> None:
    response = await client.post("/start-job", json=job)
    assert response.status_code == 202, response.text


async def refused(client: httpx.AsyncClient, job: dict) -> dict:
    """Submit during an outage: 503 problem+json with Retry-After, fast; the problem."""
    started = time.monotonic()
    response = await client.post("/start-job", json=job)
    elapsed = time.monotonic() - started
    log.info("submission refused after %.3f s", elapsed)
    assert response.status_code == 503, response.text
    assert elapsed < REFUSAL_LIMIT
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    return response.json()


async def health_until(
    client: httpx.AsyncClient, holds: Callable[[dict], bool], seconds: float = 20
) -> tuple[httpx.Response, float]:
    """The first /health answer that ``holds``, and how long it took to come (an HTTP client
    can only ask again)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while True:
            response = await client.get("/health")
            if holds(response.json()):
                return response, time.monotonic() - started
            await asyncio.sleep(0.05)


async def until_running(client: httpx.AsyncClient, job_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if (await client.get(f"/jobs/{job_id}/status")).json()["state"] == "running":
                return
            await asyncio.sleep(0.05)


async def result(client: httpx.AsyncClient, job_id: str) -> bytes:
    """The job's output once it is done (asserting it is)."""
    response = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "done", response.text
    return (await client.get(f"/jobs/{job_id}/result")).content


async def upload(minio: Minio, bucket: str, key: str, data: bytes) -> None:
    await asyncio.to_thread(minio.put_object, bucket, key, io.BytesIO(data), len(data))


async def exists(minio: Minio, bucket: str, key: str) -> bool:
    listing = await asyncio.to_thread(lambda: list(minio.list_objects(bucket, prefix=key)))
    return any(o.object_name == key for o in listing)


async def test_rabbitmq_down_is_reported_submissions_wait_and_every_job_finishes(
    stack, private, job_id
):
    running, waiting, later = f"{job_id}-running", f"{job_id}-waiting", f"{job_id}-later"
    await submit(stack, sleep_job(running, 3.0, "slept"))
    await submit(stack, sleep_job(waiting, 0.1, "queued"))  # behind it, on the only sheep
    await until_running(stack, running)
    await asyncio.sleep(QUORUM_SETTLE)

    async with private.rabbitmq.outage():  # kill -9
        down, noticed = await health_until(stack, lambda h: not h["broker"]["ok"])
        log.info("RabbitMQ outage reported after %.3f s", noticed)
        assert down.status_code == 503
        health = down.json()
        assert health["healthy"] is False
        assert health["storage"] == {"ok": True}
        assert f"127.0.0.1:{private.rabbitmq.port}" in health["broker"]["error"]
        assert "guest:guest" not in down.text  # the URL, without its password

        problem = await refused(stack, echo_job(later, payload={"n": 1}))
        assert "RabbitMQ" in problem["detail"]
        assert "guest:guest" not in problem["detail"]
        assert (await stack.get("/status")).status_code == 200  # answers, without the broker

    _, reconnected = await health_until(stack, lambda h: h["healthy"])
    log.info("healthy again %.3f s after RabbitMQ was back", reconnected)
    await submit(stack, echo_job(later, payload={"n": 1}))  # the client's retry
    assert json.loads(await result(stack, later)) == {"n": 1}
    assert json.loads(await result(stack, running)) == {"value": "slept"}
    assert json.loads(await result(stack, waiting)) == {"value": "queued"}


async def test_minio_down_is_reported_submissions_wait_and_every_job_finishes(
    stack, private, job_id, caplog
):
    running, later = f"{job_id}-running", f"{job_id}-later"
    await submit(stack, sleep_job(running, 1.0, "slept"))
    await until_running(stack, running)

    async with private.minio.outage():
        down, noticed = await health_until(stack, lambda h: not h["storage"]["ok"])
        log.info("MinIO outage reported after %.3f s", noticed)
        assert down.status_code == 503
        health = down.json()
        assert health["broker"] == {"ok": True}
        assert private.minio.endpoint in health["storage"]["error"]

        problem = await refused(stack, echo_job(later, payload={"n": 2}))
        assert private.minio.endpoint in problem["detail"]

        # The running job ends meanwhile, and cannot store its outputs: it is given back.
        async def given_back() -> bool:
            return f"job {running} could not be completed" in caplog.text

        await eventually(given_back, within=20)

    await health_until(stack, lambda h: h["healthy"])
    await submit(stack, echo_job(later, payload={"n": 2}))
    assert json.loads(await result(stack, later)) == {"n": 2}
    assert json.loads(await result(stack, running)) == {"value": "slept"}


async def test_inputs_uploaded_while_rabbitmq_is_down_still_queue_their_job(
    stack, private, minio, job_id
):
    declared = await stack.post("/start-job", json=echo_job(job_id, inputs=["input.json"]))
    assert declared.status_code == 202
    assert await exists(minio, private.bucket, pending_key(job_id))
    await asyncio.sleep(QUORUM_SETTLE)

    async with private.rabbitmq.outage():  # MinIO drops the upload's notification
        await upload(minio, private.bucket, f"{job_id}/inputs/input.json", b'{"late": 1}')

    assert json.loads(await result(stack, job_id)) == {"late": 1}
    assert not await exists(minio, private.bucket, pending_key(job_id))


async def test_a_starting_gateway_queues_jobs_whose_notifications_were_lost(
    private_config, private, minio, job_id
):
    async with running_stack(private_config) as client:
        await submit(client, echo_job(job_id, inputs=["input.json"]))
    names = Names(private_config.broker.namespace)
    async with unbound(private.rabbitmq.amqp_url, names.inputs_queue, names.storage_exchange):
        await upload(minio, private.bucket, f"{job_id}/inputs/input.json", b'{"early": 1}')

    async with running_stack(private_config) as client:
        assert json.loads(await result(client, job_id)) == {"early": 1}


async def test_a_submission_over_amqp_during_a_minio_outage_waits_and_runs(
    stack, private, private_config, job_id, caplog
):
    """Held until MinIO answers, then requeued once: neither refused nor retried in a loop
    that would use up its deliveries."""
    names = Names(private_config.broker.namespace)
    body = json.dumps(echo_job(job_id, payload={"n": 3})).encode()
    async with await aio_pika.connect(private.rabbitmq.amqp_url) as connection:
        channel = await connection.channel()
        async with private.minio.outage():
            await health_until(stack, lambda h: not h["storage"]["ok"])
            submit_exchange = await channel.get_exchange(names.submit_exchange)
            await submit_exchange.publish(aio_pika.Message(body), "")

            async def holding_it() -> bool:  # looking at the store again, not redelivering
                looks = [m for m in caplog.messages if "storage unreachable" in m]
                return len(looks) >= 2

            await eventually(holding_it, within=20)

        async def declared() -> bool:
            return (await stack.get(f"/jobs/{job_id}/status")).status_code == 200

        await eventually(declared, within=30)
        assert json.loads(await result(stack, job_id)) == {"n": 3}
        dead = await channel.get_queue(names.dead_letter_queue, ensure=False)
        assert await dead.get(fail=False) is None
    held = [r for r in caplog.records if r.getMessage().startswith("cannot handle submission")]
    assert len(held) == 1


async def test_services_started_while_rabbitmq_is_down_wait_for_it_and_then_serve(
    private_config, private, job_id, caplog
):
    """A gateway, notifier or sheep (re)started during an outage, as a service manager or a
    crash loop would, waits for RabbitMQ instead of exiting, and serves once it is back."""
    private_config.gateway.port = free_port()
    stop = asyncio.Event()
    roles = Roles(gateway=True, notifier=True, sheep=list(private_config.sheep))
    async with private.rabbitmq.outage():
        running = asyncio.create_task(run(private_config, roles, stop))

        async def waiting() -> bool:
            return any("trying again in" in m for m in caplog.messages)

        await eventually(waiting, within=20)
        assert not running.done(), "the services gave up on RabbitMQ"
    try:
        base = f"http://127.0.0.1:{private_config.gateway.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await eventually(partial(healthy, client), within=60)
            await submit(client, echo_job(job_id, payload={"after": "outage"}))
            assert json.loads(await result(client, job_id)) == {"after": "outage"}
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_services_asked_to_stop_while_waiting_for_rabbitmq_stop(private_config, private):
    private_config.gateway.port = free_port()
    stop = asyncio.Event()
    async with private.rabbitmq.outage():
        running = asyncio.create_task(run(private_config, Roles(gateway=True), stop))
        await asyncio.sleep(1)
        stop.set()
        await asyncio.wait_for(running, 5)


async def test_the_sdk_waits_out_a_503_and_says_unavailable_after_retry_for(stack, private, job_id):
    """A submitter on the SDK: its retry outlasts a broker outage (the submission carries its
    idempotency key, so the retry makes one job); a client that would not wait that long gets
    Unavailable, carrying the gateway's problem."""
    url = str(stack.base_url)
    async with AsyncClient(url, retry_for=1) as impatient, AsyncClient(url) as patient:
        async with private.rabbitmq.outage():
            await health_until(stack, lambda h: not h["broker"]["ok"])
            with pytest.raises(Unavailable) as gave_up:
                await impatient.submit("echo:1", {"n": 1})
            assert gave_up.value.status == 503
            assert "RabbitMQ" in gave_up.value.problem["detail"]
            waiting = asyncio.create_task(patient.submit("echo:1", {"n": 2}, job_id=job_id))
            await asyncio.sleep(2)
            assert not waiting.done()
        job = await waiting
        assert job.id == job_id
        assert await job.result(timeout=60) == {"n": 2}
