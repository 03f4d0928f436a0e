"""What every peer is to the harness: worker processes it starts, and a client that puts each
job's input object, sends the task naming it and waits for the message saying it is done.

A peer module defines its worker side (the task, the app or broker) at module level, for its
worker command to import, and a :class:`Peer` subclass with the three things that differ
between peers: the worker command, how a task is sent, and how its completion is awaited.
Everything else (buckets, queues, phases' submission patterns, output checks) is here, once.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, ClassVar, Protocol

import urllib3
from minio import Minio

from bench.peers.work import CHUNK, WorkerSettings, keys
from bench.processes import ManagedProcess, clean_environment
from bench.servers import delete_broker_objects, fresh_plain_bucket, remove_bucket
from bench.workload import Outcome, empty_outcomes, sequential, tally


class Servers(Protocol):
    """Where the servers are (``bench.stack.Infra`` is one)."""

    amqp_url: str
    s3_endpoint: str
    access_key: str
    secret_key: str


class Peer(ABC):
    """One peer: ``name`` keys its results, ``title`` heads its column."""

    name: ClassVar[str]
    title: ClassVar[str]

    def __init__(self, servers: Servers, run_dir: Path, inflight: int) -> None:
        self.run_dir = run_dir
        self.inflight = inflight
        self.worker_settings = WorkerSettings(
            amqp_url=servers.amqp_url,
            s3_endpoint=servers.s3_endpoint,
            access_key=servers.access_key,
            secret_key=servers.secret_key,
            bucket=f"bench-{self.name}",
            queue=f"bench-{self.name}",
        )
        self.bucket = self.worker_settings.bucket
        self.queue = self.worker_settings.queue
        self.amqp_url = servers.amqp_url
        self.client = Minio(
            servers.s3_endpoint,
            servers.access_key,
            servers.secret_key,
            secure=False,
            http_client=urllib3.PoolManager(maxsize=max(inflight, 10)),
        )
        self.worker: ManagedProcess | None = None

    # --- what differs between peers ---------------------------------------------------------

    @abstractmethod
    def worker_command(self, workers: int, label: str) -> list[str]:
        """The command line of a worker with ``workers`` processes, one task at a time each."""

    @abstractmethod
    def send(self, job_id: str) -> Any:
        """Send the job's task (its input object is stored); a handle for :meth:`wait`."""

    @abstractmethod
    def wait(self, handle: Any, timeout: float) -> Outcome:
        """Block until the job's completion message came, or ``timeout`` passed."""

    @abstractmethod
    def description(self) -> dict[str, Any]:
        """The settings that make this peer what it is, recorded in the results."""

    def worker_env(self) -> dict[str, str]:
        """What the worker's processes are told (``BENCH_*``)."""
        return self.worker_settings.env()

    def broker_leftovers(self) -> tuple[list[str], list[str]]:
        """Queues and exchanges the peer leaves on the broker, deleted at its teardown."""
        return [self.queue], []

    def queue_prefixes(self) -> list[str]:
        """Name prefixes of its queues, which must be gone before the next system starts."""
        return [self.queue]

    @abstractmethod
    def close(self) -> None:
        """Close the client side's broker connections (its reply queue goes with them)."""

    # --- servers ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Its own empty bucket without notifications, and none of its queues left over."""
        fresh_plain_bucket(self.client, self.bucket)
        delete_broker_objects(self.amqp_url, *self.broker_leftovers())

    def teardown(self) -> int:
        """Client closed, queues and bucket removed; how many objects there were."""
        self.close()
        delete_broker_objects(self.amqp_url, *self.broker_leftovers())
        return remove_bucket(self.client, self.bucket)

    # --- worker -------------------------------------------------------------------------------

    def start(self, workers: int, label: str, timeout: float = 60.0) -> None:
        """Start the worker and wait until every process of it has run a task (unmeasured)."""
        self.worker = ManagedProcess(
            self.name,
            self.worker_command(workers, label),
            self.run_dir / "logs" / label / "worker.log",
            clean_environment() | self.worker_env(),
        )
        self.worker.start()
        deadline = time.monotonic() + timeout
        handles = [self.submit(f"warm-{label}-{i}", b'{"warm": true}') for i in range(2 * workers)]
        for handle in handles:
            if not self.worker.running:
                raise RuntimeError(f"the {self.title} worker exited; see {self.worker.log}")
            outcome, _ = self.wait(handle, deadline - time.monotonic())
            if outcome != "done":
                raise RuntimeError(f"{self.title} warm-up job {outcome}; see {self.worker.log}")

    def stop(self) -> int | None:
        if self.worker is None:
            return None
        code = self.worker.stop(timeout=20)
        self.worker = None
        return code

    def processes(self) -> dict[str, int]:
        """``worker:main`` and each ``worker-child:N`` (pool or worker processes)."""
        if self.worker is None or not self.worker.running:
            return {}
        out = {"worker:main": self.worker.pid}
        for i, child in enumerate(self.worker.descendants()):
            out[f"worker-child:{i + 1}"] = child.pid
        return out

    # --- jobs ---------------------------------------------------------------------------------

    def _put_bytes(self, job_id: str, body: bytes) -> None:
        self.client.put_object(
            self.bucket, keys(job_id)[0], io.BytesIO(body), len(body), "application/json"
        )

    def submit(self, job_id: str, body: bytes) -> Any:
        self._put_bytes(job_id, body)
        return self.send(job_id)

    def latency(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:
        """One job at a time: put the input, send, wait for the completion message."""
        latencies: list[float] = []
        outcomes = empty_outcomes()
        for job_id, body in jobs:
            start = time.perf_counter()
            outcome, arrived = self.wait(self.submit(job_id, body), timeout)
            outcomes[outcome] += 1
            if outcome == "done" and arrived is not None:
                latencies.append((arrived - start) * 1000)
        return sequential(latencies, outcomes)

    def throughput(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:
        """All jobs as fast as the client can: inputs put by ``inflight`` threads, each task
        sent as soon as its input is stored; then every completion awaited."""
        bodies = dict(jobs)
        return self._put_then_send(
            list(bodies),
            lambda job_id: self._put_bytes(job_id, bodies[job_id]),
            self.inflight,
            timeout,
        )

    def large(self, job_ids: list[str], path: Path, workers: int, timeout: float) -> dict[str, Any]:
        """``workers`` uploads at a time (streamed from ``path``), each task sent once its
        input is stored; then every completion awaited."""

        def put(job_id: str) -> None:
            self.client.fput_object(
                self.bucket, keys(job_id)[0], str(path), content_type="application/json"
            )

        return self._put_then_send(job_ids, put, workers, timeout)

    def _put_then_send(
        self,
        job_ids: list[str],
        put: Callable[[str], None],
        threads: int,
        timeout: float,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        handles = []
        with ThreadPoolExecutor(threads) as pool:
            puts = {pool.submit(put, job_id): job_id for job_id in job_ids}
            for done in as_completed(puts):
                done.result()
                handles.append(self.send(puts[done]))
        return tally([self.wait(h, deadline - time.monotonic()) for h in handles], start)

    # --- checks, after the clock stopped --------------------------------------------------------

    def output_digest(self, job_id: str) -> tuple[int, str] | None:
        """Size and SHA-256 of a job's output object, streamed; None if it is missing."""
        try:
            response = self.client.get_object(self.bucket, keys(job_id)[1])
        except Exception:
            return None
        digest, size = hashlib.sha256(), 0
        try:
            for chunk in response.stream(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        finally:
            response.close()
            response.release_conn()
        return size, digest.hexdigest()

    def output_json(self, job_id: str) -> Any:
        try:
            response = self.client.get_object(self.bucket, keys(job_id)[1])
        except Exception:
            return None
        try:
            return json.loads(response.read())
        except ValueError:
            return None
        finally:
            response.close()
            response.release_conn()
