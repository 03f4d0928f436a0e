"""What both Celery peers share: the app with its echo task, and the client side.

The task does the peers' echo (:func:`bench.peers.work.echo_object`) and returns a small
dict, its result, which reaches the client as a message on its reply queue (``rpc://``, or a
backend built on it); the client waits on ``AsyncResult.get()``. Workers run the prefork pool
with as many processes as Shepherd has sheep, without gossip, mingle, heartbeats or remote
control (no pidbox queues): ``celery -A <module> worker --concurrency N -Q <queue>``.
"""

from __future__ import annotations

import sys
import time
from abc import abstractmethod
from typing import Any, ClassVar

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from bench.peers.base import Peer
from bench.peers.work import WorkerSettings, echo_object, keys
from bench.workload import Outcome

TASK = "bench.echo"

COMMON: dict[str, Any] = {
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "worker_enable_remote_control": False,  # no pidbox queues: readiness is a warm-up task
    "worker_hijack_root_logger": False,
    "broker_connection_retry_on_startup": True,
}
"""Settings of both Celery peers; each adds its own."""


def make_app(main: str, settings: WorkerSettings, conf: dict[str, Any]) -> Celery:
    """A Celery app on ``settings``' broker with ``conf`` and the echo task. The settings
    are kept in the configuration too (``bench_worker``), for a result backend to find."""
    app = Celery(main, broker=settings.amqp_url)
    app.conf.update(
        {**COMMON, "task_default_queue": settings.queue, **conf, "bench_worker": settings}
    )

    @app.task(name=TASK, shared=False)
    def echo(in_key: str, out_key: str) -> dict[str, Any]:
        """The peers' echo; the result message tells the client it is done."""
        return {"out_key": out_key, "size": echo_object(settings, in_key, out_key)}

    return app


class CeleryPeer(Peer):
    """Sends ``bench.echo`` naming the job's objects, with the job id as task id."""

    module: ClassVar[str]
    """The module that defines ``app`` for the worker command (``-A``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = make_app(f"{self.module}.client", self.worker_settings, self.app_conf())

    @abstractmethod
    def app_conf(self) -> dict[str, Any]:
        """Its settings beyond :data:`COMMON`, the same as its worker's."""

    def worker_command(self, workers: int, label: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.module,
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(workers),
            "-Q",
            self.queue,
            "-n",
            f"bench-{label}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def broker_leftovers(self) -> tuple[list[str], list[str]]:
        """The task queue and the direct exchange of its name that Celery declares."""
        return [self.queue], [self.queue]

    def send(self, job_id: str) -> AsyncResult:
        in_key, out_key = keys(job_id)
        return self.app.send_task(TASK, args=(in_key, out_key), task_id=job_id, queue=self.queue)

    def wait(self, handle: AsyncResult, timeout: float) -> Outcome:
        try:
            value = handle.get(timeout=max(timeout, 0.01), propagate=False)
        except CeleryTimeout:
            return "missing", None
        arrived = time.perf_counter()
        if handle.successful() and isinstance(value, dict) and "out_key" in value:
            return "done", arrived
        return "failed", arrived

    def close(self) -> None:
        """Close the app's connections: its reply queue (auto-delete) goes with them."""
        self.app.close()

    def description(self) -> dict[str, Any]:
        conf = {**COMMON, **self.app_conf()}
        return {
            "queue": self.queue,
            "bucket": self.bucket,
            "pool": "prefork",
            "flags": "--without-gossip --without-mingle --without-heartbeat, log level INFO",
            **{k: v if isinstance(v, str | int | bool) else repr(v) for k, v in conf.items()},
        }
