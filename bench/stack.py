"""Processes and servers of a benchmark run.

Shepherd runs as separate processes (``shepherd gateway``, ``shepherd notifier``, one
``shepherd sheep ID`` per sheep), from a configuration generated into the run's directory,
in a namespace and a bucket of the benchmark's own, so that each process's memory can be
read from ``/proc`` and the default stack's messages are never seen. Every process started
here is in a session of its own and is registered, so that :func:`kill_everything` can end
it (and its children, e.g. runners) whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import psutil
import yaml
from minio import Minio
from minio.deleteobjects import DeleteObject
from pydantic import SecretStr

from schemas.config import BrokerConfig, StorageConfig
from schemas.topology import Names
from services import setup
from services.setup import setup_broker, setup_storage

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
SHEPHERD = Path(sys.executable).with_name("shepherd")


@dataclass(frozen=True)
class Infra:
    """Where the servers are, and the names the benchmark owns on them."""

    amqp_url: str
    s3_endpoint: str
    access_key: str = "minioadmin"
    secret_key: str = "minioadmin"
    bucket: str = "shepherd-bench"
    namespace: str = "bench"
    target_arn: str = "arn:minio:sqs::SHEPHERD:amqp"
    celery_queue: str = "bench-celery"
    celery_prefix: str = "_celery/"

    @property
    def names(self) -> Names:
        return Names(self.namespace)

    def storage_config(self) -> StorageConfig:
        return StorageConfig(
            endpoint=self.s3_endpoint,
            bucket=self.bucket,
            access_key=SecretStr(self.access_key),
            secret_key=SecretStr(self.secret_key),
        )

    def minio(self) -> Minio:
        return Minio(self.s3_endpoint, self.access_key, self.secret_key, secure=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This process's environment less SHEPHERD_* overrides and DEBUG: the generated
    configuration file is the whole truth for the services."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SHEPHERD_") and k != "DEBUG"}


# --- processes ---------------------------------------------------------------------------

_LIVE: set[ManagedProcess] = set()


@dataclass(eq=False)
class ManagedProcess:
    """A child process in a session of its own, its output appended to ``log``."""

    label: str
    command: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill_group(self, extra: list[psutil.Process] = ()) -> None:
        """SIGKILL its process group and those of ``extra`` (children in sessions of their
        own, such as runners)."""
        groups = {self.pid} if self.popen is not None else set()
        for proc in extra:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                groups.add(os.getpgid(proc.pid))
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        _LIVE.discard(self)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL of the group (and of children in
        other sessions). Returns the exit code (None if it had to be killed)."""
        if self.popen is None:
            return None
        children = self.descendants()
        self.signal(signal.SIGTERM)
        code: int | None
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.kill_group([c for c in children if _alive(c)])
        return code


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_everything() -> None:
    """The last resort: SIGKILL every process started here that is still registered."""
    for proc in list(_LIVE):
        proc.kill_group(proc.descendants())


# --- memory --------------------------------------------------------------------------------


def memory_of(pid: int) -> dict[str, float] | None:
    """VmRSS (now) and VmHWM (peak since start) of ``pid``, in MiB; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024  # kB
    if len(fields) < 2:
        return None
    return {"pid": pid, "rss_mib": round(fields["VmRSS"], 1), "hwm_mib": round(fields["VmHWM"], 1)}


def snapshot(processes: dict[str, int]) -> dict[str, dict[str, float]]:
    """``memory_of`` each labelled pid that is still there."""
    out = {}
    for label, pid in processes.items():
        mem = memory_of(pid)
        if mem is not None:
            out[label] = mem
    return out


def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each labelled process has used so far."""
    out = {}
    for label, pid in processes.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[label] = times.user + times.system
    return out


def server_pids() -> dict[str, int]:
    """RabbitMQ's and MinIO's processes on this machine (read only: their CPU time)."""
    found = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name == "beam.smp":
            found["rabbitmq"] = proc.pid
        elif name == "minio":
            found["minio"] = proc.pid
    return found


# --- the Shepherd stack --------------------------------------------------------------------


class ShepherdStack:
    """Gateway, notifier and ``n_sheep`` bare sheep as separate processes."""

    def __init__(
        self, infra: Infra, run_dir: Path, label: str, n_sheep: int, max_upload_bytes: int
    ) -> None:
        self.infra = infra
        self.label = label
        self.dir = run_dir / label
        self.logs = run_dir / "logs" / label
        self.sheep_ids = [f"s{i + 1}" for i in range(n_sheep)]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.max_upload_bytes = max_upload_bytes
        self.config_file = self.dir / "shepherd.yml"
        self.services: dict[str, ManagedProcess] = {}

    def settings(self) -> dict:
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
                    "port": free_port(),
                    "working_directory": str(MODELS),
                    "stop_grace": 5,
                }
                for sheep_id in self.sheep_ids
            },
        }

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.settings(), sort_keys=False))
        env = clean_environment()
        commands = {
            "notifier": ["notifier"],
            "gateway": ["gateway"],
            **{f"sheep:{s}": ["sheep", s] for s in self.sheep_ids},
        }
        for label, args in commands.items():
            proc = ManagedProcess(
                label,
                [str(SHEPHERD), *args, "-c", str(self.config_file)],
                self.logs / f"{label.replace(':', '-')}.log",
                env,
            )
            proc.start()
            self.services[label] = proc
        await self._wait_healthy(timeout)

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
            proc.kill_group([c for c in children[label] if _alive(c)])
        return codes


# --- servers: the benchmark's namespace, bucket and queue ------------------------------


def empty_bucket(client: Minio, bucket: str, prefix: str = "") -> int:
    """Remove every object (in rounds: MinIO lists nothing below a key that is an object
    too until that object is gone). Returns how many were removed."""
    removed = 0
    if not client.bucket_exists(bucket):
        return 0
    while keys := [
        o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)
    ]:
        for error in client.remove_objects(bucket, (DeleteObject(k) for k in keys)):
            raise RuntimeError(f"removing {error.name} from {bucket} failed: {error.message}")
        removed += len(keys)
    return removed


async def delete_namespace(infra: Infra, sheep_ids: list[str]) -> None:
    """Remove the benchmark's namespace (left behind, its ``<ns>.inputs`` would collect every
    bucket's notifications for ever), and the Celery queue and the exchange Celery declares
    after it."""
    await setup.delete_namespace(infra.amqp_url, infra.names, sheep_ids)
    connection = await aio_pika.connect(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(infra.celery_queue)
        await channel.exchange_delete(infra.celery_queue)


async def prepare_servers(infra: Infra, sheep_ids: list[str]) -> None:
    """A clean namespace and an empty bucket wired to the notification target, whatever a
    previous (interrupted) run left."""
    await delete_namespace(infra, sheep_ids)
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
    sends no events to every namespace), objects and bucket removed, namespace deleted.
    Returns how many objects were removed."""
    client = infra.minio()
    removed = 0
    if client.bucket_exists(infra.bucket):
        await asyncio.to_thread(client.delete_bucket_notification, infra.bucket)
        removed = await asyncio.to_thread(empty_bucket, client, infra.bucket)
        await asyncio.to_thread(client.remove_bucket, infra.bucket)
    await delete_namespace(infra, sheep_ids)
    return removed


DRAIN_TIMEOUT = 300.0


async def notifications_drained(infra: Infra) -> float:
    """Seconds until MinIO's notification of a fresh sentinel object arrives on RabbitMQ.

    MinIO sends bucket notifications one at a time, each confirmed; under sustained load it
    queues them, and an upload's notification then waits behind every earlier write's. The
    large-input phase, which depends on those notifications, starts once they are drained,
    and the time it took is reported (the lag a burst of jobs leaves behind)."""
    marker = uuid.uuid4().hex  # S3 events carry keys URL-encoded; the marker reads the same
    key = f"_bench/drained-{marker}"
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
