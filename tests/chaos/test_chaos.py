"""Chaos: submit N jobs and, while they run, kill -9 a sheep, a runner, the notifier and the
gateway (restarting each), then restart RabbitMQ and MinIO. Every job must end, every done
job must have its output, and no job may show two outcomes.

``make chaos`` runs it with N = 500 (``SHEPHERD_CHAOS_JOBS``); ``make test`` with a short N.
It prints ``submitted N, terminal N, lost 0, duplicated 0``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import pytest
from pydantic import SecretStr

from schemas.config import BrokerConfig, Config
from schemas.events import JobEvent
from schemas.status import TERMINAL_STATES
from schemas.topology import Names, build_topology
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage
from tests.support.private_servers import PrivateServers, private_servers
from tests.support.processes import ServiceProcess, kill_runner, wait_healthy, write_config
from tests.support.stack import bare_sheep, free_port

JOBS = int(os.environ.get("SHEPHERD_CHAOS_JOBS", "60"))
SHEEP = ["s1", "s2", "s3"]
DURATIONS = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0]
TARGETS: list[str | None] = [None, None, *SHEEP]
SETTLE = 120 + JOBS * 0.6
"""Seconds every job gets to end once the chaos is over."""

pytestmark = pytest.mark.timeout(600 + JOBS * 2)


@dataclass
class Fleet:
    """The services, each a process of its own, and the servers they use."""

    servers: PrivateServers
    config: Config
    base_url: str
    gateway: ServiceProcess
    notifier: ServiceProcess
    sheep: dict[str, ServiceProcess]

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.gateway, self.notifier, *self.sheep.values()]


@dataclass
class Observer:
    """Every terminal job event, from a durable queue bound before the first job."""

    outcomes: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))

    async def receive(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = JobEvent.model_validate_json(message.body)
        if event.data.state in TERMINAL_STATES:
            self.outcomes[event.data.job_id].add((event.data.state.value, event.data.attempt))
        await message.ack()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with private_servers(tmp_path / "servers") as servers:
        config = Config(
            broker=BrokerConfig(url=SecretStr(servers.rabbitmq.amqp_url), namespace="chaos"),
            storage=servers.minio.storage_config(servers.bucket),
            data_root=tmp_path / "data",
        )
        config.broker.lease_time = 15
        config.gateway.port = free_port()
        config.sheep = {sheep_id: bare_sheep(stop_grace=5.0) for sheep_id in SHEEP}
        config_file = write_config(config, tmp_path / "shepherd.yml")
        logs = tmp_path / "logs"
        fleet = Fleet(
            servers,
            config,
            f"http://127.0.0.1:{config.gateway.port}",
            ServiceProcess(["gateway"], config_file, logs),
            ServiceProcess(["notifier"], config_file, logs),
            {s: ServiceProcess(["sheep", s], config_file, logs) for s in SHEEP},
        )
        try:
            yield fleet
        finally:
            for process in fleet.processes:
                await process.stop()
            for sheep_id in SHEEP:
                kill_runner(config, sheep_id)


async def observe(fleet: Fleet, observer: Observer) -> aio_pika.abc.AbstractRobustConnection:
    names = Names("chaos")
    broker = await Broker.connect(fleet.config.broker, names, "chaos-setup")
    await broker.declare(build_topology(names, fleet.config.broker.delivery_limit, SHEEP))
    await broker.close()
    connection = await aio_pika.connect_robust(fleet.servers.rabbitmq.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(
        "chaos-observer", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(names.events_exchange, "job.#")
    await queue.consume(observer.receive)
    return connection


async def submit(client: httpx.AsyncClient, job_id: str, rng: random.Random) -> None:
    """Submit until the gateway takes it, retrying through outages as a client should."""
    body = {
        "job_id": job_id,
        "model": {"name": "sleep", "version": "1"},
        "payload": {"seconds": rng.choice(DURATIONS), "value": job_id},
    }
    if (target := rng.choice(TARGETS)) is not None:
        body["sheep_id"] = target
    while True:
        try:
            answer = await client.post("/start-job", json=body)
        except httpx.TransportError:
            await asyncio.sleep(0.5)
            continue
        if answer.status_code in (200, 202):
            return
        assert answer.status_code == 503, answer.text
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))


async def submit_all(base_url: str, job_ids: list[str], pace: float) -> None:
    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for job_id in job_ids:
            await submit(client, job_id, rng)
            await asyncio.sleep(pace)


async def wreak_havoc(fleet: Fleet, pause: float) -> list[str]:
    """Kill each part in turn while jobs run; what was done, for the record."""
    done: list[str] = []

    async def kill_and_restart(process: ServiceProcess, what: str) -> None:
        process.kill()
        await process.wait()
        await asyncio.sleep(0.5)
        await process.start()
        done.append(what)
        await asyncio.sleep(pause)

    await asyncio.sleep(pause)
    await kill_and_restart(fleet.sheep["s1"], "kill -9 sheep s1")
    kill_runner(fleet.config, "s2")
    done.append("kill -9 runner of s2")
    await asyncio.sleep(pause)
    await kill_and_restart(fleet.notifier, "kill -9 notifier")
    await kill_and_restart(fleet.gateway, "kill -9 gateway")
    for server, name in ((fleet.servers.rabbitmq, "RabbitMQ"), (fleet.servers.minio, "MinIO")):
        await server.kill()
        await server.start()
        done.append(f"kill -9 and restart {name}")
        await asyncio.sleep(pause)
    return done


async def wait_terminal(base_url: str, job_ids: list[str]) -> dict[str, dict]:
    """Each job's final status; jobs still not terminal after ``SETTLE`` s are left out."""
    final: dict[str, dict] = {}
    limit = asyncio.Semaphore(32)

    async def one(client: httpx.AsyncClient, job_id: str) -> None:
        async with limit:
            while True:
                try:
                    answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 20})
                except httpx.TransportError:
                    await asyncio.sleep(1)
                    continue
                if answer.status_code == 200:
                    final[job_id] = answer.json()
                    return

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        tasks = [asyncio.create_task(one(client, job_id)) for job_id in job_ids]
        await asyncio.wait(tasks, timeout=SETTLE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return final


async def test_no_job_is_lost_or_duplicated_whatever_dies(fleet: Fleet) -> None:
    observer = Observer()
    connection = await observe(fleet, observer)
    try:
        for process in fleet.processes:
            await process.start()
        await wait_healthy(fleet.base_url)

        run = random.Random(0).getrandbits(32)
        job_ids = [f"chaos-{run:08x}-{n:04d}" for n in range(JOBS)]
        pause = max(2.0, JOBS / 100)
        # Spread over the havoc, so that every blow falls on jobs in flight.
        submitting = asyncio.create_task(submit_all(fleet.base_url, job_ids, min(0.2, 30 / JOBS)))
        havoc = await wreak_havoc(fleet, pause)
        await submitting
        final = await wait_terminal(fleet.base_url, job_ids)
    finally:
        await connection.close()

    storage = Storage(fleet.config.storage)
    wrong_output = []
    for job_id, status in final.items():
        if status["state"] == "done":
            try:
                output = json.loads(await storage.get_bytes(f"{job_id}/outputs/output.json"))
            except ObjectMissing:
                output = None
            if output != {"value": job_id}:
                wrong_output.append(job_id)
    duplicated = [job_id for job_id, seen in observer.outcomes.items() if len(seen) > 1]
    disagreeing = [
        job_id
        for job_id, status in final.items()
        if {state for state, _ in observer.outcomes.get(job_id, set())} - {status["state"]}
    ]
    lost = sorted(set(job_ids) - set(final))
    states = Counter(status["state"] for status in final.values())
    errors = Counter(s["error"]["type"] for s in final.values() if s.get("error"))
    print(f"\nchaos: {'; '.join(havoc)}")
    print(f"chaos: final states {dict(states)}, errors {dict(errors)}")
    print(
        f"submitted {len(job_ids)}, terminal {len(final)}, lost {len(lost)}, "
        f"duplicated {len(duplicated)}",
        flush=True,
    )
    assert not lost, f"jobs that never ended: {lost[:10]}"
    assert not duplicated, {job_id: observer.outcomes[job_id] for job_id in duplicated[:10]}
    assert not disagreeing, f"events and status disagree: {disagreeing[:10]}"
    assert not wrong_output, f"done jobs without their output: {wrong_output[:10]}"
