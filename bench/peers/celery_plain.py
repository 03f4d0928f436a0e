"""Celery as it is usually set up: the task's result comes back through RabbitMQ (``rpc://``).

Acks after the work (``task_acks_late``) and one task per pool process at a time
(``worker_prefetch_multiplier=1``), as a sheep holds one job; a classic durable queue, no
publisher confirms, the result only in the reply message. The worker:
``celery -A bench.peers.celery_plain worker``.
"""

from __future__ import annotations

from typing import Any

from bench.peers.celery_common import CeleryPeer, make_app
from bench.peers.work import WorkerSettings

CONF: dict[str, Any] = {"result_backend": "rpc://"}

app = make_app(__name__, WorkerSettings.from_env("bench-celery"), CONF)


class CeleryPlain(CeleryPeer):
    name = "celery"
    title = "Celery"
    module = __name__

    def app_conf(self) -> dict[str, Any]:
        return CONF
