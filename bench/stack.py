"""Shepherd's processes and its servers' state in a benchmark run.

Shepherd runs as separate processes (``shepherd gateway``, ``shepherd notifier``, one
``shepherd sheep ID`` per sheep), from a configuration generated into the run's directory,
in a namespace and a bucket of the benchmark's own, so that each process's memory can be
read from ``/proc`` and the default stack's messages are never seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import yaml
from minio import Minio
from pydantic import SecretStr

from bench.processes import ManagedProcess, alive, clean_environment, free_ports
from bench.servers import empty_bucket, management_port_url
from schemas.broker_names import Names
from schemas.config import BrokerConfig, StorageConfig
from services import setup
from services.setup import setup_broker, setup_storage

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
BENCH_MODELS = ROOT / "bench" / "models"
"""The duty-cycle phase's model (``busy/1``), which records when it works."""
SHEPHERD = Path(sys.executable).with_name("shepherd")


@dataclass(frozen=True)
class Infra:
    """Where the servers are, and the names Shepherd's side of the benchmark owns on them
    (each peer names its own bucket and queues)."""

    amqp_url: str
    s3_endpoint: str
    access_key: str = "minioadmin"
    secret_key: str = "minioadmin"
    bucket: str = "shepherd-bench"
    namespace: str = "bench"
    target_arn: str = "arn:minio:sqs::SHEPHERD:amqp"
    rabbitmq_prometheus_port: int = 15692

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    @property
    def amqp_port(self) -> int:
        return urlsplit(self.amqp_url).port or 5672

    @property
    def s3_port(self) -> int:
        return int(self.s3_endpoint.rpartition(":")[2] or 80)

    @property
    def rabbitmq_metrics_url(self) -> str:
        return management_port_url(self.amqp_url, self.rabbitmq_prometheus_port) + "/metrics"

    def storage_config(self) -> StorageConfig:
        return StorageConfig(
            endpoint=self.s3_endpoint,
            bucket=self.bucket,
            access_key=SecretStr(self.access_key),
            secret_key=SecretStr(self.secret_key),
        )

    def minio(self) -> Minio:
        return Minio(self.s3_endpoint, self.access_key, self.secret_key, secure=False)


class ShepherdStack:
    """Gateway, notifier and ``n_sheep`` bare sheep serving the models in ``models``, as
    separate processes."""

    def __init__(
        self,
        infra: Infra,
        run_dir: Path,
        label: str,
        n_sheep: int,
        max_upload_bytes: int,
        models: Path = MODELS,
    ) -> None:
        self.infra = infra
        self.label = label
        self.dir = run_dir / label
        self.logs = run_dir / "logs" / label
        self.sheep_ids = [f"s{i + 1}" for i in range(n_sheep)]
        self.port, *self.runner_ports = free_ports(1 + n_sheep)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.max_upload_bytes = max_upload_bytes
        self.models = models
        self.config_file = self.dir / "shepherd.yml"
        self.services: dict[str, ManagedProcess] = {}

    def settings(self) -> dict[str, Any]:
        """The configuration file's content."""
        return {
            "data_root": str(self.dir / "data"),
            "broker": {"url": self.infra.amqp_url, "namespace": self.infra.namespace},
            "storage": {
                "endpoint": self.infra.s3_endpoint,
                "access_key": self.infra.access_key,
                "secret_key": self.infra.secret_key,
                "bucket": self.infra.bucket,
            },
            "gateway": {
                "host": "127.0.0.1",
                "port": self.port,
                "max_upload_bytes": self.max_upload_bytes,
            },
            "sheep": {
                sheep_id: {
                    "type": "bare",
                    "port": port,
                    "working_directory": str(self.models),
                    "stop_grace": 5,
                }
                for sheep_id, port in zip(self.sheep_ids, self.runner_ports, strict=True)
            },
        }

    async def start(self, timeout: float = 60.0, with_sheep: bool = True) -> None:  # noqa: ASYNC109
        """Every service, or (``with_sheep=False``) the gateway and the notifier only, so
        that jobs can be queued before any sheep takes one (:meth:`start_sheep`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.settings(), sort_keys=False))
        self._launch("notifier", ["notifier"])
        self._launch("gateway", ["gateway"])
        if with_sheep:
            self.start_sheep()
        await self._wait_healthy(timeout)

    def start_sheep(self) -> None:
        for sheep_id in self.sheep_ids:
            self._launch(f"sheep:{sheep_id}", ["sheep", sheep_id])

    def _launch(self, label: str, args: list[str]) -> None:
        proc = ManagedProcess(
            label,
            [str(SHEPHERD), *args, "-c", str(self.config_file)],
            self.logs / f"{label.replace(':', '-')}.log",
            clean_environment(),
        )
        proc.start()
        self.services[label] = proc

    async def _wait_healthy(self, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            while True:
                dead = [label for label, p in self.services.items() if not p.running]
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited during start-up; see {self.logs}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway was not healthy within {timeout:g} s")
                await asyncio.sleep(0.1)  # start-up only, never on a measured path

    def processes(self) -> dict[str, int]:
        """Label -> pid of every service and of each sheep's runner(s)."""
        out = {label: proc.pid for label, proc in self.services.items() if proc.running}
        for sheep_id in self.sheep_ids:
            proc = self.services.get(f"sheep:{sheep_id}")
            if proc is None:
                continue
            children = proc.descendants()
            for i, child in enumerate(children):
                suffix = "" if len(children) == 1 else f":{i}"
                out[f"runner:{sheep_id}{suffix}"] = child.pid
        return out

    def crashed(self) -> list[str]:
        return [label for label, proc in self.services.items() if not proc.running]

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM to every service at once (sheep first would be nicer, but nothing is in
        flight any more), then each one's exit code."""
        children = {label: p.descendants() for label, p in self.services.items()}
        for proc in self.services.values():
            proc.signal(signal.SIGTERM)
        codes = {}
        for label, proc in self.services.items():
            try:
                codes[label] = await asyncio.to_thread(proc.popen.wait, 20)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                codes[label] = None
            proc.kill_group([c for c in children[label] if alive(c)])
        return codes


# --- servers: the benchmark's namespace and bucket ---------------------------------------


async def prepare_servers(infra: Infra, sheep_ids: list[str]) -> None:
    """A clean namespace and an empty bucket wired to the notification target, whatever a
    previous (interrupted) run left."""
    await setup.delete_namespace(infra.amqp_url, infra.names, sheep_ids)
    client = infra.minio()
    if client.bucket_exists(infra.bucket):
        await asyncio.to_thread(client.delete_bucket_notification, infra.bucket)
        await asyncio.to_thread(empty_bucket, client, infra.bucket)
    await asyncio.to_thread(setup_storage, infra.storage_config(), infra.target_arn)
    await setup_broker(
        BrokerConfig(url=SecretStr(infra.amqp_url), namespace=infra.namespace), infra.names
    )


async def teardown_servers(infra: Infra, sheep_ids: list[str]) -> int:
    """Undo :func:`prepare_servers`: notifications off first (so that removing the objects
    sends no events to every namespace), objects and bucket removed, namespace deleted (left
    behind, its ``<ns>.inputs`` would collect every bucket's notifications for ever).
    Returns how many objects were removed."""
    client = infra.minio()
    removed = 0
    if client.bucket_exists(infra.bucket):
        await asyncio.to_thread(client.delete_bucket_notification, infra.bucket)
        removed = await asyncio.to_thread(empty_bucket, client, infra.bucket)
        await asyncio.to_thread(client.remove_bucket, infra.bucket)
    await setup.delete_namespace(infra.amqp_url, infra.names, sheep_ids)
    return removed


DRAIN_TIMEOUT = 300.0


async def notifications_drained(infra: Infra) -> float:
    """Seconds until MinIO's notification of a fresh sentinel object arrives on RabbitMQ.

    MinIO sends bucket notifications one at a time, each confirmed; under sustained load it
    queues them, and an upload's notification then waits behind every earlier write's. The
    large-input phase, which depends on those notifications, starts once they are drained,
    and the time it took is reported (the lag a burst of jobs leaves behind)."""
    marker = uuid.uuid4().hex  # S3 events carry keys URL-encoded; the marker reads the same
    # Shaped like an input (notifications may fire for ``*/inputs/`` only), under a prefix
    # that is no job id (a leading "_"), so that the gateway ignores it.
    key = f"_bench-{marker}/inputs/sentinel"
    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(infra.names.storage_exchange, "")
        start = time.perf_counter()
        client = infra.minio()
        await asyncio.to_thread(client.put_object, infra.bucket, key, io.BytesIO(b""), 0)
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT), queue.iterator(no_ack=True) as messages:
                async for message in messages:
                    if marker.encode() in message.body:
                        return time.perf_counter() - start
        finally:
            await asyncio.to_thread(client.remove_object, infra.bucket, key)
    raise RuntimeError("the consumer of MinIO's notifications ended before the sentinel's came")
