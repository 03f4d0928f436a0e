"""Chaos: submit N jobs and, while they run, kill -9 a busy sheep, a busy runner, the notifier
and the gateway (restarting each), then kill -9 and restart RabbitMQ and MinIO.

The verdict owes nothing to Shepherd's own answers where it can: the jobs run the tally model
(``models/tally``), which records every execution in a ledger file, and every blow is checked
to have landed on a live target. Every job must end ``done`` with its output, except the job
whose runner the test killed; a job may run more than once only if a blow fell while it was
in flight; and no job may announce two different outcomes.

``make chaos`` runs it with N = 500 (``SHEPHERD_CHAOS_JOBS``); ``make test`` with a short N.
It prints ``submitted N, terminal N, lost 0, duplicated 0``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import pytest
from pydantic import SecretStr

from schemas.broker_names import Names
from schemas.config import BrokerConfig, Config, ModelDefaults
from schemas.topology import build_topology
from services.common.broker import Broker
from services.common.storage import Storage
from tests.chaos.harness import (
    MODEL,
    Observer,
    Verdict,
    outputs_missing,
    submit,
    tally_models,
    wait_terminal,
)
from tests.chaos.ledger import Blow, open_runs, read_runs
from tests.support.private_servers import PrivateServers, private_servers
from tests.support.processes import (
    ServiceProcess,
    kill_runner,
    runner_pid,
    wait_healthy,
    write_config,
)
from tests.support.stack import bare_sheep, free_port

JOBS = int(os.environ.get("SHEPHERD_CHAOS_JOBS", "60"))
SHEEP = ["s1", "s2", "s3"]
DURATIONS = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0]
TARGETS: list[str | None] = [None, None, *SHEEP]
SETTLE = 120 + JOBS * 0.6
"""Seconds every job gets to end once the chaos is over."""
BUSY_WITHIN = 60.0
"""Seconds to wait for a sheep's runner to be in the middle of a job before striking it."""
SUBMIT_WITHIN = 120.0
"""Seconds a submission may be refused (every part is back well within it)."""

pytestmark = pytest.mark.timeout(600 + JOBS * 2)


@dataclass
class Fleet:
    """The services, each a process of its own, the servers they use, and the ledger in
    which the tally model records every run."""

    servers: PrivateServers
    config: Config
    base_url: str
    gateway: ServiceProcess
    notifier: ServiceProcess
    sheep: dict[str, ServiceProcess]
    ledger: Path

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.gateway, self.notifier, *self.sheep.values()]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with private_servers(tmp_path / "servers") as servers:
        config = Config(
            broker=BrokerConfig(url=SecretStr(servers.rabbitmq.amqp_url), namespace="chaos"),
            storage=servers.minio.storage_config(servers.bucket),
            data_root=tmp_path / "data",
        )
        ledger = tmp_path / "ledger.jsonl"
        models = tally_models(tmp_path / "models", ledger)
        config.broker.lease_time = 15
        # Attempts are deliveries: a job held by the sheep the test kills, then run by the
        # runner it kills, has had two. As many as the delivery limit, so that two blows on
        # one job still end in done.
        config.models = {"tally": ModelDefaults(max_attempts=config.broker.delivery_limit)}
        config.gateway.port = free_port()
        config.sheep = {
            sheep_id: bare_sheep(stop_grace=5.0, working_directory=models) for sheep_id in SHEEP
        }
        config_file = write_config(config, tmp_path / "shepherd.yml")
        logs = tmp_path / "logs"
        fleet = Fleet(
            servers,
            config,
            f"http://127.0.0.1:{config.gateway.port}",
            ServiceProcess(["gateway"], config_file, logs),
            ServiceProcess(["notifier"], config_file, logs),
            {s: ServiceProcess(["sheep", s], config_file, logs) for s in SHEEP},
            ledger,
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


def job_body(job_id: str, rng: random.Random) -> dict:
    body = {
        "job_id": job_id,
        "model": MODEL,
        "payload": {"seconds": rng.choice(DURATIONS), "value": job_id},
    }
    if (target := rng.choice(TARGETS)) is not None:
        body["sheep_id"] = target
    return body


async def submit_all(
    base_url: str, job_ids: list[str], pace: float, submitted_at: dict[str, float]
) -> None:
    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for job_id in job_ids:
            submitted_at[job_id] = time.time()
            await submit(client, job_body(job_id, rng), SUBMIT_WITHIN)
            await asyncio.sleep(pace)


async def busy_runner(fleet: Fleet, sheep_id: str) -> tuple[int, set[str]]:
    """The pid of the sheep's runner once it is in the middle of a job, and its jobs."""
    deadline = time.monotonic() + BUSY_WITHIN
    while time.monotonic() < deadline:
        pid = runner_pid(fleet.config, sheep_id)
        if pid is not None and (jobs := open_runs(fleet.ledger, pid)):
            return pid, jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"the runner of sheep {sheep_id} ran no job for {BUSY_WITHIN:g} s")


async def wreak_havoc(fleet: Fleet, pause: float) -> list[Blow]:
    """Kill each part in turn while jobs run, each while it is alive (and, for sheep and
    runners, busy with a job); the blows dealt."""
    blows: list[Blow] = []

    async def kill_and_restart(process: ServiceProcess, what: str) -> None:
        assert process.running, f"{what}: the process was not running"
        process.kill()
        blows.append(Blow(what, time.time()))
        await process.wait()
        await asyncio.sleep(0.5)
        await process.start()
        await asyncio.sleep(pause)

    await asyncio.sleep(pause)
    await busy_runner(fleet, "s1")
    await kill_and_restart(fleet.sheep["s1"], "kill -9 sheep s1 while it ran a job")
    pid, jobs = await busy_runner(fleet, "s2")
    assert kill_runner(fleet.config, "s2") == pid, "the busy runner of s2 was gone"
    blows.append(Blow(f"kill -9 runner of s2 running {sorted(jobs)}", time.time(), frozenset(jobs)))
    await asyncio.sleep(pause)
    await kill_and_restart(fleet.notifier, "kill -9 notifier")
    await kill_and_restart(fleet.gateway, "kill -9 gateway")
    for server, name in ((fleet.servers.rabbitmq, "RabbitMQ"), (fleet.servers.minio, "MinIO")):
        assert server.running, f"{name} was not running"
        await server.kill()
        blows.append(Blow(f"kill -9 and restart {name}", time.time()))
        await server.start()
        await asyncio.sleep(pause)
    return blows


def print_log_tails(fleet: Fleet, lines: int = 40) -> None:
    """The end of every service's log, for a failure seen only in CI's output."""
    for process in fleet.processes:
        tail = process.output().splitlines()[-lines:]
        print(f"\n--- {process.log_file.name} ---", *tail, sep="\n", file=sys.stderr)


async def test_no_job_is_lost_or_duplicated_whatever_dies(fleet: Fleet) -> None:
    observer = Observer()
    connection = await observe(fleet, observer)
    submitted_at: dict[str, float] = {}
    try:
        for process in fleet.processes:
            await process.start()
        await wait_healthy(fleet.base_url)

        run = random.Random(0).getrandbits(32)
        job_ids = [f"chaos-{run:08x}-{n:04d}" for n in range(JOBS)]
        pause = max(2.0, JOBS / 100)
        # Spread over the havoc, so that every blow falls on jobs in flight.
        submitting = asyncio.create_task(
            submit_all(fleet.base_url, job_ids, min(0.2, 30 / JOBS), submitted_at)
        )
        blows = await wreak_havoc(fleet, pause)
        await submitting
        final = await wait_terminal(fleet.base_url, job_ids, SETTLE)
    except BaseException:
        print_log_tails(fleet)
        raise
    finally:
        await connection.close()

    verdict = Verdict.of(job_ids, final, read_runs(fleet.ledger), observer, submitted_at, blows)
    print(f"\nchaos: {'; '.join(blow.what for blow in blows)}")
    verdict.check(await outputs_missing(Storage(fleet.config.storage), final))
