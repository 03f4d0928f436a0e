"""Shepherd past one machine, under faults: a three-node RabbitMQ cluster (quorum queues with
a replica on each node), a distributed MinIO of four servers, two gateways, two notifiers
(one active, one standing by) and six sheep of one class, every part a process of its own.

N jobs go in through both gateways while the test kills -9 a RabbitMQ node (then restarts
it), a MinIO server (then restarts it), the active notifier and two busy sheep, and starts
two more sheep. Clients are given every node: the broker URL and the storage endpoint list
them all. The verdict is the chaos test's (``tests.chaos.harness``), and each fault's time to
heal: from the blow until jobs submitted after it were done (and the jobs it interrupted).

It runs in namespaces of its own (``scripts/netns.sh``): ``make cluster-test`` with
N = 1000 (``SHEPHERD_CLUSTER_JOBS``), ``make test`` with a short N.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from schemas.broker_names import Names
from schemas.config import BrokerConfig, Config, ModelDefaults
from schemas.topology import Topology
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
from tests.cluster.cpu import CpuMeter
from tests.support.cluster_servers import ClusterServers, cluster_servers
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, runner_pid, wait_healthy, write_config
from tests.support.stack import bare_sheep, free_port

JOBS = int(os.environ.get("SHEPHERD_CLUSTER_JOBS", "200"))
FAULTS = os.environ.get("SHEPHERD_CLUSTER_FAULTS", "1") != "0"
"""0: no faults, and what each part spent a job (``make cluster-sizing``)."""
CLASS = "workers"
FIRST_SHEEP = 6
DURATIONS = [0.0, 0.05, 0.1, 0.2, 0.5, 1.0]
SUBMIT_WITHIN = 120.0
SETTLE = 180 + JOBS * 0.5
BUSY_WITHIN = 60.0
HAVOC_SECONDS = 90.0
"""About how long the faults take, over which the N jobs are spread (more go in if they
take longer)."""

pytestmark = [
    pytest.mark.timeout(900 + JOBS * 2),
    pytest.mark.skipif(
        os.environ.get("SHEPHERD_NETNS") != "1",
        reason="needs namespaces of its own: scripts/netns.sh (make cluster-test, make test)",
    ),
]


@dataclass
class Sheep:
    process: ServiceProcess
    sheep_id: str = ""


@dataclass
class Cluster:
    servers: ClusterServers
    config: Config
    config_files: list[Path]
    logs: Path
    gateways: list[ServiceProcess]
    base_urls: list[str]
    notifiers: list[ServiceProcess]
    ledger: Path
    sheep: list[Sheep] = field(default_factory=list)

    def leaders(self) -> dict[str, int]:
        """The process of each gateway, notifier, RabbitMQ node and MinIO server."""
        parts = {
            **{f"gateway {n}": g.process for n, g in enumerate(self.gateways, 1)},
            **{f"notifier {n}": s.process for n, s in enumerate(self.notifiers, 1)},
        }
        leaders = {name: process.pid for name, process in parts.items() if process}
        for kind, servers in (
            ("RabbitMQ node", self.servers.rabbitmq),
            ("MinIO", self.servers.minio),
        ):
            leaders |= {f"{kind} {n}": s.pid for n, s in enumerate(servers, 1) if s.pid}
        return leaders

    @property
    def processes(self) -> list[ServiceProcess]:
        return [*self.gateways, *self.notifiers, *(s.process for s in self.sheep)]

    async def add_sheep(self) -> Sheep:
        """One more sheep of the class, once it has said what id it made itself."""
        logs = self.logs / f"sheep{len(self.sheep) + 1}"
        sheep = Sheep(ServiceProcess(["sheep", "--class", CLASS], self.config_files[0], logs))
        await sheep.process.start()
        self.sheep.append(sheep)

        async def named() -> str | None:
            found = re.search(r"shepherd running: sheep:(\S+)", sheep.process.output())
            return found and found.group(1)

        sheep.sheep_id = await eventually(named, within=60, every=0.1)
        return sheep


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_servers(tmp_path / "servers") as servers:
        ledger = tmp_path / "ledger.jsonl"
        models = tally_models(tmp_path / "models", ledger)
        config = Config(
            broker=BrokerConfig(url=SecretStr(servers.amqp_url), namespace="cluster"),
            storage=servers.storage_config(),
            data_root=tmp_path / "data",
        )
        config.broker.lease_time = 15
        config.models = {"tally": ModelDefaults(max_attempts=config.broker.delivery_limit)}
        config.sheep_classes = {
            CLASS: bare_sheep(port=None, stop_grace=5.0, working_directory=models)
        }
        config_files, base_urls = [], []
        for n in (1, 2):  # a gateway each: its own port and job index
            config.gateway.port = free_port()
            config.gateway.index_path = tmp_path / f"gateway{n}.sqlite3"
            config_files.append(write_config(config, tmp_path / f"shepherd{n}.yml"))
            base_urls.append(f"http://127.0.0.1:{config.gateway.port}")
        logs = tmp_path / "logs"
        cluster = Cluster(
            servers,
            config,
            config_files,
            logs,
            [
                ServiceProcess(["gateway"], f, logs / f"gateway{n}")
                for n, f in enumerate(config_files, 1)
            ],
            base_urls,
            [ServiceProcess(["notifier"], config_files[0], logs / f"notifier{n}") for n in (1, 2)],
            ledger,
        )
        try:
            yield cluster
        finally:
            for process in cluster.processes:
                await process.stop()


async def declare(cluster: Cluster, observer: Observer) -> Broker:
    """The topology, declared once the three nodes are up (a quorum queue gets a replica on
    each node of the cluster at its declaration), and the observer's queue bound; the test's
    own connection, which moves to another node as the clients' do."""
    names = Names.for_config(cluster.config)
    broker = await Broker.connect(cluster.config.broker, names, "cluster-test")
    await broker.declare(Topology.for_config(cluster.config))
    members = await cluster.servers.rabbitmq[0].ctl(
        "list_queues", "-q", "--no-table-headers", "name", "members"
    )
    pool = next(line for line in members.splitlines() if line.startswith(f"{names.pool_queue}\t"))
    assert pool.count("@localhost") == 3, f"the pool queue is not on every node: {pool}"
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(
        "cluster-observer", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(names.events_exchange, "job.#")
    await queue.consume(observer.receive)
    return broker


@dataclass
class Load:
    """The jobs submitted, alternately through each gateway, and when."""

    cluster: Cluster
    submitted_at: dict[str, float] = field(default_factory=dict)
    _numbers: itertools.count = field(default_factory=itertools.count)
    _rng: random.Random = field(default_factory=lambda: random.Random(1))

    async def one(self, seconds: float | None = None) -> str:
        number = next(self._numbers)
        job_id = f"cluster-{number:05d}"
        body: dict = {
            "job_id": job_id,
            "model": MODEL,
            "payload": {
                "seconds": self._rng.choice(DURATIONS) if seconds is None else seconds,
                "value": job_id,
            },
        }
        if self._rng.random() < 0.5:
            body["sheep_class"] = CLASS
        base_url = self.cluster.base_urls[number % 2]
        self.submitted_at[job_id] = time.time()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await submit(client, body, SUBMIT_WITHIN)
        return job_id

    async def until(self, over: asyncio.Event, count: int, pace: float) -> None:
        """Jobs every ``pace`` seconds until ``over`` is set, so that every fault falls on
        jobs in flight, then the rest of ``count`` at once."""
        while not over.is_set() or len(self.submitted_at) < count:
            await self.one()
            await asyncio.sleep(0 if over.is_set() else pace)


async def done(base_url: str, job_id: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        while True:
            try:
                answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 20})
            except httpx.TransportError:
                await asyncio.sleep(0.5)
                continue
            if answer.status_code == 200 and answer.json()["state"] == "done":
                return


@dataclass
class Havoc:
    cluster: Cluster
    load: Load
    observer: Observer
    pause: float
    blows: list[Blow] = field(default_factory=list)
    healed: list[tuple[str, float]] = field(default_factory=list)

    def blow(self, what: str, victims: frozenset[str] = frozenset()) -> float:
        at = time.time()
        self.blows.append(Blow(what, at, victims))
        return at

    async def heal(self, what: str, at: float, victims: frozenset[str] = frozenset()) -> None:
        """Until a job submitted through each gateway after the blow is done, and every job
        the blow interrupted has ended; how long that took is the fault's time to heal."""
        probes = [await self.load.one(seconds=0.0) for _ in self.cluster.base_urls]
        await asyncio.gather(
            *(done(url, job) for url, job in zip(self.cluster.base_urls, probes, strict=True)),
            *(done(self.cluster.base_urls[0], job) for job in victims),
        )
        self.took(what, at)
        await asyncio.sleep(self.pause)

    def took(self, what: str, since: float) -> None:
        self.healed.append((what, time.time() - since))
        print(f"healed: {what} in {self.healed[-1][1]:.1f} s", flush=True)

    async def kill_busy_sheep(self, exclude: set[str]) -> tuple[str, frozenset[str]]:
        """kill -9 a live sheep whose runner is in the middle of a job; its id, and the jobs
        the blow interrupted: those its runner had not finished when the sheep died (the
        runner quits at its next heartbeat, and a job it finishes meanwhile cannot be
        reported: both run again)."""
        deadline = time.monotonic() + BUSY_WITHIN
        while time.monotonic() < deadline:
            for sheep in self.cluster.sheep:
                if sheep.sheep_id in exclude or not sheep.process.running:
                    continue
                pid = runner_pid(self.cluster.config, sheep.sheep_id)
                if pid is None or not open_runs(self.cluster.ledger, pid):
                    continue
                sheep.process.kill()
                at = time.time()
                runs = read_runs(self.cluster.ledger)
                victims = frozenset(
                    job_id
                    for job_id, job_runs in runs.items()
                    if any(r.pid == pid and (r.ended is None or r.ended > at) for r in job_runs)
                )
                self.blows.append(Blow(f"kill -9 sheep {sheep.sheep_id}", at, victims))
                return sheep.sheep_id, victims
            await asyncio.sleep(0.05)
        raise AssertionError(f"no sheep ran a job for {BUSY_WITHIN:g} s")

    async def wreak(self) -> None:
        cluster = self.cluster
        await asyncio.sleep(self.pause)

        node = cluster.servers.rabbitmq[0]  # the node every client tries first
        at = self.blow("kill -9 RabbitMQ node 1")
        await node.kill()
        await self.heal("RabbitMQ node 1 killed: jobs done through the other nodes", at)
        at = time.time()
        await node.start()
        self.took("RabbitMQ node 1 restarted: back in the cluster", at)

        server = cluster.servers.minio[1]
        at = self.blow("kill -9 MinIO server 2")
        await server.kill()
        await self.heal("MinIO server 2 killed: jobs done on the other three", at)
        at = time.time()
        await server.start()
        self.took("MinIO server 2 restarted: serving", at)

        active = cluster.notifiers[0]  # the first to consume the status queue
        at = self.blow("kill -9 the active notifier")
        active.kill()
        await active.wait()
        await self.heal("active notifier killed: the standby took over", at)
        await active.start()  # the new standby

        at = time.time()
        first, first_jobs = await self.kill_busy_sheep(set())
        _, second_jobs = await self.kill_busy_sheep({first})
        victims = first_jobs | second_jobs
        what = f"two busy sheep killed: their jobs {sorted(victims)} done elsewhere"
        await self.heal(what, at, victims)

        at = time.time()
        joined = [await cluster.add_sheep() for _ in range(2)]

        async def running_jobs() -> bool:
            runs = read_runs(cluster.ledger)
            pids = {runner_pid(cluster.config, s.sheep_id) for s in joined}
            return (
                all(
                    any(run.pid == pid for job_runs in runs.values() for run in job_runs)
                    for pid in pids
                )
                and None not in pids
            )

        await eventually(running_jobs, within=120, every=0.2)
        self.took("two sheep started: both running jobs", at)


def print_log_tails(cluster: Cluster, lines: int = 40) -> None:
    for process in cluster.processes:
        tail = process.output().splitlines()[-lines:]
        print(f"\n--- {process.log_file} ---", *tail, sep="\n", file=sys.stderr)


async def test_no_job_is_lost_or_duplicated_across_node_failures(cluster: Cluster) -> None:
    observer = Observer()
    broker = await declare(cluster, observer)
    load = Load(cluster)
    try:
        for gateway in cluster.gateways:
            await gateway.start()
        first, standby = cluster.notifiers
        await first.start()
        await eventually(lambda: _running(first), within=60, every=0.1)
        await standby.start()
        for _ in range(FIRST_SHEEP):
            await cluster.add_sheep()
        for url in cluster.base_urls:
            await wait_healthy(url, timeout=60)

        havoc = Havoc(cluster, load, observer, pause=2.0)
        meter = CpuMeter(cluster.leaders())
        over = asyncio.Event()
        # Without faults, as fast as 8 clients submit: the parts' idle work weighs less.
        submitters = 1 if FAULTS else 8
        submitting = asyncio.gather(
            *(load.until(over, JOBS, HAVOC_SECONDS / JOBS) for _ in range(submitters))
        )
        if FAULTS:
            await havoc.wreak()
        over.set()
        await submitting
        job_ids = list(load.submitted_at)
        final = await wait_terminal(cluster.base_urls[1], job_ids, SETTLE)
        spent = meter.spent()
    except BaseException:
        print_log_tails(cluster)
        raise
    finally:
        await broker.close()

    verdict = Verdict.of(
        job_ids, final, read_runs(cluster.ledger), observer, load.submitted_at, havoc.blows
    )
    print(f"\ncluster: {'; '.join(blow.what for blow in havoc.blows)}")
    for what, seconds in havoc.healed:
        print(f"healed: {what} in {seconds:.1f} s")
    if not FAULTS:  # every part lived through the run: what each spent a job
        rate = len(final) / meter.seconds
        print(f"cpu: {len(final)} jobs in {meter.seconds:.0f} s, {rate:.1f} a second")
        for part, seconds in spent.items():
            per_job = 1000 * seconds / len(final)
            a_core = f"{1000 / per_job:.0f} jobs/s a core" if per_job >= 0.1 else "idle"
            print(f"cpu: {part} {per_job:.1f} ms a job, {a_core}")
    verdict.check(await outputs_missing(Storage(cluster.config.storage), final))


async def _running(process: ServiceProcess) -> bool:
    return "shepherd running" in process.output()
