"""Celery with Shepherd's guarantees: the honest baseline for the same promises.

* Publisher confirms on every publish, the client's tasks and the workers' results
  (``broker_transport_options={"confirm_publish": True}``).
* The task queue is a quorum queue (``x-queue-type: quorum``) with the delivery limit of
  Shepherd's job queues (``x-delivery-limit``: a poison task stops after that many
  deliveries). Celery then turns global QoS off (``worker_detect_quorum_queues``; quorum
  queues refuse it) and, as it does for quorum queues, declares its native delayed-delivery
  exchanges and quorum queues (``celery_delayed_*``) at worker start; those are removed at
  teardown unless they were there before.
* Acks after the work (``task_acks_late``), and a task whose pool process dies is requeued,
  not failed (``task_reject_on_worker_lost``): at least once, as a sheep's jobs.
* The result is stored in MinIO, as Shepherd stores a job's outcome durably: the result
  backend :class:`MinioRPCBackend` writes ``<job>/result.json`` into the peer's bucket, then
  sends the reply message ``rpc://`` would, on which the client waits (never a poll).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from celery.backends.rpc import RPCBackend
from kombu import Exchange, Queue

from bench.peers.celery_common import CeleryPeer, make_app
from bench.peers.work import WorkerSettings, minio_client
from bench.servers import leftover_queues

DELIVERY_LIMIT_ENV = "BENCH_DELIVERY_LIMIT"
"""Passed to the worker (Shepherd's configuration is not imported there: its memory counts)."""
DELAYED = [f"celery_delayed_{level}" for level in range(28)]
"""Celery's native delayed delivery (kombu.transport.native_delayed_delivery): 28 levels."""
DELAYED_EXCHANGES = [*DELAYED, "celery_delayed_delivery"]


class MinioRPCBackend(RPCBackend):
    """``rpc://`` that first stores each result as ``<task id>/result.json`` in MinIO."""

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        settings: WorkerSettings = self.app.conf.bench_worker
        meta = self._to_result(task_id, state, result, traceback, request)
        body = json.dumps(meta, default=repr).encode()
        minio_client(settings).put_object(
            settings.bucket,
            f"{task_id}/result.json",
            io.BytesIO(body),
            len(body),
            content_type="application/json",
        )
        return super().store_result(task_id, result, state, traceback, request, **kwargs)


def guaranteed_conf(settings: WorkerSettings, delivery_limit: int | None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    queue = Queue(
        settings.queue,
        Exchange(settings.queue, type="direct"),
        routing_key=settings.queue,
        durable=True,
        queue_arguments=arguments,
    )
    return {
        "result_backend": f"{__name__}:MinioRPCBackend",
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": (queue,),
        "worker_detect_quorum_queues": True,
        "task_reject_on_worker_lost": True,
    }


SETTINGS = WorkerSettings.from_env("bench-celery-guaranteed")
_limit = os.environ.get(DELIVERY_LIMIT_ENV)  # always set for workers; the harness uses its own app
app = make_app(__name__, SETTINGS, guaranteed_conf(SETTINGS, int(_limit) if _limit else None))


class CeleryGuaranteed(CeleryPeer):
    name = "celery-guaranteed"
    title = "Celery+guarantees"
    module = __name__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from schemas.config import BrokerConfig

        self.delivery_limit = BrokerConfig().delivery_limit
        self.delayed_before: list[str] = []
        super().__init__(*args, **kwargs)

    def app_conf(self) -> dict[str, Any]:
        return guaranteed_conf(self.worker_settings, self.delivery_limit)

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), DELIVERY_LIMIT_ENV: str(self.delivery_limit)}

    def prepare(self) -> None:
        self.delayed_before = leftover_queues(self.amqp_url, ["celery_delayed_"])
        super().prepare()

    def broker_leftovers(self) -> tuple[list[str], list[str]]:
        queues, exchanges = super().broker_leftovers()
        if self.delayed_before:  # someone else's: leave them
            return queues, exchanges
        return [*queues, *DELAYED], [*exchanges, *DELAYED_EXCHANGES]

    def queue_prefixes(self) -> list[str]:
        return [self.queue] if self.delayed_before else [self.queue, "celery_delayed_"]
