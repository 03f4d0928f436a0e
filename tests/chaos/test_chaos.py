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
import json
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import pytest
import yaml
from pydantic import SecretStr

from schemas.broker_names import Names
from schemas.config import BrokerConfig, Config, ModelDefaults
from schemas.events import JobEvent
from schemas.status import TERMINAL_STATES
from schemas.topology import build_topology
from services.common.broker import Broker
from services.common.storage import ObjectMissing, Storage
from tests.chaos.ledger import Blow, open_runs, read_runs, unexplained_reruns
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
TALLY = Path(__file__).parent / "models" / "tally" / "1"
MODEL = {"name": "tally", "version": "1"}

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


@dataclass
class Observer:
    """Every terminal job event, from a durable queue bound before the first job: which
    outcomes each job announced, and when the first arrived."""

    outcomes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ended_at: dict[str, float] = field(default_factory=dict)

    async def receive(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = JobEvent.model_validate_json(message.body)
        if event.data.state in TERMINAL_STATES:
            self.outcomes[event.data.job_id].add(event.data.state.value)
            self.ended_at.setdefault(event.data.job_id, time.time())
        await message.ack()


def tally_models(root: Path, ledger: Path) -> Path:
    """A models directory holding the tally model, writing into ``ledger``."""
    model = root / "tally" / "1"
    model.mkdir(parents=True)
    shutil.copy(TALLY / "model.py", model / "model.py")
    runner_file = {"runner": "model:TallyRunner", "options": {"ledger": str(ledger)}}
    (model / "shepherd-runner.yaml").write_text(yaml.safe_dump(runner_file))
    return root


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


async def submit(client: httpx.AsyncClient, job_id: str, rng: random.Random) -> None:
    """Submit until the gateway takes it, retrying through outages as a client should."""
    body = {
        "job_id": job_id,
        "model": MODEL,
        "payload": {"seconds": rng.choice(DURATIONS), "value": job_id},
    }
    if (target := rng.choice(TARGETS)) is not None:
        body["sheep_id"] = target
    deadline = time.monotonic() + SUBMIT_WITHIN
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = await client.post("/start-job", json=body)
        except httpx.TransportError as exc:
            last = repr(exc)
            await asyncio.sleep(0.5)
            continue
        if answer.status_code in (200, 202):
            return
        assert answer.status_code == 503, answer.text
        last = f"503 {answer.text}"
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))
    raise AssertionError(f"the gateway took no {job_id} for {SUBMIT_WITHIN:g} s; last: {last}")


async def submit_all(
    base_url: str, job_ids: list[str], pace: float, submitted_at: dict[str, float]
) -> None:
    rng = random.Random(1)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for job_id in job_ids:
            submitted_at[job_id] = time.time()
            await submit(client, job_id, rng)
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


async def outputs_missing(storage: Storage, final: dict[str, dict]) -> list[str]:
    """Done jobs whose output is not what the tally model returned for them."""
    wrong = []
    for job_id, status in final.items():
        if status["state"] != "done":
            continue
        try:
            output = json.loads(await storage.get_bytes(f"{job_id}/outputs/output.json"))
        except ObjectMissing:
            output = None
        if output != {"value": job_id}:
            wrong.append(job_id)
    return wrong


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
        final = await wait_terminal(fleet.base_url, job_ids)
    except BaseException:
        print_log_tails(fleet)
        raise
    finally:
        await connection.close()

    runs = read_runs(fleet.ledger)
    victims = frozenset().union(*(blow.victims for blow in blows))
    in_flight = {
        job_id: (submitted_at[job_id], observer.ended_at.get(job_id, float("inf")))
        for job_id in submitted_at
    }
    lost = sorted(set(job_ids) - set(final))
    not_done = {  # the victims too: a job whose runner dies runs again (models.max_attempts)
        job_id: status.get("error") for job_id, status in final.items() if status["state"] != "done"
    }
    never_ran = [job_id for job_id, s in final.items() if s["state"] == "done" and not runs[job_id]]
    not_rerun = [job_id for job_id in victims if len(runs[job_id]) < 2]
    reruns = unexplained_reruns(runs, in_flight, blows)
    two_outcomes = {job_id: seen for job_id, seen in observer.outcomes.items() if len(seen) > 1}
    disagreeing = [
        job_id
        for job_id, status in final.items()
        if observer.outcomes.get(job_id, set()) - {status["state"]}
    ]
    wrong_output = await outputs_missing(Storage(fleet.config.storage), final)
    states = Counter(status["state"] for status in final.values())
    run_counts = Counter(len(runs[job_id]) for job_id in job_ids)
    print(f"\nchaos: {'; '.join(blow.what for blow in blows)}")
    print(f"chaos: final states {dict(states)}, runs per job {dict(run_counts)}")
    print(
        f"submitted {len(job_ids)}, terminal {len(final)}, lost {len(lost)}, "
        f"duplicated {len(reruns) + len(two_outcomes)}",
        flush=True,
    )
    assert not lost, f"jobs that never ended: {lost[:10]}"
    assert not not_done, f"jobs that did not end done: {dict(list(not_done.items())[:10])}"
    assert not never_ran, f"done without the model running them: {never_ran[:10]}"
    assert not not_rerun, f"interrupted by their runner's death, yet not run again: {not_rerun}"
    assert not reruns, f"ran more than once with no blow while in flight: {reruns}"
    assert not two_outcomes, f"jobs that announced two outcomes: {two_outcomes}"
    assert not disagreeing, f"events and status disagree: {disagreeing[:10]}"
    assert not wrong_output, f"done jobs without their output: {wrong_output[:10]}"
