"""A record of each delivery attempt of a job's event, kept with the job in the store, so
that its webhook deliveries can be looked up (``GET /jobs/{job_id}/webhooks``, the dashboard).

    records = AttemptRecords(storage)
    records.record(delivery, attempt=2, outcome="retrying", status_code=503,
                   detail="HTTP 503; next attempt in 4.0 s")
    ...
    await records.close()     # on stop: what is being written gets a moment, then is dropped

One small object per attempt, ``<job_id>/webhooks/<webhook-id>/<attempt>.json``: written once,
never read back here, only for events about a job (not ``job.rejected``, whose job id is the
submitter's word). It is written on a task of its own, so that a slow store never holds up a
delivery or its acknowledgement; one that cannot be written is logged and skipped. The
receiver is recorded by its origin only: a webhook URL's path often is its secret (Slack,
Discord), and read tokens see these records.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import AnyHttpUrl

from schemas.events import CLOUDEVENT_TYPE_PREFIX, REJECTED
from schemas.layout import webhook_attempt_key
from schemas.names import is_job_id
from schemas.webhooks import WebhookAttempt, WebhookDelivery
from services.common.storage import Storage

log = logging.getLogger(__name__)

#: Seconds a record may take before it is given up (the store is away).
RECORD_TIMEOUT = 5.0
#: Seconds the records being written get on stop.
CLOSE_GRACE = 1.0
#: Records being written at most; past it (the store is slow) new ones are skipped, logged.
MOST_PENDING = 256
REJECTED_TYPE = CLOUDEVENT_TYPE_PREFIX + REJECTED
Outcome = Literal["delivered", "retrying", "gone", "gave-up"]


class AttemptRecords:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._writing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if self._writing:
            await asyncio.wait(self._writing, timeout=CLOSE_GRACE)
        for task in list(self._writing):
            task.cancel()
        await asyncio.gather(*self._writing, return_exceptions=True)

    def record(
        self,
        delivery: WebhookDelivery,
        attempt: int,
        outcome: Outcome,
        status_code: int | None,
        detail: str,
    ) -> None:
        job_id = delivery.event.subject
        if not (job_id and is_job_id(job_id)) or delivery.event.type == REJECTED_TYPE:
            return
        if len(self._writing) >= MOST_PENDING:
            log.warning(
                "not recording webhook attempt %s/%d: the store is behind", delivery.id, attempt
            )
            return
        record = WebhookAttempt(
            webhook_id=delivery.id,
            subscription=delivery.subscription,
            url=origin(delivery.url),
            event_type=delivery.event.type,
            attempt=attempt,
            at=datetime.now(UTC),
            outcome=outcome,
            status_code=status_code,
            detail=detail,
        )
        key = webhook_attempt_key(job_id, delivery.id, attempt)
        task = asyncio.create_task(self._write(key, record), name=f"record-{delivery.id}")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, key: str, record: WebhookAttempt) -> None:
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):
                await self._storage.put_bytes(
                    key, record.model_dump_json().encode(), "application/json"
                )
        except Exception as exc:
            log.warning("cannot record webhook attempt %s: %s", key, exc)


def origin(url: AnyHttpUrl) -> str:
    """Scheme, host and port: where a delivery went, without what may be a secret."""
    return f"{url.scheme}://{url.host}:{url.port}"


def shown_url(url: AnyHttpUrl) -> str:
    """The URL without credentials or query, which may hold secrets: fit for logs and records."""
    return f"{url.scheme}://{url.host}:{url.port}{url.path or ''}"
