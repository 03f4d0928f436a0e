"""The Celery baseline: the same work per job as Shepherd's echo, on the same RabbitMQ and MinIO.

The task reads the input object from MinIO (streamed to a file), copies it as the echo
runner does (``shutil.copyfile``), writes the output object and returns a small dict, its
result, through RabbitMQ (``rpc://``). Acks come after the work (``task_acks_late``) and a
worker process holds one task at a time (``worker_prefetch_multiplier=1``), as a sheep does.

The worker is this module: ``celery -A bench.baseline worker --pool prefork --concurrency N
-Q bench-celery``, started by :class:`CeleryBaseline` with its settings in ``BENCH_*``
environment variables. The client side (:class:`CeleryBaseline`) puts the input object,
sends the task and waits for its result, in the patterns the harness uses for Shepherd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import urllib3
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from minio import Minio

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
S3_ENDPOINT = os.environ.get("BENCH_S3_ENDPOINT", "127.0.0.1:9000")
S3_ACCESS_KEY = os.environ.get("BENCH_S3_ACCESS_KEY", "minioadmin")
S3_SECRET_KEY = os.environ.get("BENCH_S3_SECRET_KEY", "minioadmin")
BUCKET = os.environ.get("BENCH_BUCKET", "shepherd-bench")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")
CHUNK = 1024 * 1024

SETTINGS: dict[str, Any] = {
    "result_backend": "rpc://",
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_default_queue": QUEUE,
    "worker_enable_remote_control": False,  # no pidbox queues: readiness is a warm-up task
    "worker_hijack_root_logger": False,
    "broker_connection_retry_on_startup": True,
}
"""Recorded in the results as the baseline's settings."""

app = Celery("bench-baseline", broker=AMQP_URL)
app.conf.update(SETTINGS)

_client: tuple[int, Minio] | None = None


def _minio() -> Minio:
    """One client per process: prefork children must not share the parent's connections."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), Minio(S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, secure=False))
    return _client[1]


@app.task(name="bench.echo")
def echo(in_key: str, out_key: str) -> dict[str, Any]:
    """Input object -> file -> copied file -> output object, as a sheep and the echo runner do."""
    client = _minio()
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as scratch:
        source, target = Path(scratch) / "input.json", Path(scratch) / "output.json"
        client.fget_object(BUCKET, in_key, str(source))
        shutil.copyfile(source, target)
        client.fput_object(BUCKET, out_key, str(target), content_type="application/json")
        return {"out_key": out_key, "size": target.stat().st_size}


# --- the client side, run by the harness ----------------------------------------------------


class CeleryBaseline:
    """Start and stop the worker; submit jobs in the harness's patterns."""

    def __init__(self, infra: Any, run_dir: Path, inflight: int) -> None:
        from bench.stack import ManagedProcess, clean_environment

        self.infra = infra
        self.run_dir = run_dir
        self.prefix = infra.celery_prefix
        self.inflight = inflight
        env = clean_environment() | {
            "BENCH_AMQP_URL": infra.amqp_url,
            "BENCH_S3_ENDPOINT": infra.s3_endpoint,
            "BENCH_S3_ACCESS_KEY": infra.access_key,
            "BENCH_S3_SECRET_KEY": infra.secret_key,
            "BENCH_BUCKET": infra.bucket,
            "BENCH_CELERY_QUEUE": infra.celery_queue,
        }
        self._env = env
        self._process_class = ManagedProcess
        self.worker: Any = None
        app.conf.update(broker_url=infra.amqp_url, task_default_queue=infra.celery_queue)
        self.queue = infra.celery_queue
        self.bucket = infra.bucket
        self.client = Minio(
            infra.s3_endpoint,
            infra.access_key,
            infra.secret_key,
            secure=False,
            http_client=urllib3.PoolManager(maxsize=max(inflight, 10)),
        )

    # worker

    def start_worker(self, concurrency: int, label: str, timeout: float = 60.0) -> None:
        self.worker = self._process_class(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.baseline",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "-Q",
                self.queue,
                "-n",
                f"bench-{label}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            self.run_dir / "logs" / label / "celery-worker.log",
            self._env,
        )
        self.worker.start()
        # Ready when every pool process has run a task (warm-up, unmeasured).
        deadline = time.monotonic() + timeout
        results = [
            self.submit_small(f"warm-{label}-{i}", b'{"warm": true}')
            for i in range(2 * concurrency)
        ]
        for result in results:
            left = deadline - time.monotonic()
            if not self.worker.running:
                raise RuntimeError(f"the Celery worker exited; see {self.worker.log}")
            result.get(timeout=max(left, 0.1))

    def stop_worker(self) -> int | None:
        if self.worker is None:
            return None
        code = self.worker.stop(timeout=20)
        self.worker = None
        return code

    def processes(self) -> dict[str, int]:
        if self.worker is None or not self.worker.running:
            return {}
        out = {"celery:main": self.worker.pid}
        for i, child in enumerate(self.worker.descendants()):
            out[f"celery:child{i + 1}"] = child.pid
        return out

    # jobs

    def keys(self, job_id: str) -> tuple[str, str]:
        return (
            f"{self.prefix}{job_id}/inputs/input.json",
            f"{self.prefix}{job_id}/outputs/output.json",
        )

    def _put_bytes(self, key: str, body: bytes) -> None:
        self.client.put_object(
            self.bucket, key, io.BytesIO(body), len(body), content_type="application/json"
        )

    def _send(self, job_id: str) -> Any:
        in_key, out_key = self.keys(job_id)
        return echo.apply_async(args=(in_key, out_key), queue=self.queue)

    def submit_small(self, job_id: str, body: bytes) -> Any:
        self._put_bytes(self.keys(job_id)[0], body)
        return self._send(job_id)

    @staticmethod
    def _outcome(result: Any, timeout: float) -> str:
        try:
            value = result.get(timeout=max(timeout, 0.01), propagate=False)
        except CeleryTimeout:
            return "missing"
        if result.successful() and isinstance(value, dict) and "out_key" in value:
            return "done"
        return "failed"

    def latency(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:
        """One job at a time: put the input, send, wait for the result."""
        latencies, outcomes = [], {"done": 0, "failed": 0, "missing": 0}
        for job_id, body in jobs:
            start = time.perf_counter()
            result = self.submit_small(job_id, body)
            outcome = self._outcome(result, timeout)
            end = time.perf_counter()
            outcomes[outcome] += 1
            if outcome == "done":
                latencies.append((end - start) * 1000)
        return {"latencies_ms": latencies, **outcomes}

    def throughput(self, jobs: list[tuple[str, bytes]], timeout: float) -> dict[str, Any]:
        """All jobs as fast as the client can: inputs put by ``inflight`` threads, each task
        sent as soon as its input is stored; then every result awaited."""
        bodies = dict(jobs)
        return self._put_then_send(
            list(bodies),
            lambda job_id: self._put_bytes(self.keys(job_id)[0], bodies[job_id]),
            self.inflight,
            timeout,
        )

    def large(self, job_ids: list[str], path: Path, workers: int, timeout: float) -> dict[str, Any]:
        """``workers`` uploads at a time (streamed from ``path``), each task sent once its
        input is stored; then every result awaited."""

        def put(job_id: str) -> None:
            key = self.keys(job_id)[0]
            self.client.fput_object(self.bucket, key, str(path), content_type="application/json")

        return self._put_then_send(job_ids, put, workers, timeout)

    def _put_then_send(
        self, job_ids: list[str], put: Callable[[str], None], threads: int, timeout: float
    ) -> dict[str, Any]:
        """Each job's input put by one of ``threads``, its task sent as soon as the input is
        stored; then every result awaited. Outcomes and the seconds it all took."""
        outcomes = {"done": 0, "failed": 0, "missing": 0}
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        results = []
        with ThreadPoolExecutor(threads) as pool:
            puts = {pool.submit(put, job_id): job_id for job_id in job_ids}
            for done in as_completed(puts):
                done.result()
                results.append(self._send(puts[done]))
        for result in results:
            outcomes[self._outcome(result, deadline - time.monotonic())] += 1
        return {"seconds": time.perf_counter() - start, **outcomes}

    # checks, after the clock stopped

    def output_digest(self, job_id: str) -> tuple[int, str] | None:
        """Size and SHA-256 of a job's output object, streamed; None if it is missing."""
        try:
            response = self.client.get_object(self.bucket, self.keys(job_id)[1])
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
            response = self.client.get_object(self.bucket, self.keys(job_id)[1])
        except Exception:
            return None
        try:
            return json.loads(response.read())
        finally:
            response.close()
            response.release_conn()


def verify_sample(jobs: list[tuple[str, bytes]], fetch: Callable[[str], Any]) -> dict[str, Any]:
    """Compare each sampled job's output with its input (as JSON); counts and the first
    mismatches."""
    checked, mismatched, examples = 0, 0, []
    for job_id, body in jobs:
        checked += 1
        got = fetch(job_id)
        if got != json.loads(body):
            mismatched += 1
            if len(examples) < 3:
                examples.append(job_id)
    return {"checked": checked, "mismatched": mismatched, "mismatched_jobs": examples}
